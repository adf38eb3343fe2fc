"""What the person running a study allows at run time — never what the spec says of itself."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import GrantError

if TYPE_CHECKING:
    from .spec import StudySpec


@dataclass(frozen=True)
class Grants:
    """What the person running a study allows *at run time* (CLI flags, a checkbox on the Run
    page). A spec may ask for these; it never grants them to itself."""

    trust_remote_code: bool = False
    allow_pickle: bool = False


NO_GRANTS = Grants()


def check_grants(spec: StudySpec, grants: Grants) -> None:
    """One line naming the flag, if the spec asks for what ``grants`` does not allow."""
    if spec.trust_remote_code and not grants.trust_remote_code:
        raise GrantError(
            f"study {spec.name!r} sets trust_remote_code: true, which runs Python files from "
            f"the base model folder {spec.base}; pass --trust-remote-code to allow it for this "
            "run (Run page: 'Allow code from the model folder')"
        )
    if spec.allow_pickle and not grants.allow_pickle:
        raise GrantError(
            f"study {spec.name!r} sets allow_pickle: true, and pickle weight files can run code "
            "when loaded; pass --allow-pickle to allow it for this run (Run page: 'Allow pickle "
            "weights')"
        )

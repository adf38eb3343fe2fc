"""What is wrong with a study before it runs: its spec (every problem, each with its field), or what
it asks for that the run was not given."""

from __future__ import annotations

from collections.abc import Sequence


class SpecError(ValueError):
    """A study spec that cannot run; lists every problem found, each with the field it concerns
    (a dotted path such as ``tasks.c0.template``, or "" for the spec as a whole). Its text is one line
    (the CLI prints it as is); ``issues`` keeps them apart, as (field, message), for the UI."""

    def __init__(self, problems: Sequence[str | tuple[str, str]], source: str | None = None, what: str = "study spec"):
        self.issues = [p if isinstance(p, tuple) else ("", p) for p in problems]
        self.source = source
        where = f"invalid {what} {source}" if source else f"invalid {what}"
        super().__init__(f"{where}: " + "; ".join(self.problems))

    @property
    def problems(self) -> list[str]:
        return [f"{field}: {message}" if field else message for field, message in self.issues]


class GrantError(ValueError):
    """A study asks for something (running code, loading pickles) the run was not given."""

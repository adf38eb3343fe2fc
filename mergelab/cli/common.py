"""What every command shares: the argument parser whose errors are one line, argument types, the
store a command opens, and the line a study run ends with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage stays one --help away)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def output_folder(path: str) -> Path:
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file; give a folder to write the merge into")
    return out


def adapter_names(paths: list[str]) -> dict[str, str]:
    names = [Path(p.rstrip("/")).name for p in paths]
    if len(set(names)) != len(names):
        return {f"{i}:{n}": p for i, (n, p) in enumerate(zip(names, paths))}
    return dict(zip(names, paths))


def exists_or_hub_id(value: str, what: str) -> None:
    from ..io.content import is_local, looks_like_hub_id
    from ..io.hub import check_package_reference

    check_package_reference(value, what)
    if not (is_local(value) or looks_like_hub_id(value) or value.startswith("pypi:")):
        raise ValueError(f"{what} {value} does not exist (give a local folder or a hub id org/name)")


def open_store(db):
    from ..study.bundled import open_store as open_with_bundled

    return open_with_bundled(db)


def grants(args):
    from ..study.grants import Grants

    return Grants(trust_remote_code=args.trust_remote_code, allow_pickle=args.allow_pickle)


def finish_line(store, study: str, out: dict, seconds: float) -> int:
    """Print how the run ended; 0 only when every unit of the study is done."""
    from ..storage import jobs

    counts = jobs.status_counts(store, study)
    print(f"ran {out['done']} units ({out['failed']} failed) in {seconds:.1f} s", file=sys.stderr)
    left = {k: v for k, v in counts.items() if k != "done"}
    if not left:
        return 0
    parts = ", ".join(f"{n} {status}" for status, n in sorted(left.items()))
    hint = {
        "failed": "see `mergelab report` / the Run page, then `mergelab run --retry-failed`",
        "cancelled": "resume them on the Run page or with `mergelab run --retry-failed`",
        "queued": "run again to finish them",
    }
    advice = "; ".join(hint[k] for k in ("failed", "cancelled", "queued") if k in left)
    print(f"study {study!r} is not complete: {parts} of {sum(counts.values())} units ({advice})", file=sys.stderr)
    return 1


def check_ray_address(address: str | None, source: str) -> None:
    """ValueError naming ``source`` (the flag or the spec field) if the Ray cluster at ``address``
    cannot be used; see :func:`mergelab.study.ray_address.check_reachable`."""
    from ..study.ray_address import check_reachable

    try:
        check_reachable(address)
    except ValueError as exc:
        raise ValueError(f"{source} {address}: {exc}") from None

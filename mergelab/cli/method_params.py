"""A merge method's parameters on the command line, parsed *after* the method is known, from its own
registration: ``--density 0.5`` means KnOTS' scalar density for ``--method knots`` and TIES'
per-adapter density for ``--method ties``. Every parameter is also ``--param NAME=VALUE``, so a
method may name a parameter like a command's own flag (``rank``, ``out``, ``device``) without
breaking any command: it is then reachable through ``--param`` only.
"""

from __future__ import annotations

import argparse
import math

from ..merging import registry


class ParamError(ValueError):
    """A method parameter the method does not take, or a value it cannot be."""


def flag(p: registry.Param) -> str:
    return "--" + ("weights" if p.name == "weight" else p.name).replace("_", "-")


def reserved_flags(parser: argparse.ArgumentParser) -> set[str]:
    """The command's own option strings (a method parameter never takes one of them)."""
    return {s for a in parser._actions for s in a.option_strings}


def epilog() -> str:
    """Every method's parameters, for the help of the commands that take them."""
    lines = ["method parameters (after --method; also --param NAME=VALUE):"]
    for m in registry.METHODS.values():
        params = " ".join(f"{flag(p)} {'V [V ...]' if p.per_adapter else 'V'}" for p in m.params) or "(none)"
        lines.append(f"  {m.name}: {params}")
    return "\n".join(lines)


def _value(method: registry.Method, p: registry.Param, text: str, given_as: str):
    """One parameter value from text, by its declaration (a per-adapter list is comma-separated);
    ``given_as`` names where the user typed it (``--density``, ``--param density=…``) in errors."""

    def one(t: str):
        t = t.strip()
        if p.kind is bool:
            if t.lower() in ("1", "true", "yes", "on"):
                return True
            if t.lower() in ("0", "false", "no", "off"):
                return False
            raise ParamError(f"{method.label}: {p.name} must be true or false, got {t!r} ({given_as})")
        try:
            v = p.kind(t) if p.kind is not int else int(t)
        except ValueError:
            raise ParamError(f"{method.label}: {p.name} must be a {p.kind.__name__}, got {t!r} ({given_as})") from None
        if isinstance(v, float) and not math.isfinite(v):
            raise ParamError(f"{method.label}: {p.name} must be a finite number, got {t!r} ({given_as})")
        return v

    parts = text.split(",") if p.per_adapter else [text]
    values = [one(t) for t in parts]
    return values if p.per_adapter and len(values) > 1 else values[0]


def parse(method_name: str, rest: list[str], given: list[str] | None, reserved: set[str]) -> dict:
    """``method_name``'s parameters from the leftover command-line words ``rest`` (its flags) and the
    ``--param NAME=VALUE`` pairs ``given``; ParamError naming the method and what it takes."""
    method = registry.get(method_name)
    by_flag = {flag(p): p for p in method.params if flag(p) not in reserved}
    takes = ", ".join([*by_flag, *(f"--param {p.name}=…" for p in method.params if flag(p) in reserved)]) or "nothing"
    out: dict = {}
    i = 0
    while i < len(rest):
        word = rest[i]
        name, _, inline = word.partition("=")
        p = by_flag.get(name)
        if p is None:
            known = {flag(q) for m in registry.METHODS.values() for q in m.params}
            what = "does not take" if name in known else "has no option"
            raise ParamError(f"{method.label} {what} {name} (it takes {takes})")
        values = [inline] if inline else []
        i += 1
        while not inline and i < len(rest) and not (rest[i].startswith("--") and not _is_number(rest[i])):
            values.append(rest[i])
            i += 1
            if not p.per_adapter:
                break
        if not values:
            raise ParamError(f"{method.label}: {name} needs a value")
        out[p.name] = _value(method, p, ",".join(values), name)
    for pair in given or []:
        name, eq, text = pair.partition("=")
        p = next((q for q in method.params if q.name == name.strip()), None)
        if not eq or p is None:
            raise ParamError(
                f"{method.label}: --param takes NAME=VALUE with NAME one of "
                f"{[q.name for q in method.params] or 'nothing (it has no parameters)'}, got {pair!r}"
            )
        out[p.name] = _value(method, p, text, f"--param {p.name}=…")
    return out


def _is_number(word: str) -> bool:
    try:
        float(word)
        return True
    except ValueError:
        return False

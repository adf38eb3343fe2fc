"""`mergelab` command line. Bad input prints one clear line and exits 2 — never a traceback.

The words are in :mod:`.parser`, the commands in :mod:`.merge_commands` and :mod:`.study_commands`,
a method's parameters are parsed once the method is known (:mod:`.method_params`), progress goes to
the terminal through :mod:`.progress`.
"""

from __future__ import annotations

import os
import sys

from .. import threads
from .parser import build_parser

EXPECTED_ERRORS: tuple[type[Exception], ...] = (ValueError, OSError, RuntimeError)

__all__ = ["build_parser", "main"]


def _parse(parser, argv: list[str] | None):
    """The command and its options; for the commands that merge, the method's own parameters are
    left in ``rest`` for :func:`_method_params` (they depend on ``--method``)."""
    args, rest = parser.parse_known_args(argv)
    if not hasattr(args, "method_given") and rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args, rest


def _method_params(parser, args, rest: list[str]) -> None:
    import argparse

    from . import method_params

    args.method = args.method_given or "ties"
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    args.method_params = method_params.parse(
        args.method, rest, args.param, method_params.reserved_flags(sub.choices[args.command])
    )
    args.method_params["seed"] = args.seed


def _logging(level: str) -> None:
    """The library logs through `logging` (units started, done, failed; store migrations); the command
    line says how much of it to show, with timestamps (the dashboard's worker.log keeps them)."""
    import logging

    logging.basicConfig(
        level=getattr(logging, level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )


def main(argv: list[str] | None = None) -> int:
    if not os.environ.get("MERGELAB_DEBUG"):  # other libraries' warnings are not the user's business here
        import warnings

        warnings.simplefilter("ignore")
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    parser = build_parser()
    args, rest = _parse(parser, argv)
    _logging("debug" if os.environ.get("MERGELAB_DEBUG") else args.log_level)
    try:
        threads.apply(args.threads)
        if hasattr(args, "method_given"):
            _method_params(parser, args, rest)
        return args.func(args)
    except BrokenPipeError:  # the reader left (`mergelab report | head`): stop quietly, as SIGPIPE would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except EXPECTED_ERRORS as exc:
        print(f"mergelab: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mergelab: interrupted; finished units are stored, `mergelab run` resumes the rest", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: still one line, the traceback on request
        if os.environ.get("MERGELAB_DEBUG"):
            raise
        print(
            f"mergelab: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
            "(set MERGELAB_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return 3

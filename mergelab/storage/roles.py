"""What a task group is for — its *role* — and how a swap group is named.

Roles: ``group`` (drawn at random or declared in the spec: the evidence Table 5, the ANOVA and the
pooled analyses use), ``swap`` (a group made from another by replacing one task: the paper's
(a)→(a1); chosen by looking at results, so never counted as a group), ``pair`` (two tasks of a
``pairwise`` group, for Table 4) and ``pool`` (spare tasks, one row, never merged).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP, SWAP, PAIR, POOL = "group", "swap", "pair", "pool"
ROLES = (GROUP, SWAP, PAIR, POOL)

_SWAP = re.compile(r"^swap:(?P<parent>.+):(?P<removed>[^:]+)->(?P<added>[^:]+)$")


@dataclass(frozen=True)
class Swap:
    """A swap group: ``parent`` with ``removed`` replaced by ``added``."""

    name: str
    parent: str
    removed: str
    added: str


def swap_name(parent: str, removed: str, added: str) -> str:
    """The group name of a swap (also its unit keys' group): ``swap:<parent>:<removed>-><added>``."""
    return f"swap:{parent}:{removed}->{added}"


def parse_swap_name(name: str) -> Swap | None:
    """The swap a name made by :func:`swap_name` stands for; None for any other name. Used only to
    read stores and specs written before swaps had a role of their own."""
    m = _SWAP.match(name)
    return Swap(name, m["parent"], m["removed"], m["added"]) if m else None

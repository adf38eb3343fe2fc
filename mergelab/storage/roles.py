"""What a task group is for — its *role* — and how a swap group is named.

Roles: ``group`` (drawn at random or declared in the spec: the evidence Table 5, the ANOVA and the
pooled analyses use), ``swap`` (a group made from another by replacing one task: the paper's
(a)→(a1); chosen by looking at results, so never counted as a group), ``pair`` (two tasks of a
``pairwise`` group, for Table 4) and ``pool`` (spare tasks, one row, never merged).

A group's merge scored on a task outside it (``held_out`` in the spec: forgetting, the merge against
the base) is stored under the group name :func:`held_out_name` so that Eq. 1 never mixes it with
the group's own tasks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GROUP, SWAP, PAIR, POOL = "group", "swap", "pair", "pool"
ROLES = (GROUP, SWAP, PAIR, POOL)

HELD_OUT_PREFIX = "held_out:"

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


def held_out_name(group: str) -> str:
    """The result group name of ``group``'s merges scored on held-out tasks: ``held_out:<group>``."""
    return f"{HELD_OUT_PREFIX}{group}"


def held_out_parent(name: str) -> str | None:
    """The group a :func:`held_out_name` stands for; None for any other name."""
    return name[len(HELD_OUT_PREFIX) :] if name.startswith(HELD_OUT_PREFIX) else None

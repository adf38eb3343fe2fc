"""The paper's "randomly select": groups drawn from a study's tasks with a fixed seed — overlapping
draws, or a random partition (disjoint groups are independent evidence)."""

from __future__ import annotations

from typing import Any


def draw_groups(rule: Any, tasks: list[str]) -> dict[str, list[str]]:
    """Groups drawn by ``rule`` (a spec's ``random_groups``: count, size, seed, draw_from, prefix,
    disjoint) from ``tasks`` (in the spec's task order), reproducibly."""
    import random

    pool = rule.draw_from or tasks
    unknown = [t for t in pool if t not in tasks]
    if unknown:
        raise ValueError(f"random_groups.draw_from: unknown tasks {unknown}")
    if rule.size > len(pool):
        raise ValueError(f"random_groups: groups of {rule.size} from {len(pool)} tasks")
    rng = random.Random(rule.seed)
    order = {t: i for i, t in enumerate(pool)}
    if rule.disjoint:  # a random partition: no task in two groups, so groups are independent evidence
        if rule.count * rule.size > len(pool):
            raise ValueError(
                f"random_groups: {rule.count} disjoint groups of {rule.size} need "
                f"{rule.count * rule.size} tasks, draw_from has {len(pool)}"
            )
        shuffled = rng.sample(pool, len(pool))
        return {
            f"{rule.prefix}{i + 1}": sorted(shuffled[i * rule.size : (i + 1) * rule.size], key=order.get)
            for i in range(rule.count)
        }
    out, seen = {}, set()
    for i in range(rule.count):
        for _ in range(1000):
            members = sorted(rng.sample(pool, rule.size), key=order.get)
            if tuple(members) not in seen:
                break
        else:
            raise ValueError(
                f"random_groups: cannot draw {rule.count} different groups of {rule.size} from {len(pool)} tasks"
            )
        seen.add(tuple(members))
        out[f"{rule.prefix}{i + 1}"] = members
    return out

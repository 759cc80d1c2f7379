"""``--shard=I/N``: grade a deterministic share of the (submission, challenge) pairs, for runs spread over machines.

Shards count from 1, as people write them: ``--shard=1/3``, ``--shard=2/3``, ``--shard=3/3``. A pair is never split:
its child starts once and its grade comes from all its cases, so the unit handed out is the pair. Every pair of the
roster (the discovered submissions after ``--model``; never the ``-k``/``-m`` selection, which only narrows each shard
later) goes to exactly one shard:

- pairs are weighed by their challenge's number of cases and taken heaviest first, ties by (model, challenge);
- each goes to the shard with the least weight so far, ties to the one with fewer pairs, then to the lower number.

The plan depends on nothing but the roster and N (not on discovery order, the machine or the options), so every shard
of a job array computes the same plan on its own, and a shard given no pair (N larger than the roster) grades nothing
and finishes cleanly. The shard's run header records the plan (:func:`header_fields`), which
``python -m plugins.report.merge`` checks before it joins the shards' ``cases.jsonl`` into one set of reports.
"""

from __future__ import annotations

import hashlib
import heapq
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from reference.challenges import reference_module

ASSIGNMENT = "balanced by case count: heaviest pair first, to the least-loaded shard"


@dataclass(frozen=True)
class Plan:
    """Shard ``index`` of ``count``; the roster's pairs (sorted) and the ones this shard grades."""

    index: int
    count: int
    roster: tuple[tuple[str, str], ...]
    mine: tuple[tuple[str, str], ...]


PLAN_KEY = pytest.StashKey[Plan]()


def weight(challenge: str) -> int:
    """A pair's expected work: its challenge's case count (1 for a challenge with no contract here)."""
    try:
        module = reference_module(challenge)
    except KeyError:
        return 1
    return max(1, len(module.CASES)) if module is not None else 1


def assign(pairs: Sequence[tuple[str, str]], count: int) -> dict[tuple[str, str], int]:
    """Every pair -> its shard (1..count); the greedy least-loaded rule of the module docstring."""
    shards = [(0, 0, number) for number in range(1, count + 1)]  # (weight so far, pairs so far, shard number)
    plan: dict[tuple[str, str], int] = {}
    for pair in sorted(set(pairs), key=lambda p: (-weight(p[1]), p)):
        load, held, number = heapq.heappop(shards)  # the least-loaded shard, ties as the module docstring says
        plan[pair] = number
        heapq.heappush(shards, (load + weight(pair[1]), held + 1, number))
    return plan


def keep(config: pytest.Config, submissions: list[Any], shard: tuple[int, int] | None) -> list[Any]:
    """The submissions of this shard (all of them without ``--shard``); the plan is stashed for the run header."""
    if shard is None:
        return submissions
    roster = tuple(sorted({(s.model, s.challenge) for s in submissions}))
    plan = assign(roster, shard[1])
    mine = [s for s in submissions if plan[s.model, s.challenge] == shard[0]]
    config.stash[PLAN_KEY] = Plan(shard[0], shard[1], roster, tuple(sorted({(s.model, s.challenge) for s in mine})))
    return mine


def header_fields(config: pytest.Config, rubric: Path) -> dict[str, Any]:
    """What the run header says of the shard: ``{"shard": {...}}`` and, for a shard given no pair, a warning; {}
    without ``--shard``."""
    plan = config.stash.get(PLAN_KEY, None)
    if plan is None:
        return {}
    fields: dict[str, Any] = {
        "shard": {
            "index": plan.index,
            "count": plan.count,
            "host": socket.gethostname(),
            "assignment": ASSIGNMENT,
            "roster": [list(p) for p in plan.roster],
            "pairs": [list(p) for p in plan.mine],
            "rubric_sha256": file_digest(rubric),
        }
    }
    if not plan.mine:
        pairs = f"{len(plan.roster)} (submission, challenge) pair{'s' if len(plan.roster) != 1 else ''}"
        fields["warnings"] = [
            f"this shard ({plan.index}/{plan.count}) got no submissions: the roster's {pairs} went to other shards"
        ]
    return fields


def file_digest(path: Path) -> str | None:
    """SHA-256 of a file (the rubric: shards on machines with different checkouts must grade with the same one)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None

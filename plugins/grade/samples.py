"""Several samples per model: each sample's grade, their mean and spread, and pass@k per (model, challenge).

Pure, like :mod:`plugins.grade.summary`, which puts the result in the summary under ``"samples"`` (so ``results.json``
carries it). A sample is its own graded unit, named ``<model>/sample-<N>`` (:mod:`plugins.discover.submissions`); the
name is split back with :func:`plugins.discover.submissions.split_sample` only. A model with a single sample is just a
model: it has no entry here.

- A sample **passes** when none of its core or edge cases failed and at least one of them ran. A sample whose folder
  holds no code does not pass; one whose grade is ``built`` (CUDA compiled, no GPU to run it) has no known pass.
- **pass@k** is the unbiased estimator of Chen et al. (2021, "Evaluating Large Language Models Trained on Code"):
  with n samples of which c pass, pass@k = 1 - C(n - c, k) / C(n, k), the chance that k samples drawn without
  replacement from the n hold at least one pass. Computed exactly (``math.comb`` and fractions), for k = 1..n.
- **Mean and spread** are over the samples' points (out of 100) whose grade counts in the ranking (not ``built``; a
  folder with no code counts as 0 points under the rubric's default, and not at all under ``"not attempted"``): the
  mean, the sample standard deviation (n - 1 in the denominator, since the samples stand for all the model could
  write), min and max.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from plugins.base import records as r
from plugins.discover.submissions import sample_number, split_sample
from plugins.grade import rubric as rubric_module

PASS_CATEGORIES = ("core", "edge")  # a failed case of these makes a sample fail; the rest only cost points


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k for ``c`` passing samples out of ``n``: 1 - C(n - c, k) / C(n, k), exact until the final
    conversion to float. ``math.comb`` is 0 when k > n - c, so pass@k is 1 once every draw must hold a pass."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def sample_passes(records: Iterable[r.CaseRecord]) -> bool | None:
    """True when no core or edge case failed and one ran; None when none ran (the run deselected them all)."""
    gating = [rec for rec in records if rec.category in PASS_CATEGORIES and rec.outcome != r.SKIPPED]
    return all(rec.outcome == r.PASSED for rec in gating) if gating else None


def sample_groups(
    records: list[r.CaseRecord],
    models: Mapping[str, Mapping[str, Any]],
    order: list[str],
    rubric: rubric_module.Rubric,
) -> list[dict[str, Any]]:
    """One entry per (model, challenge) graded from two or more samples, by model then challenge order.

    :param records: every case record of the run.
    :param models: the summary's ``models`` (unit name -> ``{"challenges": {id: grade dict}}``).
    :param order: challenge ids in report order.
    """
    units: dict[tuple[str, str], list[str]] = {}
    for unit, data in models.items():
        model, sample = split_sample(unit)
        for challenge in data["challenges"] if sample else ():
            units.setdefault((model, challenge), []).append(unit)
    by_unit: dict[tuple[str, str], list[r.CaseRecord]] = {}
    for rec in records:
        by_unit.setdefault((rec.model, rec.challenge), []).append(rec)
    groups = []
    for (model, challenge), names in sorted(units.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]))):
        if len(names) < 2:  # one sample graded (the others deselected): nothing to spread or draw from
            continue
        names.sort(key=lambda unit: sample_number(split_sample(unit)[1]))
        rows = [
            _sample_row(unit, models[unit]["challenges"][challenge], by_unit.get((unit, challenge), []))
            for unit in names
        ]
        groups.append({"model": model, "challenge": challenge} | _figures(rows, rubric))
    return groups


def _sample_row(unit: str, grade: Mapping[str, Any], records: list[r.CaseRecord]) -> dict[str, Any]:
    """One sample: its name, grade and whether it passes (no code never passes; ``built`` and ``skipped here`` have no
    known pass)."""
    if grade["letter"] in rubric_module.NOT_HERE:
        passes = None
    elif grade["letter"] == rubric_module.NO_CODE:
        passes = False
    else:
        passes = sample_passes(records)
    failed = sum(f["category"] in PASS_CATEGORIES for f in grade.get("failed", []))
    return {
        "sample": split_sample(unit)[1],
        "model": unit,
        "letter": grade["letter"],
        "points": grade["points"],
        "complete": grade.get("complete", True),
        "passes": passes,
        "failed_core_edge": failed,
    }


def _figures(rows: list[dict[str, Any]], rubric: rubric_module.Rubric) -> dict[str, Any]:
    """n, c, pass@k, mean and spread of one group, with notes on samples left out of either."""
    n = len(rows)
    notes = []
    scored = [row["points"] for row in rows if rubric_module.counted_points(row["letter"], rubric) is not None]
    if len(scored) < n:
        notes.append(f"mean and spread over {len(scored)} of {n} samples (the others' grades are not counted)")
    unknown = [row["sample"] for row in rows if row["passes"] is None]
    c = None if unknown else sum(bool(row["passes"]) for row in rows)
    if unknown:
        notes.append(f"no pass@k: pass unknown for {', '.join(unknown)} (no core or edge case ran, or not run here)")
    if not all(row["complete"] for row in rows):
        notes.append("incomplete: not every selected case of every sample ran")
    return {
        "n": n,
        "passed": c,
        "pass_at_k": {} if c is None else {f"pass@{k}": pass_at_k(n, c, k) for k in range(1, n + 1)},
        "mean_points": round(statistics.fmean(scored), 2) if scored else None,
        "sd_points": round(statistics.stdev(scored), 2) if len(scored) > 1 else None,
        "min_points": min(scored) if scored else None,
        "max_points": max(scored) if scored else None,
        "samples": rows,
        "notes": notes,
    }

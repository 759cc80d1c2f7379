"""The ``grades.md`` section "Where cases ran": which GPU and how many xdist workers ran each model's cases, and how the
run's time split between the submissions and the grader's own work.

Built from the case records alone (``ran_on`` and ``timing``, written by ``plugins/isolate/plugin.py``), so a merged
report of several shards shows it as one run would. Timing across GPUs or machines is comparable only where they are
identical; this section is where a reader checks that.
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.report.markdown import table


def placement_rows(summary: dict[str, Any]) -> list[list[str]]:
    """One row per (machine or shard, GPU): workers, models, cases, speed cases, seconds of cases and of the grader's
    own reference work."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for case in summary.get("cases", []):
        where = case.get("ran_on") or {}
        key = (str(where.get("host", "")), "—" if where.get("gpu") in (None, "") else f"GPU {where['gpu']}")
        row = rows.setdefault(
            key, {"workers": set(), "models": set(), "cases": 0, "speed": 0, "case_s": 0.0, "truth": 0.0}
        )
        row["workers"].add(where.get("worker", "?"))
        row["models"].add(case["model"])
        row["cases"] += 1
        row["speed"] += case.get("category") == "speed"
        timing = case.get("timing") or {}
        row["case_s"] += float(timing.get("case_s") or 0.0)
        row["truth"] += float(timing.get("truth_s") or 0.0)
    return [
        [host or "this machine", gpu, str(len(r["workers"])), str(len(r["models"])), str(r["cases"]), str(r["speed"]),
         f"{r['case_s']:.1f}", f"{r['truth']:.1f}"]
        for (host, gpu), r in sorted(rows.items())
    ]  # fmt: skip


def render(summary: dict[str, Any]) -> str:
    rows = placement_rows(summary)
    if not rows:
        return ""
    headers = ["machine", "GPU", "workers", "models", "cases", "speed cases", "case seconds", "of which reference"]
    lines = [table(headers, rows), ""]
    lines.append(
        "Case seconds add up each case's wall time in its worker (sandbox start, the submission's calls, judging, "
        'waits for a speed slot or a truth another worker computes); "of which reference" is the grader\'s own '
        "float64 reference work inside them. "
        "Speed ratios compare like with like only between identical machines and GPUs."
    )
    return "\n".join(lines)


@pytest.hookimpl
def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]]:
    body = render(summary)
    return [("Where cases ran", body)] if body else []

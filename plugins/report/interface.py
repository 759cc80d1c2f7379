"""The ``grades.md`` section "Interface compliance": per model, which challenges met the contract natively and which
needed an adapter, with the adapter's code lines.

An adapter (``adapter.py``, or ``adapter.cu`` for CUDA) is graded exactly like a native submission: no points are
taken for it. This section is where the difference shows, so a reader can tell a model that followed the prompt's
interface from one that needed glue (how to write one: ``docs/adapters.md``). The line counts come from discovery
(``Submission.adapter_lines``: non-blank lines that are neither comments nor docstrings) through the run header.

A plugin module of its own, like ``plugins.report.speed_section`` (a hook module must not be imported before pytest
registers it); the breakdown tables' "interface" column is ``plugins.report.tables.interface``.
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.report.markdown import table

TITLE = "Interface compliance"
INTRO = (
    "How each model's submissions met the contract: *native* (the prompt's entry points, found as written) or through "
    "an *adapter* the grader's user wrote (`adapter.py`, `adapter.cu`; see `docs/adapters.md`). Adapter-driven "
    "submissions are graded exactly like native ones; the lines are the adapters' code lines (comments, docstrings "
    "and blank lines left out)."
)


def compliance(summary: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Rows per model in ranking order: challenges native, challenges via an adapter (each with its lines), and the
    total adapter lines. Only submissions with code that got a grade in this run count (a folder without code meets
    no interface)."""
    graded = {(m, c) for m, d in summary["models"].items() for c, g in d["challenges"].items() if not g.get("no_code")}
    order = [unit for row in summary["ranking"] for unit in row.get("units", [row["model"]])]  # samples: each
    per_model: dict[str, tuple[list[str], list[str], list[int]]] = {}
    for sub in summary.get("submissions", []):
        if (sub["model"], sub["challenge"]) not in graded:
            continue
        native, adapted, lines = per_model.setdefault(sub["model"], ([], [], []))
        if sub.get("runtime") != "adapter":
            native.append(sub["challenge"])
            continue
        count = sub.get("adapter_lines")
        adapted.append(f"{sub['challenge']} ({'?' if count is None else count} lines)")
        lines.append(count or 0)
    headers = ["model", "native", "via adapter", "adapter lines"]
    rows = []
    for model in sorted(per_model, key=lambda m: (order.index(m) if m in order else len(order), m)):
        native, adapted, lines = per_model[model]
        rows.append([model, _listed(native), _listed(adapted), str(sum(lines)) if adapted else "0"])
    return headers, rows


def _listed(items: list[str]) -> str:
    return f"{len(items)}: {', '.join(items)}" if items else "0"


@pytest.hookimpl
def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]]:
    headers, rows = compliance(summary)
    return [(TITLE, f"{INTRO}\n\n{table(headers, rows)}")] if rows else []

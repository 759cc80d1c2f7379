"""pytest-html additions: the grade summary on top and per-case columns (model, case, outcome, error/bound, time).

Every string that can come from a submission (model names, messages, printed output) is escaped: pytest-html inserts
these cells as raw HTML. The hooks are optional, so the grader runs the same without pytest-html installed.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pytest
from tabulate import tabulate

from plugins.grade.plugin import SUMMARY_KEY
from plugins.grade.records import RECORD_PROPERTY, CaseRecord
from plugins.report import tables

COLUMNS = ("model", "case", "outcome", "error / bound", "time (ms)")
SUMMARY_CSS = (
    "#kg-summary table{border-collapse:collapse;margin:4px 0 14px}"
    "#kg-summary th,#kg-summary td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "#kg-summary th{background:#f2f2f2}"
)


def _record(report: Any) -> dict[str, Any] | None:
    return next((value for name, value in getattr(report, "user_properties", []) if name == RECORD_PROPERTY), None)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "kernelgrade report"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    run = session.config.stash.get(SUMMARY_KEY, None)
    if run is None:
        return
    # tabulate's "html" format escapes every cell, so model-supplied text stays text.
    prefix.append(f'<style>{SUMMARY_CSS}</style><div id="kg-summary">')
    prefix.append("<h2>Grades</h2>")
    headers, rows = tables.grade_matrix(run)
    prefix.append(tabulate(rows, headers=headers, tablefmt="html"))
    prefix.append("<h3>Ranking</h3>")
    prefix.append(tabulate(tables.ranking(run)[1], headers=tables.ranking(run)[0], tablefmt="html"))
    for challenge in tables.graded_challenges(run):
        headers, rows = tables.breakdown(run, challenge["id"])
        prefix.append(f"<h3>{escape(challenge['title'])}</h3>")
        prefix.append(tabulate(rows, headers=headers, tablefmt="html"))
    prefix.append(f"<p>Seed {escape(str(run['options']['seed']))}; full details in grades.md and results.json.</p>")
    prefix.append("</div>")


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    cells[2:2] = [f'<th class="sortable" data-column-type="{c}">{escape(c)}</th>' for c in COLUMNS]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    data = _record(report)
    if data is None:  # a skipped speed case, or a test that never reached its sandbox
        values: tuple[str, ...] = ("",) * len(COLUMNS)
    else:
        record = CaseRecord.from_dict(data)
        ratio, seconds = record.worst_ratio, record.seconds
        values = (
            record.model,
            record.case,
            record.outcome,
            f"{ratio:.3g}" if ratio is not None else "",
            f"{seconds * 1000:.1f}" if seconds is not None else "",
        )
    cells[2:2] = [f"<td>{escape(str(v))}</td>" for v in values]

"""pytest-html additions: the grade summary on top and per-case columns (model, case, outcome, error/bound, time).

Every string that can come from a submission (model names, messages, printed output) is escaped: pytest-html inserts
these cells as raw HTML. That includes pytest-html's own test-id cell, which it fills with the unescaped node id and its
script inserts with ``innerHTML``: the row hook rebuilds it escaped. The hooks are optional, so the grader runs the
same without pytest-html installed.
"""

from __future__ import annotations

from html import escape
from typing import Any

import pytest

from plugins.base import inert
from plugins.base.records import NO_CODE, PASSED, RECORD_PROPERTY, SKIPPED, CaseRecord
from plugins.base.wording import html_table as table
from plugins.grade.plugin import SUMMARY_KEY
from plugins.report import pictures, samples, tables

COLUMNS = ("model", "case", "outcome", "error / bound", "time (ms)")
SHOWN_UNTAGGED = (PASSED, SKIPPED, NO_CODE)  # not a failed check of any property: no origin tag beside them
SUMMARY_CSS = (
    "#kg-summary table{border-collapse:collapse;margin:4px 0 14px}"
    "#kg-summary th,#kg-summary td{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "#kg-summary th{background:#f2f2f2}"
    "#kg-summary .kg-picture{margin:4px 0 14px}#kg-summary td.kg-trap{white-space:nowrap}"
)


def _record(report: Any) -> dict[str, Any] | None:
    return next((value for name, value in getattr(report, "user_properties", []) if name == RECORD_PROPERTY), None)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "kernelgrade report"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    run = session.config.stash.get(SUMMARY_KEY, None)
    if run is not None:
        prefix.append(summary_html(run))


def summary_html(run: dict[str, Any]) -> str:
    """The grade summary block: status and warnings first, then the tables (also the body of a recovered report)."""
    # tabulate's "html" format escapes every cell, so model-supplied text stays text; inert.visible shows controls.
    parts = [f'<style>{SUMMARY_CSS}</style><div id="kg-summary">']
    if run.get("status", "complete") != "complete":
        parts.append(
            f'<p class="kg-status"><b>{escape(run["status"].upper())}</b>: {inert.html(run["status_detail"])}</p>'
        )
    parts += [f'<p class="kg-warning"><b>warning</b>: {inert.html(w)}</p>' for w in tables.warnings(run)]
    if deselected := tables.deselected_line(run):
        parts.append(f'<p class="kg-deselected"><b>{inert.html(deselected)}</b></p>')
    parts.append("<h2>Grades</h2>")
    parts.append(table(*tables.grade_matrix(run)))
    parts.append(f'<div class="kg-picture">{pictures.heatmap_svg(run)}</div>')
    parts.append("<h3>Ranking</h3>")
    parts.append(table(*tables.ranking(run)))
    parts.append(f"<p>{inert.html(tables.ranking_rule(run))}.</p>")
    parts.append("<h3>Task profiles</h3>")
    parts.append(table(*tables.task_profiles(run)))
    parts.append(samples.html_section(run))  # several samples per model: mean, spread, pass@k (or nothing)
    parts.append(f'<h3>Speed</h3><div class="kg-picture">{pictures.speed_svg(run)}</div>')
    for challenge in tables.graded_challenges(run):
        parts.append(f"<h3>{escape(challenge['title'])}</h3>")
        parts.append(table(*tables.breakdown(run, challenge["id"])))
        if traps := pictures.traps_html(run, challenge["id"]):
            parts.append(f"<h4>Traps of {escape(challenge['id'])}</h4>{traps}")
    parts.append(f"<p>Seed {escape(str(run['options']['seed']))}; full details in grades.md and results.json.</p>")
    parts.append("</div>")
    return "".join(parts)


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_header(cells: list[str]) -> None:
    cells[2:2] = [f'<th class="sortable" data-column-type="{c}">{escape(c)}</th>' for c in COLUMNS]


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_table_row(report: Any, cells: list[str]) -> None:
    # pytest-html puts the node id into its test-id cell unescaped and its script inserts every cell with innerHTML,
    # so a model folder named "<img src=x onerror=...>" would run in the reader's browser: the cell is rebuilt escaped.
    test_id = report.nodeid + (f"::{report.when}" if report.when != "call" else "")
    for i, cell in enumerate(cells):
        if cell.startswith('<td class="col-testId">'):
            cells[i] = f'<td class="col-testId">{inert.html(test_id)}</td>'
            break
    data = _record(report)
    # a skipped speed case, or a test that never reached its sandbox, has no record: empty cells
    values = ("",) * len(COLUMNS) if data is None else case_cells(data)
    cells[2:2] = [f"<td>{inert.html(v)}</td>" for v in values]


def case_cells(data: dict[str, Any]) -> tuple[str, ...]:
    """The :data:`COLUMNS` cells of one case record (a plain dict), unescaped; also the rows of a recovered report."""
    record = CaseRecord.from_dict(data)
    ratio, seconds = record.worst_ratio, record.seconds
    return (
        record.model,
        record.case,
        # A failed case carries its origin tag (the task's property, or beyond the task: not scored).
        record.outcome if record.outcome in SHOWN_UNTAGGED else f"{record.outcome} [{tables.origin_tag(data)}]",
        f"{ratio:.3g}" if ratio is not None else "",
        f"{seconds * 1000:.1f}" if seconds is not None else "",
    )

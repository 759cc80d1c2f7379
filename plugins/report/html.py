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
from plugins.report import failures, markup, pictures, tables
from plugins.report.sections import report_sections

COLUMNS = ("model", "case", "outcome", "error / bound", "time (ms)")
SHOWN_UNTAGGED = (PASSED, SKIPPED, NO_CODE)  # not a failed check of any property: no origin tag beside them
# A page a person reads first: legible type, tables that wrap instead of running off the page, pictures that scale
# (their SVGs carry a viewBox), the per-(model, challenge) failures folded until opened.
SUMMARY_CSS = (
    "#kg-summary{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:#1b1b1b;max-width:1400px}"
    "#kg-summary h2{font-size:24px;margin:18px 0 6px}#kg-summary h3{font-size:19px;margin:20px 0 6px}"
    "#kg-summary h4{font-size:16px;margin:12px 0 4px}"
    "#kg-summary table{border-collapse:collapse;margin:4px 0 14px;font-size:14px;display:block;overflow-x:auto}"
    "#kg-summary th,#kg-summary td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}"
    "#kg-summary th{background:#f2f2f2}#kg-summary td.kg-why{min-width:18em;max-width:48em}"
    "#kg-summary code{font-size:13px;background:#f4f4f4;padding:0 3px;word-break:break-all}"
    "#kg-summary .kg-picture svg{max-width:100%;height:auto}#kg-summary .kg-picture{margin:4px 0 14px}"
    "#kg-summary td.kg-trap{white-space:nowrap}#kg-summary details{margin:4px 0 8px}"
    "#kg-summary summary{cursor:pointer;font-weight:600}#kg-summary .kg-warning,#kg-summary .kg-status"
    "{background:#fff4e5;border-left:4px solid #e69500;padding:4px 10px}"
    # pytest-html's own tables (environment, results) scroll inside the page instead of widening it
    "#environment,#results-table{display:block;overflow-x:auto;max-width:100%}"
)
MAX_FAILURES_SHOWN = 60  # per model and challenge in the page; results.json keeps them all


def _record(report: Any) -> dict[str, Any] | None:
    return next((value for name, value in getattr(report, "user_properties", []) if name == RECORD_PROPERTY), None)


@pytest.hookimpl(optionalhook=True)
def pytest_html_report_title(report: Any) -> None:
    report.title = "kernelgrade report"


@pytest.hookimpl(optionalhook=True)
def pytest_html_results_summary(prefix: list[str], summary: list[str], postfix: list[str], session: Any) -> None:
    run = session.config.stash.get(SUMMARY_KEY, None)
    if run is not None:
        prefix.append(summary_html(run, report_sections(session.config, run)))


def summary_html(run: dict[str, Any], sections: list[tuple[str, str]] = ()) -> str:
    """The page's summary, in the order a reader wants it: status and warnings, the ranking, the grade matrix and its
    heatmap, then per challenge its breakdown, traps and, folded per model, every failed case with why, by how much
    and how to run it again; then head-to-head and every extra section of grades.md (``sections``). pytest-html's own
    table of test results follows it. Also the body of a recovered report."""
    # tabulate's "html" format escapes every cell, so model-supplied text stays text; inert.visible shows controls.
    parts = [f'<style>{SUMMARY_CSS}</style><div id="kg-summary">']
    if run.get("status", "complete") != "complete":
        parts.append(
            f'<p class="kg-status"><b>{escape(run["status"].upper())}</b>: {inert.html(run["status_detail"])}</p>'
        )
    parts += [f'<p class="kg-warning"><b>warning</b>: {inert.html(w)}</p>' for w in tables.warnings(run)]
    if deselected := tables.deselected_line(run):
        parts.append(f'<p class="kg-deselected"><b>{inert.html(deselected)}</b></p>')
    parts.append("<h2>Ranking</h2>")
    parts.append(table(*tables.ranking(run)))
    parts.append(f"<p>{inert.html(tables.ranking_rule(run))}.</p>")
    parts.append("<h2>Grades</h2>")
    parts.append(_breakable_head(table(*tables.grade_matrix(run))))
    parts.append(f'<div class="kg-picture">{pictures.heatmap_svg(run)}</div>')
    parts.append("<h3>Task profiles</h3>")
    parts.append(table(*tables.task_profiles(run)))
    for challenge in tables.graded_challenges(run):
        parts.append(f"<h3>{escape(challenge['title'])} (<code>{escape(challenge['id'])}</code>)</h3>")
        parts.append(table(*tables.breakdown(run, challenge["id"])))
        if traps := pictures.traps_html(run, challenge["id"]):
            parts.append(f"<h4>Traps of {escape(challenge['id'])}</h4>{traps}")
        parts.append(failures_html(run, challenge["id"]))
    parts.append("<h2>Head-to-head</h2>")
    parts.append(table(*tables.head_to_head(run)))
    parts.append(f'<h2>Speed</h2><div class="kg-picture">{pictures.speed_svg(run)}</div>')
    for title, body in sections:
        parts.append(f"<h2>{inert.html(title)}</h2>{markup.to_html(body)}")
    parts.append(f"<p>Seed {escape(str(run['options']['seed']))}; every case in results.json.</p>")
    parts.append("</div>")
    return "".join(parts)


def _breakable_head(html_table: str) -> str:
    """The table with its column names allowed to wrap after each underscore: nine challenge ids side by side
    (``paged_attention_decode``, ``flash_attention_bwd``) ran the grade matrix past a 1,400-pixel window. Only the
    head is touched: its names are the grader's challenge ids, never a submission's text."""
    head, cut, body = html_table.partition("</thead>")
    return head.replace("_", "_<wbr>") + cut + body if cut else html_table


def failures_html(run: dict[str, Any], challenge: str) -> str:
    """One folded block per model with failed cases of ``challenge``: case, the trap it guards, outcome and origin,
    the grader's message (it states the worst error against its bound), and on the next row the command that runs it
    again."""
    by_unit: dict[str, list[failures.FailedCase]] = {}
    for case in failures.failed_cases(run, challenge):
        by_unit.setdefault(case.unit, []).append(case)
    blocks = []
    for unit, cases in by_unit.items():
        scored = sum(c.scored for c in cases)
        beyond = len(cases) - scored
        counted = f"{scored} failed" + (f", {beyond} beyond the task (not scored)" if beyond else "")
        rows = []
        for case in cases[:MAX_FAILURES_SHOWN]:
            rows.append(
                f"<tr><td>{inert.html(case.case)}</td><td>{inert.html(case.guards)}</td>"
                f"<td>{inert.html(case.outcome)} [{inert.html(case.tag)}]</td>"
                f'<td class="kg-why">{inert.html(case.message)}</td></tr>'
            )
            if case.reproduce:  # on a row of its own: a long command must not squeeze the message
                rows.append(f'<tr><td colspan="4">run it again: <code>{inert.html(case.reproduce)}</code></td></tr>')
        more = len(cases) - MAX_FAILURES_SHOWN
        rest = f"<p>{more} more failed cases in results.json.</p>" if more > 0 else ""
        blocks.append(
            f"<details><summary>{inert.html(unit)}: {counted}</summary><table><thead><tr><th>case</th><th>guards"
            "</th><th>outcome</th><th>why (the worst error against its bound)</th></tr></thead><tbody>"
            f"{''.join(rows)}</tbody></table>{rest}</details>"
        )
    return "".join(blocks)


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

"""Rebuild the reports of a run that died (``kill -9``, a lost machine) from its ``cases.jsonl``, marked incomplete.

    python -m plugins.report.recover REPORTS_DIR

Writes ``grades.md``, ``results.json`` (``"status": "incomplete"``), the pictures and a self-contained ``report.html``
in ``REPORTS_DIR`` from every case the run recorded, graded with the rubric file it named (the default scoring: a
``pytest_grader_*`` plugin of the original run is not loaded here, which the report says). Badges are not written: a
letter of an unfinished run is not one to show. A grading run that finds a killed run's folder does this itself
before it moves the folder aside. The offline pieces here (:func:`offline_summary`, :func:`write_offline`) also join
the shards of a sharded run (:mod:`plugins.report.merge`).
Exit status: 0 when reports were written, 1 when there was nothing to recover, 2 on a usage error.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
from collections.abc import Sequence
from html import escape
from pathlib import Path
from typing import Any

from plugins import GRADER_PLUGINS
from plugins.base import inert
from plugins.base.records import CaseRecord
from plugins.grade import rubric as rubric_module
from plugins.grade import summary as summary_module
from plugins.grade.journal import FILE_NAME, replay
from plugins.report import files, state

OFFLINE_NOTE = "recovered offline from cases.jsonl: scored with the rubric file and the default scoring hooks"
# Section plugins of GRADER_PLUGINS that need the live run (--baseline, --judge-grades): not rebuilt offline. A
# user's section hooks (the repository's conftest.py, ``-p`` plugins of the run) are: :func:`user_section_hooks`.
LIVE_ONLY = frozenset({"plugins.report.comparisons"})


def recover(folder: Path, reason: str = "the grading process did not finish") -> str:
    """Write the incomplete reports of ``folder``; returns a line saying what was done, with a warning for each file
    that could not be written ("" if nothing could be done)."""
    path = folder / FILE_NAME
    if not path.is_file():
        return ""
    journal = replay(path)
    if journal.header is None or not journal.records:
        return ""
    header = journal.header
    records = list(journal.records.values())
    measure_speed = bool(header["options"].get("measure_speed", True))
    counts = summary_module.selection_counts(records, summary_module.effective(journal.selection, measure_speed))
    ran = summary_module.cases_ran(counts)
    detail = f"{ran} ({reason}); grades cover only those and are marked incomplete"
    summary = offline_summary(header, records, journal.selection, summary_module.INCOMPLETE, detail, OFFLINE_NOTE)
    if journal.damaged_lines:
        summary["warnings"].append(f"{journal.damaged_lines} damaged line(s) of cases.jsonl were skipped")
    problems = write_offline(folder, summary, "kernelgrade report (incomplete)", badges=False)
    done = f"recovered {len(records)} cases of a run that did not finish into {folder} (marked incomplete)"
    # Both callers (main, lifecycle.retire) show this one line on the terminal: files not written are said there.
    return "; ".join([done, *(f"warning: {p}" for p in problems)])


def offline_summary(
    header: dict[str, Any],
    records: list[CaseRecord],
    selection: summary_module.Selection,
    status: str,
    detail: str,
    note: str,
) -> dict[str, Any]:
    """The summary of journalled cases, outside pytest: the rubric file the header names and the default scoring
    (``note``, a warning of the reports, says so)."""
    rubric = rubric_of(header)
    with_note = header | {"warnings": [*header.get("warnings", []), note]}
    return summary_module.summarise(with_note, records, selection, status, detail, rubric)


def rubric_of(header: dict[str, Any]) -> rubric_module.Rubric:
    """The rubric file the run named, or the grader's own when that file cannot be read here."""
    default = Path(__file__).resolve().parent.parent / "grade" / "rubric.toml"
    try:
        return rubric_module.load_rubric(Path(header["options"].get("rubric", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return rubric_module.load_rubric(default)


@functools.cache
def offline_section_modules() -> tuple[str, ...]:
    """The grader's plugin modules that write grades.md sections from the summary alone, in the order a run adds them:
    pluggy calls the last registered first, so ``GRADER_PLUGINS`` reversed, less :data:`LIVE_ONLY`. Derived, not
    listed, so a section plugin added to the grader is rebuilt offline too."""
    return tuple(
        name
        for name in reversed(GRADER_PLUGINS)
        if name not in LIVE_ONLY and hasattr(importlib.import_module(name), "pytest_grader_report_sections")
    )


def offline_sections(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The sections of :func:`offline_section_modules` for ``summary``, then the user's section hooks of the run
    (:func:`user_section_hooks`), as ``(title, body)`` pairs. A user's hook that fails offline (it may need the live
    run's ``config``, which is None here) costs its section only: a warning of the reports names it."""
    sections = []
    for name in offline_section_modules():
        hook = importlib.import_module(name).pytest_grader_report_sections
        sections += hook(summary=summary, config=None) or []
    for name, hook in user_section_hooks(summary.get("options", {})):
        try:
            sections += hook(summary=summary, config=None) or []
        except Exception as exc:  # a user's code: whatever it raises, the other reports are still written
            summary.setdefault("warnings", []).append(f"section plugin {name} not rebuilt offline: {exc!r}"[:300])
    return sections


def user_section_hooks(options: dict[str, Any]) -> list[tuple[str, Any]]:
    """``pytest_grader_report_sections`` of the run's own plugins: the repository's root ``conftest.py`` and every
    module the run loaded with ``-p NAME`` (found from the repository and the current folder, as the run found them).
    Both are the grader user's files, never a submission's; the grader's own plugins are left to
    :func:`offline_section_modules`."""
    repo = Path(options.get("repo") or ".")
    hooks: list[tuple[str, Any]] = []
    conftest = repo / "conftest.py"
    if conftest.is_file():
        spec = importlib.util.spec_from_file_location("_kernelgrade_offline_conftest", conftest)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception:  # a conftest that needs pytest's start-up: its sections cannot be rebuilt here
            module = None
        if module is not None and hasattr(module, "pytest_grader_report_sections"):
            hooks.append(("conftest.py", module.pytest_grader_report_sections))
    args = [str(a) for a in options.get("args", [])]
    named = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "-p"] + [a[2:] for a in args if a.startswith("-p")]
    saved = list(sys.path)  # the folders are searched for these imports only, never for the rest of the process
    sys.path.extend(folder for folder in (str(repo), ".") if folder not in sys.path)
    try:
        for name in dict.fromkeys(n for n in named if n and not n.startswith("no:") and n not in GRADER_PLUGINS):
            try:
                module = importlib.import_module(name)
            except Exception:
                continue
            if hasattr(module, "pytest_grader_report_sections"):
                hooks.append((name, module.pytest_grader_report_sections))
    finally:
        sys.path[:] = saved
    return hooks


def write_offline(
    folder: Path, summary: dict[str, Any], title: str, badges: bool, extra: Sequence[tuple[str, str]] = ()
) -> list[str]:
    """grades.md (with the offline sections and ``extra``), results.json, pictures, a self-contained report.html and,
    if ``badges``, the badges; returns the warnings of files that could not be written."""
    sections = [*offline_sections(summary), *extra]
    _, warnings = files.write_reports(summary, folder, sections, badges=badges)
    files.atomic_write(folder / "report.html", page(summary, title, sections))
    return warnings


def page(summary: dict[str, Any], title: str, sections: Sequence[tuple[str, str]] = ()) -> str:
    """A self-contained report.html: the summary block every report has (with the same sections as grades.md), then
    a row per case."""
    from plugins.report.html import summary_html  # imports pytest; only needed when a page is written

    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{escape(title)}</title></head>"
        f"<body><h1>{escape(title)}</h1>{summary_html(summary, list(sections))}"
        f"<h2>Cases</h2>{_cases_table(summary)}</body></html>\n"
    )


def _cases_table(summary: dict[str, Any]) -> str:
    """The columns pytest-html's table adds in a run (model, case, outcome, error / bound, time), one row per case."""
    from plugins.report.html import COLUMNS, case_cells

    rows = [
        "<tr>" + "".join(f"<td>{inert.html(c)}</td>" for c in case_cells(data)) + "</tr>" for data in summary["cases"]
    ]
    head = "".join(f"<th>{escape(c)}</th>" for c in COLUMNS)
    return f"<table id='kg-cases'><tr>{head}</tr>{''.join(rows)}</table>"


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m plugins.report.recover REPORTS_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    if not (folder / FILE_NAME).is_file():
        print(f"{folder}: no {FILE_NAME} to recover from", file=sys.stderr)
        return 1
    status = (state.read_state(folder) or {}).get("status")
    if status not in (state.RUNNING, None):
        print(f"{folder}: its reports are of a run that ended ({status}); nothing to recover", file=sys.stderr)
        return 1
    done = recover(folder)
    print(done or f"{folder / FILE_NAME}: no case was recorded; nothing to recover")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

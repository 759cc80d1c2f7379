"""Rebuild the reports of a run that died (``kill -9``, a lost machine) from its ``cases.jsonl``, marked incomplete.

    python -m plugins.report.recover REPORTS_DIR

Writes ``grades.md``, ``results.json`` (``"status": "incomplete"``) and a plain ``report.html`` in ``REPORTS_DIR`` from
every case the run recorded, graded with the rubric file it named (the default scoring: a ``pytest_grader_*`` plugin of
the original run is not loaded here, which the report says). Badges are not written: a letter of an unfinished run is
not one to show. A grading run that finds a killed run's folder does this itself before it moves the folder aside.
Exit status: 0 when reports were written, 1 when there was nothing to recover, 2 on a usage error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from plugins.grade import rubric as rubric_module
from plugins.grade import summary as summary_module
from plugins.report import lifecycle, markdown
from plugins.report.files import atomic_write
from plugins.report.journal import FILE_NAME, json_safe, replay

OFFLINE_NOTE = "recovered offline from cases.jsonl: scored with the rubric file and the default scoring hooks"


def recover(folder: Path, reason: str = "the grading process did not finish") -> str:
    """Write the incomplete reports of ``folder``; returns a line saying what was done ("" if nothing could be)."""
    path = folder / FILE_NAME
    if not path.is_file():
        return ""
    journal = replay(path)
    if journal.header is None or not journal.records:
        return ""
    header = journal.header
    records = list(journal.records.values())
    rubric = _rubric(Path(header["options"].get("rubric", "")))
    measure_speed = bool(header["options"].get("measure_speed", True))
    ran = summary_module.selection_counts(records, summary_module.effective(journal.selection, measure_speed))
    known = journal.selection.known
    planned = f"{ran['selected'] - ran['skipped_by_choice']} selected" if known else "an unknown number of"
    detail = f"{ran['ran']} of {planned} cases ran ({reason}); grades cover only those and are marked incomplete"
    summary = summary_module.summarise(
        header | {"warnings": [*header.get("warnings", []), OFFLINE_NOTE]},
        records,
        journal.selection,
        summary_module.INCOMPLETE,
        detail,
        rubric,
    )
    if journal.damaged_lines:
        summary["warnings"].append(f"{journal.damaged_lines} damaged line(s) of cases.jsonl were skipped")
    atomic_write(folder / "grades.md", markdown.render(summary, []) + "\n")
    atomic_write(folder / "results.json", json.dumps(json_safe(summary), indent=1, allow_nan=False) + "\n")
    atomic_write(folder / "report.html", _page(summary))
    return f"recovered {len(records)} cases of a run that did not finish into {folder} (marked incomplete)"


def _rubric(path: Path) -> rubric_module.Rubric:
    default = Path(__file__).resolve().parent.parent / "grade" / "rubric.toml"
    try:
        return rubric_module.load_rubric(path)
    except (OSError, ValueError, KeyError, TypeError):
        return rubric_module.load_rubric(default)


def _page(summary: dict) -> str:
    from plugins.report.html import summary_html  # imports pytest; only needed when a page is written

    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>kernelgrade report (incomplete)</title></head>"
        f"<body><h1>kernelgrade report (incomplete)</h1>{summary_html(summary)}</body></html>\n"
    )


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m plugins.report.recover REPORTS_DIR", file=sys.stderr)
        return 2
    folder = Path(argv[0])
    if not (folder / FILE_NAME).is_file():
        print(f"{folder}: no {FILE_NAME} to recover from", file=sys.stderr)
        return 1
    status = (lifecycle.read_state(folder) or {}).get("status")
    if status not in (lifecycle.RUNNING, None):
        print(f"{folder}: its reports are of a run that ended ({status}); nothing to recover", file=sys.stderr)
        return 1
    done = recover(folder)
    print(done or f"{folder / FILE_NAME}: no case was recorded; nothing to recover")
    return 0 if done else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Hostile answers on the wire and hostile folder names, graded in a real run: each gets its own verdict, and none
costs the grader its memory, the run or the reports; a correct control in the same run keeps its grade.

One grading run under ``-n 2`` (xdist's channel is what a lone surrogate broke) holds every wire attack of
``fixtures/adversarial`` (``wire-*``, ``surrogate-*``) and the odd folder names, each name a correct copy of the
control: the names are made here, in a temporary roster (git cannot hold a name that is not UTF-8, nor one with a line
break). A second, tiny run stops on purpose before its session starts, to show that the last run's reports do not stay
in place looking current.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from conftest import FIXTURES, REPO, GradingRun, run_grader
from plugins.base.records import MESSAGE_CHARS, OUTPUT_CHARS, TRACEBACK_CHARS

pytestmark = pytest.mark.grading_run

ADVERSARIAL = FIXTURES.parent / "adversarial"
TILED = REPO / "submissions" / "demo-tiled" / "flash_attention"
SELECTED = "not bwd and (n40- or n1-d64)"  # two fast cases per model; surrogate-message raises on the first
N40, N1 = "b1-h2-n40-d64-t64-causal", "b1-h2-n1-d64-t64-causal"
WIRE_ATTACKS = ["wire-huge-array", "wire-huge-text", "surrogate-message", "surrogate-stdout", "surrogate-array-name"]
# Folder names, each a correct copy of the control. Graded under their own names:
CONTROL_CHARS = "ctl-\x01\x1b[2J\x7f\x9b"  # control characters that are not line breaks: shown escaped
LEADING_DASH = "--model=control"  # reads as an option
LONG_UTF8 = "é" * 125  # 250 bytes of two-byte characters (its node id is 750 characters)
SLASH_LOOKALIKE = "control\u2215sample-2"  # reads as a sample of the control: graded, with a warning
DOTS_LOOKALIKE = "\u2025"  # reads as "..": graded, with a warning
GRADED = ["control", CONTROL_CHARS, LEADING_DASH, LONG_UTF8, SLASH_LOOKALIKE, DOTS_LOOKALIKE]
# Refused, with a warning that names them escaped:
LINE_BREAK = "ctl\ncontrol        A+ (4.30)"  # would start a forged row of the terminal's grade table
INVALID_UTF8 = os.fsdecode(b"bad-\xff")  # stopped the whole run in runspace.copy_submissions
REFUSED = {INVALID_UTF8: "b'bad-\\xff' is not graded", LINE_BREAK: "'ctl\\ncontrol        A+ (4.30)' is not graded"}


def wire_roster(root: Path) -> Path:
    submissions = root / "submissions"
    for model in WIRE_ATTACKS:
        shutil.copytree(ADVERSARIAL / model, submissions / model)
    for name in [*GRADED, *REFUSED]:
        shutil.copytree(TILED, submissions / name / "flash_attention")
    return submissions


@pytest.fixture(scope="module")
def wire_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    root = tmp_path_factory.mktemp("wire")
    submissions = wire_roster(root)
    args = ("-n", "2", "--no-speed", "--call-timeout=20", "--color=no", "-k", SELECTED)
    return run_grader(root, f"--submissions-dir={submissions}", *args)


def outcomes(run: GradingRun, model: str) -> dict[str, str]:
    return {case: rec["outcome"] for (m, _, case), rec in run.records().items() if m == model}


def strings(value: Any) -> list[str]:
    """Every string (keys too) in a JSON value."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in (k, *strings(v))]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def test_run_completes_and_the_control_keeps_its_grade(wire_run):
    """No INTERNALERROR; the control and every graded odd name pass both cases and keep A+."""
    assert "INTERNALERROR" not in wire_run.output and wire_run.returncode == 1, wire_run.output[-3000:]
    letters = wire_run.letters()
    assert {m: letters.get(m) for m in GRADED} == {m: {"flash_attention": "A+"} for m in GRADED}
    assert all(set(outcomes(wire_run, m).values()) == {"passed"} for m in GRADED)


def test_announced_huge_array_is_refused_unread(wire_run):
    """An answer announcing 8 GiB is wrong at once, with the cap in the message (not a timeout after reading it)."""
    for case in (N40, N1):
        record = wire_run.records()[("wire-huge-array", "flash_attention", case)]
        assert record["outcome"] == "wrong" and "over the cap" in record["message"], record["message"]


def test_huge_error_text_is_cut(wire_run):
    """0.9 MiB of type, message and traceback per answer: the records keep a few KB, and say how much was cut."""
    for case in (N40, N1):
        record = wire_run.records()[("wire-huge-text", "flash_attention", case)]
        assert record["outcome"] == "error" and "characters, cut to" in record["message"]
        assert len(record["message"]) <= MESSAGE_CHARS and len(record["traceback"]) <= TRACEBACK_CHARS
    assert (wire_run.reports / "results.json").stat().st_size < 2**20


def test_lone_surrogates_reach_no_report(wire_run):
    """A surrogate in an exception, in printed bytes or in an array's name: each case gets its verdict, and no
    string of results.json or cases.jsonl holds a surrogate (undecodable text shows as U+FFFD)."""
    records = wire_run.records()
    raised = records[("surrogate-message", "flash_attention", N40)]
    assert raised["outcome"] == "error" and raised["message"] == "ValueError: bad \ufffd text \ufffd"
    assert outcomes(wire_run, "surrogate-stdout") == {N40: "passed", N1: "passed"}
    assert "\ufffd" in records[("surrogate-stdout", "flash_attention", N40)]["stdout"]
    named = records[("surrogate-array-name", "flash_attention", N40)]
    assert named["outcome"] == "wrong" and "array name" in named["message"], named["message"]
    journal = [json.loads(line) for line in (wire_run.reports / "cases.jsonl").read_text().splitlines()]
    found = strings(wire_run.summary) + strings(journal)
    assert not [s for s in found if any("\ud800" <= ch <= "\udfff" for ch in s)]
    assert all(len(record["stdout"]) <= OUTPUT_CHARS for record in records.values())


def test_odd_folder_names_are_graded_or_refused_with_a_warning(wire_run):
    """Names that are not UTF-8 or hold a line break are not graded, and a warning names each, escaped, in
    results.json, grades.md and on the terminal; look-alikes of "/" and ".." are graded with a warning."""
    assert not set(REFUSED) & set(wire_run.letters())
    warnings = wire_run.summary["warnings"]
    for says in [*REFUSED.values(), "'control\\u2215sample-2' is graded", "'\\u2025' is graded"]:
        assert [w for w in warnings if says in w], (says, warnings)
        assert f"warning: model folder {says}" in wire_run.output
    text = (wire_run.reports / "grades.md").read_text()
    assert "b'bad-\\\\xff' is not graded" in text and "\ncontrol        A+" not in wire_run.output


def test_failure_before_the_session_leaves_no_report_looking_current(tmp_path):
    """A run that dies while it configures (here a plugin that raises where the copies are made) moves the last
    run's reports to history/ and says it graded nothing; the next run replaces that stub and keeps the history."""
    submissions = tmp_path / "submissions"
    shutil.copytree(TILED, submissions / "control" / "flash_attention")
    args = (f"--submissions-dir={submissions}", "--no-speed", "-k", f"not bwd and {N1}")
    first = run_grader(tmp_path, *args)
    assert first.summary["status"] == "complete", first.output[-2000:]
    with pytest.MonkeyPatch.context() as patch:
        path = [str(FIXTURES.parent / "early_failure"), os.environ.get("PYTHONPATH")]
        patch.setenv("PYTHONPATH", os.pathsep.join(filter(None, path)))
        failed = run_grader(tmp_path, "-p", "_fail_at_configure", *args)
    assert failed.returncode == 3 and "injected failure" in failed.output, failed.output[-2000:]
    state = json.loads((failed.reports / "results.json").read_text())
    assert state["status"] == "failed-to-start" and "injected failure" in state["message"]
    assert "no grades" in (failed.reports / "grades.md").read_text()
    assert not (failed.reports / "report.html").exists() and not (failed.reports / "badges").exists()
    assert json.loads((failed.reports / "history" / "0001" / "results.json").read_text())["status"] == "complete"
    again = run_grader(tmp_path, *args)
    assert again.summary["status"] == "complete" and again.summary["run"] == 2
    assert sorted(p.name for p in (again.reports / "history").iterdir()) == ["0001"]

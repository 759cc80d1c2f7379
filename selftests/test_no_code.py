"""A challenge folder with no source file of the challenge's language is "no code": its own status, one report line.

The rubric's ``[no_code] score`` decides how it counts: "zero" (the default: an F in the ranking and head-to-head,
coverage counted, since the task was given) or "not attempted" (like a missing folder).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from plugins.base.records import NO_CODE, OUTCOMES, CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.discover.submissions import discover
from plugins.grade import rubric as rb
from plugins.grade import summary as sm
from reference import flash_attention

RUBRIC = rb.load_rubric(RUBRIC_FILE)
NOT_ATTEMPTED_TOML = RUBRIC_FILE.read_text().replace('score = "zero"', 'score = "not attempted"')
SELECT = "n40- or r7-v1023-k8"  # one flash-attention case, one CUDA run case; the CUDA build case has no "r7-"


def not_attempted_rubric(tmp_path: Path) -> Path:
    """A copy of the shipped rubric with ``[no_code] score = "not attempted"``."""
    assert RUBRIC_FILE.read_text() != NOT_ATTEMPTED_TOML  # the shipped rubric spells the default out
    path = tmp_path / "rubric.toml"
    path.write_text(NOT_ATTEMPTED_TOML)
    return path


@pytest.fixture
def subs(tmp_path: Path) -> Path:
    """A prompt-only folder, a notes-and-data folder, a CUDA folder with only Markdown, and a correct control."""
    root = tmp_path / "subs"
    for model, challenge, files in (
        ("prompt-only", "flash_attention", {"PROMPT.md": "# Write flash_attention_fwd\n"}),
        ("notes-only", "flash_attention", {"notes.txt": "ran out of time\n", "data.csv": "n,ms\n40,1\n"}),
        ("cuda-md-only", "softmax_topk", {"README.md": "```cuda\n__global__ void k() {}\n```\n", "<img src=x>.md": ""}),
    ):
        for name, text in files.items():
            (root / model / challenge).mkdir(parents=True, exist_ok=True)
            (root / model / challenge / name).write_text(text)
    shutil.copytree(REPO / "submissions" / "demo-tiled" / "flash_attention", root / "control" / "flash_attention")
    return root


def test_discovery_marks_folders_without_code(subs):
    """Discovery says what each no-code folder holds; a folder with code is not marked."""
    found = {(s.model, s.challenge): s for s in discover(subs)}
    assert found["prompt-only", "flash_attention"].no_code == (
        "no code submitted: the folder holds PROMPT.md only (no .py file)"
    )
    assert found["notes-only", "flash_attention"].no_code.endswith("holds data.csv, notes.txt (no .py file)")
    assert found["cuda-md-only", "softmax_topk"].no_code.endswith("holds <img src=x>.md, README.md (no .cu file)")
    assert found["control", "flash_attention"].no_code == ""


def no_code_records(model: str = "m") -> list[CaseRecord]:
    message = "no code submitted: the folder holds PROMPT.md only (no .py file)"
    return [
        CaseRecord.for_case(model, "flash_attention", case, i, NO_CODE, message=message)
        for i, case in enumerate(flash_attention.CASES)
        if not case.is_speed
    ]


def summarise(records: list[CaseRecord], rubric: rb.Rubric) -> dict:
    header = {"options": {"measure_speed": False}, "challenges": [{"id": "flash_attention", "graded": True}]}
    keys = {(rec.model, rec.challenge, rec.case_index) for rec in records}
    return sm.summarise(header, records, sm.Selection(keys, set(), True), "complete", "", rubric)


def test_zero_scores_no_code_as_an_f():
    """Default rubric: the status "no code", 0 points, no failure list, an F in the ranking and head-to-head."""
    assert NO_CODE in OUTCOMES and RUBRIC.no_code == "zero"
    tiled = [CaseRecord.for_case("t", "flash_attention", c, i, "passed") for i, c in enumerate(flash_attention.CASES)]
    summary = summarise(no_code_records() + tiled, RUBRIC)
    grade = summary["models"]["m"]["challenges"]["flash_attention"]
    assert grade["letter"] == rb.NO_CODE and grade["points"] == 0.0 and grade["failed"] == []
    assert grade["no_code"].startswith("no code submitted") and grade["outcomes"] == {NO_CODE: len(no_code_records())}
    row = next(row for row in summary["ranking"] if row["model"] == "m")
    assert row["mean_grade_points"] == 0.0 and row["rank"] == 2 and row["coverage"] == "1 of 1"
    assert summary["models"]["m"]["overall"] == "F" and summary["head_to_head"]["t"]["m"] == [1, 0, 0]


def test_not_attempted_leaves_no_code_unranked(tmp_path):
    """Under "not attempted": no rank, no coverage, no head-to-head game; the status and its line stay."""
    rubric = rb.load_rubric(not_attempted_rubric(tmp_path))
    tiled = [CaseRecord.for_case("t", "flash_attention", c, i, "passed") for i, c in enumerate(flash_attention.CASES)]
    summary = summarise(no_code_records() + tiled, rubric)
    assert summary["models"]["m"]["challenges"]["flash_attention"]["letter"] == rb.NO_CODE
    row = next(row for row in summary["ranking"] if row["model"] == "m")
    assert row["rank"] is None and row["mean_grade_points"] is None and row["coverage"] == "0 of 1"
    assert summary["models"]["m"]["overall"] == rb.NOT_GRADED and summary["head_to_head"]["t"]["m"] == [0, 0, 0]


def test_unknown_no_code_score_is_a_broken_rubric(tmp_path):
    """A misspelt setting must not silently fall back to the default."""
    path = tmp_path / "rubric.toml"
    path.write_text(RUBRIC_FILE.read_text().replace('score = "zero"', 'score = "skip"'))
    with pytest.raises(ValueError, match="no_code"):
        rb.load_rubric(path)


def matrix(run) -> str:
    return (run.reports / "grades.md").read_text().split("## Grade matrix")[1].split("\n## ")[0]


@pytest.mark.grading_run
def test_grading_run_shows_no_code(grade, subs, tmp_path):
    """A real run: "no code" with its symbol and one line each, no per-case errors; the rubric switch unranks it."""
    args = (f"--submissions-dir={subs}", "--no-speed", "-k", SELECT, str(REPO / "tests" / "test_softmax_topk"))
    run = grade(*args)
    assert "INTERNALERROR" not in run.output and "no Python file defines" not in run.output
    letters = run.letters()
    assert letters == {
        "control": {"flash_attention": "A+"},
        "cuda-md-only": {"softmax_topk": "no code"},
        "notes-only": {"flash_attention": "no code"},
        "prompt-only": {"flash_attention": "no code"},
    }
    assert {r["outcome"] for (m, _, _), r in run.records().items() if m != "control"} == {NO_CODE}
    text = (run.reports / "grades.md").read_text()
    assert "no Python file defines" not in text and "no CUDA source" not in text
    assert "<img" not in text and "holds &lt;img src=x&gt;.md, README.md" in text  # file names are inert
    assert re.search(r"\| prompt-only +\| F \(0\.00\) +\|(?:[^\n]*\|)? ∅ no code +\|", matrix(run))  # any column order
    assert text.count("**prompt-only** ∅ no code submitted: the folder holds PROMPT.md only (no .py file)") == 1
    assert len(re.findall(r"^- \*\*prompt-only\*\*", text, re.M)) == 1  # one line, no failure list
    assert "(1 ∅ no code, as F)" in text and "∅ no code counts as an F." in text
    assert run.summary["models"]["prompt-only"]["rank"] is not None

    run = grade(*args, f"--rubric={not_attempted_rubric(tmp_path)}")
    assert run.letters()["prompt-only"] == {"flash_attention": "no code"}
    assert run.summary["models"]["prompt-only"]["rank"] is None
    assert run.summary["models"]["prompt-only"]["coverage"] == "0 of 1"  # of the run's challenges
    assert re.search(r"\| prompt-only +\| — +\|(?:[^\n]*\|)? ∅ no code +\|", matrix(run))  # any column order
    assert "(+1 ∅ no code, not counted)" in (run.reports / "grades.md").read_text()

"""Several samples per model: sample folders as graded units, ``--model`` over samples, pass@k, mean and spread.

The demo ``submissions/demo-samples/flash_attention/`` holds ``sample-1/`` (correct) and ``sample-2/`` (drops the final
partial key tile, so it fails the uneven-tile edge cases) beside a ``PROMPT.md``.
"""

from __future__ import annotations

import itertools
import math
import re
import statistics
from fractions import Fraction
from pathlib import Path

import pytest

from plugins.base.records import NO_CODE, PASSED, WRONG, CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.discover.submissions import discover, known_names, select, split_sample
from plugins.grade import rubric as rb
from plugins.grade import summary as sm
from plugins.grade.samples import pass_at_k
from plugins.report import markup
from plugins.report import samples as report_samples
from reference import flash_attention

RUBRIC = rb.load_rubric(RUBRIC_FILE)
CODE = "def flash_attention_fwd(Q, K, V, tile_size, causal=True):\n    return Q\n"
# One core case (b1-h2-n256 at t64, whole tiles) and one edge case (n300 at t97, an uneven final tile).
TWO_CASES = "b1-h2-n256-d64-t64-causal] or b1-h2-n300-d64-t97-causal]"


def test_pass_at_k_known_values():
    """pass@k of the estimator at values worked out by hand: half of two, none, all."""
    assert pass_at_k(2, 1, 1) == 0.5 and pass_at_k(2, 1, 2) == 1.0
    assert [pass_at_k(5, 0, k) for k in range(1, 6)] == [0.0] * 5
    assert [pass_at_k(4, 4, k) for k in range(1, 5)] == [1.0] * 4
    # exact until one final float(Fraction), which rounds as 1 / 3 and 2 / 3 do: equal, not approximately equal
    assert pass_at_k(3, 1, 1) == 1 / 3 and pass_at_k(3, 1, 2) == 2 / 3
    for bad in ((2, 3, 1), (2, -1, 1), (2, 1, 0), (2, 1, 3)):
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_pass_at_k_equals_enumeration_over_subsets():
    """For n <= 7, pass@k is the share of the k-subsets of the n samples that hold at least one pass."""
    for n in range(1, 8):
        for c in range(n + 1):
            passes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(passes, k))
                share = Fraction(sum(any(s) for s in subsets), len(subsets))
                assert len(subsets) == math.comb(n, k) and pass_at_k(n, c, k) == float(share), (n, c, k)


def write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)


def test_discovery_of_sample_folders(tmp_path):
    """sample-<N> folders are units (by number, prompt-only is no code); other names beside them are ignored."""
    fa = "m/flash_attention"
    write(tmp_path, {f"{fa}/PROMPT.md": "# task\n", f"{fa}/top.py": CODE, f"{fa}/samples-old/old.py": CODE})
    write(tmp_path, {f"{fa}/sample-01/a.py": CODE, f"{fa}/sample-0/a.py": CODE})  # not positive integers as written
    write(tmp_path, {f"{fa}/sample-1/a.py": CODE, f"{fa}/sample-10/a.py": CODE, f"{fa}/sample-3/PROMPT.md": "# task\n"})
    write(tmp_path, {"one/flash_attention/sample-2/a.py": CODE, "plain/flash_attention/samples-old/a.py": CODE})
    found = discover(tmp_path)
    assert [(s.model, split_sample(s.model)[1], s.base_model) for s in found] == [
        ("m/sample-1", "sample-1", "m"),
        ("m/sample-3", "sample-3", "m"),
        ("m/sample-10", "sample-10", "m"),
        ("one", "", "one"),  # a single sample folder: just the model, graded from that folder (asserted below)
        ("plain", "", "plain"),  # samples-old is no sample folder: the challenge folder is graded as before
    ]
    by_name = {s.model: s for s in found}
    assert by_name["m/sample-1"].folder == (tmp_path / fa / "sample-1").resolve()
    assert by_name["m/sample-1"].entries == (("flash_attention_fwd", "a.py"),)
    assert by_name["m/sample-3"].no_code == "no code submitted: the folder holds PROMPT.md only (no .py file)"
    assert by_name["one"].folder.name == "sample-2" and by_name["plain"].entries[0][1] == "samples-old/a.py"
    assert [split_sample(s.model) for s in found][:2] == [("m", "sample-1"), ("m", "sample-3")]
    assert split_sample("m/samples-old") == ("m/samples-old", "")  # only a sample's name splits


def test_model_names_select_samples(tmp_path):
    """--model takes a model's name (every sample) or a unit's exact name; unknown names come back."""
    write(tmp_path, {"m/flash_attention/sample-1/a.py": CODE, "m/flash_attention/sample-2/a.py": CODE})
    write(tmp_path, {"m/flash_attention_bwd/b.py": CODE, "mm/flash_attention/a.py": CODE})
    found = discover(tmp_path)
    chosen, unknown = select(found, ["m"])
    assert [(s.model, s.challenge) for s in chosen] == [
        ("m", "flash_attention_bwd"),
        ("m/sample-1", "flash_attention"),
        ("m/sample-2", "flash_attention"),
    ] and unknown == []
    chosen, unknown = select(found, ["m/sample-2", "m/sample-9", "m/"])
    assert [s.model for s in chosen] == ["m/sample-2"] and unknown == ["m/", "m/sample-9"]
    assert known_names(found) == ["m", "m/sample-1", "m/sample-2", "mm"]


@pytest.mark.grading_run
def test_model_option_and_marker_select_the_demo_samples(grade):
    """--model demo-samples collects both samples; the marker with a unit's name selects that sample only."""
    run = grade("--collect-only", "-q", "--model", "demo-samples", "-k", "flash and not bwd")
    ids = re.findall(r"\[(demo-samples/sample-\d)/", run.output)
    assert run.returncode == 0, run.output[-2000:]
    assert sorted(set(ids)) == ["demo-samples/sample-1", "demo-samples/sample-2"]
    assert len(ids) == 2 * len(flash_attention.CASES) and len(re.findall(r"::test_", run.output)) == len(ids)
    run = grade("--collect-only", "-q", "-m", "submission(model='demo-samples/sample-2')")
    assert set(re.findall(r"\[([^\]]+)/b\d", run.output)) == {"demo-samples/sample-2"}


def records(model: str, outcomes: dict[int, str]) -> list[CaseRecord]:
    return [
        CaseRecord.for_case(model, "flash_attention", flash_attention.CASES[i], i, outcome, message=outcome)
        for i, outcome in outcomes.items()
    ]


def summarise(recs: list[CaseRecord]) -> dict:
    header = {"options": {"measure_speed": False}, "challenges": [{"id": "flash_attention", "graded": True}]}
    keys = {(rec.model, rec.challenge, rec.case_index) for rec in recs}
    return sm.summarise(header, recs, sm.Selection(keys, set(), True), "complete", "", RUBRIC)


def test_summary_of_three_samples_and_a_single_one():
    """Pass (no failed core/edge case), fail on edge, no code: c = 1 of 3; one graded sample gets no entry."""
    hostile = "<img src=x onerror=alert(1)>"
    recs = records(f"{hostile}/sample-1", {0: PASSED, 3: PASSED, 15: WRONG})  # a robustness failure still passes
    recs += records(f"{hostile}/sample-2", {0: PASSED, 3: WRONG, 15: PASSED})
    recs += records(f"{hostile}/sample-3", {0: NO_CODE, 3: NO_CODE, 15: NO_CODE})
    recs += records("solo/sample-1", {0: PASSED, 3: PASSED})  # its other samples deselected
    summary = summarise(recs)
    (group,) = summary["samples"]
    assert (group["model"], group["challenge"], group["n"], group["passed"]) == (hostile, "flash_attention", 3, 1)
    assert [s["passes"] for s in group["samples"]] == [True, False, False]
    assert group["pass_at_k"] == {"pass@1": 1 / 3, "pass@2": 2 / 3, "pass@3": 1.0}
    points = [s["points"] for s in group["samples"]]
    assert points[2] == 0.0 and group["mean_points"] == pytest.approx(sum(points) / 3, abs=0.01)
    # rubric.toml weights of the categories scored (core 40, edge 25; the rest drop out, and case 15 depends on a rule
    # our prompts never state, float32-stays-float32, so it is not scored): 65/65, 40/65
    assert points[:2] == [100.0, 61.54] and group["sd_points"] == pytest.approx(statistics.stdev(points), abs=0.01)
    assert (group["min_points"], group["max_points"]) == (min(points), max(points))
    text = report_samples.render(summary)
    assert "<img" not in text and "&lt;img src=x onerror=alert(1)&gt;" in text
    assert "| 0.33 " in text and "| 0.67 " in text and "∅ no code" in text
    assert "<img" not in markup.to_html(text) and "&lt;img src=x onerror=alert(1)&gt;" in markup.to_html(text)


@pytest.mark.grading_run
def test_grading_run_of_the_demo_samples(grade):
    """A scoped run: each sample's letter, mean and spread, pass@k in results.json; the section in every report."""
    run = grade("--model", "demo-samples", "--no-speed", "--seed", "7", "-k", TWO_CASES)
    assert run.returncode == 1, run.output[-3000:]  # sample-2 fails its uneven-tile case, on purpose
    assert run.letters() == {
        "demo-samples/sample-1": {"flash_attention": "A+"},
        "demo-samples/sample-2": {"flash_attention": "D"},
    }
    failed = run.summary["models"]["demo-samples/sample-2"]["challenges"]["flash_attention"]["failed"]
    assert [(f["case"], f["guards"]) for f in failed] == [("b1-h2-n300-d64-t97-causal", "uneven final tile")]
    (group,) = run.summary["samples"]
    assert [group[k] for k in ("model", "challenge", "n", "passed")] == ["demo-samples", "flash_attention", 2, 1]
    assert group["pass_at_k"] == {"pass@1": 0.5, "pass@2": 1.0}
    assert [(s["points"], s["passes"]) for s in group["samples"]] == [(100.0, True), (61.54, False)]
    # 100 and 40 / (40 + 25) of 100 (core passed, the one edge case failed): mean 80.77, sd |a - b| / sqrt(2) = 27.2
    spread = [group[k] for k in ("mean_points", "sd_points", "min_points", "max_points")]
    assert spread == [80.77, 27.2, 61.54, 100.0]
    text = (run.reports / "grades.md").read_text()
    section = text.split("## Samples and pass@k\n", 1)[1].split("\n## ", 1)[0]
    figures = r"\| 2 +\| 1 +\| 80\.77 +\| 27\.20 +\| 61\.5–100\.0 +\| 0\.50 +\| 1\.00 +\|"
    assert re.search(r"\| demo-samples +\| flash_attention +" + figures, section)
    assert re.search(r"\| demo-samples +\| flash_attention +\| sample-2 +\| D \(61\.5\) +\| fail +\| 1 +\|", section)
    assert "the ranking has one row per model, which counts the mean of its samples" in section
    ranked = text.split("## Ranking\n", 1)[1].split("\n## ", 1)[0]  # one row for the model, never one per sample
    assert re.search(r"\| 1 +\| demo-samples +\|", ranked) and "sample-" not in ranked
    assert "Samples and pass@k" in (run.reports / "report.html").read_text()
    terminal = run.output.split("kernelgrade: grade matrix", 1)[1]
    assert "samples and pass@k" in terminal and re.search(r"demo-samples +flash_attention +2 +1 +80\.77", terminal)

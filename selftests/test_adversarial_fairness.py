"""Hostile submissions against fair timing and the disk: each attack of ``fixtures/adversarial`` gets its own verdict,
with the correct control model graded in the same run beside it.

Two real grading runs of ``tests/test_flash`` under ``-n 2`` (a few cases each): one without speed holds the threads
and processes left running after an answer and the disk attacks; one with speed holds the helper processes that wait
until the grader has looked and then slow the reference down. Verdicts only: outcomes, and speed ratios compared
within one run; no absolute time is asserted.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from test_adversarial_sandbox import build_roster, outcomes

from conftest import REPO, GradingRun, run_grader
from plugins.grade.rubric import load_rubric

pytestmark = [pytest.mark.grading_run, pytest.mark.exclusive]  # left-running looks need an idle machine

LEFT_RUNNING = ["hog-thread", "hog-setsid", "hog-fork"]
DISK = ["disk-filler", "many-files"]
CORRECTNESS = "n300-d64-t97-full"  # two cases per challenge: enough for every verdict here
SPEED = "causal-speed and not bwd"  # the forward's speed case alone: at the task's N = 4096, seconds per call


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    root = tmp_path_factory.mktemp("fairness")
    submissions, _ = build_roster(root, [*LEFT_RUNNING, *DISK])
    return run_grader(root, "-n", "2", "--no-speed", f"--submissions-dir={submissions}", "-k", CORRECTNESS)


def control_passes(run: GradingRun) -> bool:
    control = outcomes(run, "control")
    return bool(control) and set(control.values()) == {"passed"}


# hog-setsid once passed under load: the grader looked at the tree it read first, where the escape had not yet forked
# its spinner (fairness.leftovers now reads the tree at every look; test_fairness.py holds that race still).
@pytest.mark.parametrize("model", LEFT_RUNNING)
def test_what_runs_after_the_answer_costs_its_own_case(hostile, model):
    """A spinning thread, a setsid grandchild and a forked process per core, each still running after the answer:
    every case of the attack is "left_running" (its processes killed); the control passes every case beside it."""
    verdicts = {case: rec for (m, _, case), rec in hostile.records().items() if m == model}
    assert verdicts and {r["outcome"] for r in verdicts.values()} == {"left_running"}, hostile.output[-3000:]
    assert all("left processes running" in r["message"] for r in verdicts.values())
    assert control_passes(hostile), outcomes(hostile, "control")


def test_a_full_disk_fails_the_filler_only(hostile):
    """Writing until the disk is full fails in the filler's own capped space (its case says so, with the caps); the
    control's copies and cases are untouched."""
    records = [r for (m, _, _), r in hostile.records().items() if m == "disk-filler"]
    assert records and all(r["outcome"] == "error" and "No space left" in r["message"] for r in records), records
    assert all("writable space is capped" in r["message"] for r in records)
    assert control_passes(hostile), outcomes(hostile, "control")


def test_many_small_files_are_capped(hostile):
    """200,000 empty files fill no size: the grader counts them from outside and stops the child past its cap."""
    records = [r for (m, _, _), r in hostile.records().items() if m == "many-files"]
    assert records and all(r["outcome"] == "error" and "files and folders" in r["message"] for r in records), records
    assert control_passes(hostile), outcomes(hostile, "control")


# Slow and load-sensitive (30 to 130 s; its pair compares timings on a shared machine): python -m pytest
# selftests/test_adversarial_fairness.py -m slow
@pytest.mark.slow
def test_helpers_that_wait_out_the_look_cannot_slow_the_reference(tmp_path: Path):
    """Slow code (several times the reference's time) whose helper processes sleep through the grader's look after
    each answer and spin while it waits for the next request: between two of its calls they get no CPU worth a tenth
    of the reference's time (the fixture prints what they used), the reference's median in its pair stays within 2x
    of the control's pair in the same run, and the slow code earns no full speed credit; the control passes."""
    submissions, _ = build_roster(tmp_path, ["hog-delayed"])
    fixed = ("--speed-repeats", "2", "--speed-max-trials", "2")
    run = run_grader(tmp_path, "-n", "2", *fixed, f"--submissions-dir={submissions}", "-k", SPEED)
    timed = {m: r for (m, c, _), r in run.records().items() if c == "flash_attention" and r["speed"]}
    assert set(timed) == {"hog-delayed", "control"}, run.output[-3000:]
    speed = {m: r["speed"] for m, r in timed.items()}
    helpers = re.search(r"helpers' CPU since the last answer: ([0-9.]+) s", timed["hog-delayed"]["stdout"])
    reference = speed["hog-delayed"]["baseline_median_s"]
    assert helpers and float(helpers.group(1)) < 0.1 * reference, (timed["hog-delayed"]["stdout"], speed)
    assert speed["hog-delayed"]["baseline_median_s"] < 2 * speed["control"]["baseline_median_s"], speed
    full_credit_below = load_rubric(REPO / "plugins" / "grade" / "rubric.toml").speed_bands[0][0]
    assert speed["hog-delayed"]["ratio"] >= full_credit_below, speed
    assert control_passes(run), outcomes(run, "control")

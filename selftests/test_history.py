"""The reports folder's history: runs kept numbered in ``history/NNNN/`` with a retention count, ``--baseline=last|N``,
``--fail-on-regression``, report files readable by others (0644), and invocations that grade nothing (a usage error,
``-k`` that selects no case) leaving the last real run's reports exactly as they were."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import run_grader
from plugins.report import compare_runs as cr
from plugins.report import files, lifecycle

NO_COLOR = ("-p", "no:cacheprovider", "--color=no")
# Forward cases only: a backward truth imports torch for its autograd oracle, 3 s of each of these tests' six runs.
FORWARD_CASES = "(n300-d64-t97-causal-f32 and not keep or n33) and not bwd"
SCOPE = ("--model=demo-tiled,demo-buggy", "--no-speed", "--seed=7", "-k", FORWARD_CASES)


def fake_run(folder: Path, number: int | None, status: str = "complete") -> None:
    """Every file a run leaves in the reports folder, its results.json numbered ``number``."""
    state = {"schema_version": 1, "status": status, "models": {}, "cases": []}
    if number is not None:
        state["run"] = number
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(state))
    for name in ("grades.md", "report.html", "cases.jsonl", "heatmap.svg", "speed.svg"):
        (folder / name).write_text(f"{name} of run {number}\n")
    (folder / "badges").mkdir(exist_ok=True)
    (folder / "badges" / "m.svg").write_text("<svg/>")


def test_retire_keeps_every_file_of_a_run_under_its_number(tmp_path):
    """The pictures and badges move with their run's grades.md, into history/<its number>."""
    fake_run(tmp_path, 7)
    lifecycle.retire(tmp_path)
    kept = tmp_path / "history" / "0007"
    assert sorted(p.name for p in kept.iterdir()) == sorted([*lifecycle.REPORT_FILES, "badges"])
    assert (kept / "heatmap.svg").read_text() == "heatmap.svg of run 7\n"
    assert not [p for p in tmp_path.iterdir() if p.name != "history"]
    assert lifecycle.next_run_number(tmp_path) == 8


def test_unnumbered_or_taken_numbers_never_overwrite_a_kept_run(tmp_path):
    """A run written before runs were numbered, or one whose number is taken, gets the next free number."""
    fake_run(tmp_path, None)
    lifecycle.retire(tmp_path)
    fake_run(tmp_path, 1)
    lifecycle.retire(tmp_path)
    assert sorted(lifecycle.run_folders(tmp_path)) == [1, 2]
    assert (tmp_path / "history" / "0001" / "grades.md").read_text() == "grades.md of run None\n"
    assert (tmp_path / "history" / "0002" / "grades.md").read_text() == "grades.md of run 1\n"


def test_retention_deletes_the_oldest_runs_only(tmp_path):
    """--keep-runs=2: after four runs, runs 3 and 4 are kept and the rest deleted."""
    for number in (1, 2, 3, 4):
        fake_run(tmp_path, number)
        said = lifecycle.retire(tmp_path, keep=2)
    assert sorted(lifecycle.run_folders(tmp_path)) == [3, 4]
    assert "1 older run(s) deleted (--keep-runs=2)" in said


def test_stubs_are_never_kept_and_never_a_baseline(tmp_path):
    """A failed-to-start stub is removed, not archived; --baseline=last skips it for the newest finished run."""
    fake_run(tmp_path, 1)
    lifecycle.retire(tmp_path)
    (tmp_path / "results.json").write_text(json.dumps({"schema_version": 1, "status": lifecycle.FAILED_TO_START}))
    assert lifecycle.run_results(tmp_path, "last") == tmp_path / "history" / "0001" / "results.json"
    lifecycle.retire(tmp_path)
    assert sorted(lifecycle.run_folders(tmp_path)) == [1] and not (tmp_path / "results.json").exists()


def test_baseline_last_and_n(tmp_path):
    """last: the folder's own finished reports first, else the newest kept run; N: run N wherever it is."""
    fake_run(tmp_path, 1)
    lifecycle.retire(tmp_path)
    fake_run(tmp_path, 2)
    assert lifecycle.run_results(tmp_path, "last") == tmp_path / "results.json"
    assert lifecycle.run_results(tmp_path, "2") == tmp_path / "results.json"
    assert lifecycle.run_results(tmp_path, "1") == tmp_path / "history" / "0001" / "results.json"
    assert lifecycle.run_results(tmp_path, "3") is None
    with pytest.raises(cr.BaselineError, match=r"no run 3 in .*\(runs kept in history/: 1\)"):
        cr.baseline_input("3", tmp_path)
    assert cr.baseline_input("last", tmp_path / "empty", given=False) is None  # a first run: nothing to regress from


def test_report_files_are_readable_by_others(tmp_path):
    """Written 0644 under the usual umask 022 (mkstemp alone gives 0600), and never more than the umask allows."""
    old = os.umask(0o022)
    try:
        files.atomic_write(tmp_path / "grades.md", "x\n")
        assert stat.S_IMODE((tmp_path / "grades.md").stat().st_mode) == 0o644
        os.umask(0o077)
        files.atomic_write(tmp_path / "private.md", "x\n")
        assert stat.S_IMODE((tmp_path / "private.md").stat().st_mode) == 0o600
    finally:
        os.umask(old)


def test_regressions_are_drops_of_more_than_one_step_and_newly_failing_cases():
    """A+ to A is noise (one step); A+ to A- is a regression; a newly failing case is one; statuses never are."""
    ladder = ["A+", "A", "A-", "B+", "F"]
    comparison = {
        "grades": [
            {"model": "one-step", "challenge": "c", "letters": ["A+", "A"]},
            {"model": "two-steps", "challenge": "c", "letters": ["A+", "A-"]},
            {"model": "better", "challenge": "c", "letters": ["F", "A+"]},
            {"model": "status", "challenge": "c", "letters": ["A+", "built"]},
            {"model": "new", "challenge": "c", "letters": [None, "F"]},
        ],
        "cases": {"newly_failing": [{"model": "m", "challenge": "c", "case": "k", "after": "wrong"}]},
    }
    assert cr.regressions(comparison, ladder) == ["two-steps c: A+ → A- (2 steps down)", "m c/k: newly wrong"]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.grading_run
def test_typos_never_touch_the_last_real_report(tmp_path):
    """Two `-k flsh` runs in a row, an unknown model and a bad option: the folder stays byte for byte as the last real
    run left it (before, the second `-k flsh` deleted that run's reports for good)."""
    first = run_grader(tmp_path, *SCOPE, *NO_COLOR)
    assert first.summary["status"] == "complete" and first.summary["run"] == 1, first.output[-2000:]
    before = snapshot(first.reports)
    for args in (("-k", "flsh"), ("-k", "flsh"), ("--model=nobdy",), ("--call-timeout=0",)):
        again = run_grader(tmp_path, *args, *NO_COLOR)
        assert again.returncode in (4, 5) or "no graded case selected" in again.output, again.output[-2000:]
        assert snapshot(first.reports) == before, args
    second = run_grader(tmp_path, *SCOPE, *NO_COLOR)
    assert second.summary["run"] == 2 and lifecycle.run_folders(second.reports) == {1: second.reports / "history/0001"}
    assert json.loads((second.reports / "history/0001/results.json").read_bytes()) == json.loads(before["results.json"])
    assert (second.reports / "history/0001/heatmap.svg").read_bytes() == before["heatmap.svg"]
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in second.reports.iterdir() if p.is_file()}
    assert set(modes.values()) == {0o644}, modes  # the self-tests run under umask 022


@pytest.mark.grading_run
def test_fail_on_regression_exits_on_regressions_only(tmp_path):
    """Against the last run: exit 0 when nothing regressed although demo-buggy fails a case (pytest alone says 1);
    exit 1 once the baseline says demo-buggy had an A and passed that case."""
    first = run_grader(tmp_path, *SCOPE, *NO_COLOR)
    assert first.returncode == 1, first.output[-2000:]
    same = run_grader(tmp_path, *SCOPE, "--fail-on-regression", *NO_COLOR)
    assert same.returncode == 0 and "no regression against the baseline" in same.output, same.output[-3000:]
    doctored = json.loads((same.reports / "results.json").read_text())
    for c in doctored["cases"]:
        if (c["model"], c["case"]) == ("demo-buggy", "b1-h2-n300-d64-t97-causal-f32"):
            c.update(outcome="passed", message="")
    doctored["models"]["demo-buggy"]["challenges"]["flash_attention"].update(letter="A", points=95.0)
    (same.reports / "results.json").write_text(json.dumps(doctored))
    worse = run_grader(tmp_path, *SCOPE, "--fail-on-regression", "--baseline=last", *NO_COLOR)
    assert worse.returncode == 1, worse.output[-3000:]
    assert "regression: demo-buggy flash_attention: A → C- (7 steps down)" in worse.output
    assert "regression: demo-buggy flash_attention/b1-h2-n300-d64-t97-causal-f32: newly wrong" in worse.output
    assert "baseline last (run 2)" in worse.output

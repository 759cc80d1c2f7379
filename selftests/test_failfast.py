"""Fail fast: after two timeouts in a row, a submission's remaining cases of that challenge fail at once as "not run",
and ``--no-fail-fast`` runs every case. Checked by counting cases (which ones reached a child), never by timing."""

from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, run_grader
from plugins.base.records import PASSED, TIMEOUT, WRONG
from plugins.isolate import failfast

NO_COLOR = ("-p", "no:cacheprovider", "--color=no")
# Six forward cases of flash_attention, no speed: the hanging fixture times out on each one it runs.
SELECT = ("--no-speed", "--call-timeout=1", "-k", "not bwd and (n40- or n1- or n256-)")


def test_tally_counts_timeouts_in_a_row_per_submission(tmp_path):
    """Two timeouts in a row give up on that (model, challenge) only; another outcome in between starts over."""
    tally = failfast.TimeoutTally(tmp_path / "timeouts")
    tally.note("m", "c", TIMEOUT)
    tally.note("m", "c", WRONG)
    tally.note("m", "c", TIMEOUT)
    assert not tally.gave_up("m", "c")
    tally.note("m", "c", TIMEOUT)
    assert tally.gave_up("m", "c") and not tally.gave_up("m", "other") and not tally.gave_up("m/x", "c")
    again = failfast.TimeoutTally(tmp_path / "timeouts")  # another worker of the same run reads the same count
    assert again.count("m", "c") == 2
    again.note("m", "c", PASSED)
    assert not tally.gave_up("m", "c")


@pytest.mark.grading_run
@pytest.mark.parametrize(
    ("fail_fast", "workers"), [(True, 0), (False, 0), (True, 2)], ids=["fail-fast", "no-fail-fast", "fail-fast-n2"]
)
def test_a_hanging_submission_runs_two_cases_then_fails_the_rest_at_once(tmp_path, fail_fast, workers):
    """bad-timeout hangs on every call: by default two cases reach the child and time out, the other four are
    recorded as "not run: the submission timed out twice"; --no-fail-fast runs all six to their timeout. A
    control model beside it is untouched. Under -n 2 the count is shared by the workers (the run's private space)."""
    subs = tmp_path / "subs"
    shutil.copytree(FIXTURES / "bad-timeout", subs / "bad-timeout")
    shutil.copytree(
        FIXTURES.parents[2] / "submissions" / "demo-tiled" / "flash_attention", subs / "ok" / "flash_attention"
    )
    extra = (() if fail_fast else ("--no-fail-fast",)) + (("-n", str(workers)) if workers else ())
    run = run_grader(tmp_path, f"--submissions-dir={subs}", *SELECT, *extra, *NO_COLOR)
    records = [r for (m, _, _), r in run.records().items() if m == "bad-timeout"]
    assert len(records) == 6 and {r["outcome"] for r in records} == {TIMEOUT}, run.output[-3000:]
    skipped = [r for r in records if r["message"] == failfast.MESSAGE]
    assert len(skipped) == (4 if fail_fast else 0)
    if not workers:  # one process runs the cases in case order: the first two reached the child
        assert all(r["message"] != failfast.MESSAGE for r in sorted(records, key=lambda r: r["case_index"])[:2])
    assert {r["outcome"] for (m, _, _), r in run.records().items() if m == "ok"} == {PASSED}

"""Fail fast: once a submission timed out on the first two cases of a challenge (its probes), its other cases of that
challenge fail at once as "not run", and ``--no-fail-fast`` runs every case; a submission that hangs on some cases only
gets the same verdict either way. Checked by counting cases (which ones reached a child), never by timing."""

from __future__ import annotations

import shutil

import pytest

from conftest import FIXTURES, run_grader
from plugins.base.records import PASSED, TIMEOUT, WRONG
from plugins.isolate import failfast

NO_COLOR = ("-p", "no:cacheprovider", "--color=no")
# Six forward cases of flash_attention, no speed: the hanging fixture times out on each one it runs.
SELECT = ("--no-speed", "--call-timeout=1", "-k", "not bwd and (n40- or n1- or n256-)")


def test_only_the_probes_decide_per_submission(tmp_path):
    """The probes are the first two selected cases in case-table order; both timing out gives up on the other cases of
    that (model, challenge) only; another outcome of either probe, or a timeout elsewhere, gives up nothing."""
    assert failfast.probes([11, 6, 0, 8, 1, 15]) == (0, 1) and failfast.probes([7]) == (7,)
    outcomes = failfast.ProbeOutcomes(tmp_path / "timeouts")
    probes = (0, 1)
    outcomes.note("m", "c", probes, 6, TIMEOUT)  # not a probe: not recorded
    outcomes.note("m", "c", probes, 0, TIMEOUT)
    assert not outcomes.gave_up("m", "c", probes, 8)
    outcomes.note("m", "c", probes, 1, WRONG)
    assert not outcomes.gave_up("m", "c", probes, 8)
    outcomes.note("m", "c", probes, 1, TIMEOUT)  # a probe run again (another sample of the case) ends in a timeout
    assert outcomes.gave_up("m", "c", probes, 8) and not outcomes.gave_up("m", "c", probes, 1)
    assert not outcomes.gave_up("m", "other", probes, 8) and not outcomes.gave_up("m/x", "c", probes, 8)
    assert not outcomes.gave_up("m", "c", (0,), 8)  # one selected case: no probe pair, nothing given up
    again = failfast.ProbeOutcomes(tmp_path / "timeouts")  # another worker of the same run reads the same outcomes
    assert again.gave_up("m", "c", probes, 15)
    again.note("m", "c", probes, 0, PASSED)
    assert not outcomes.gave_up("m", "c", probes, 8)


@pytest.mark.grading_run
@pytest.mark.parametrize(
    ("fail_fast", "workers"), [(True, 0), (False, 0), (True, 2)], ids=["fail-fast", "no-fail-fast", "fail-fast-n2"]
)
def test_a_hanging_submission_runs_two_cases_then_fails_the_rest_at_once(tmp_path, fail_fast, workers):
    """bad-timeout hangs on every call: by default its two probes reach the child and time out, the other four are
    recorded as not run; --no-fail-fast runs all six to their timeout. A control model beside it is untouched. Under
    -n 2 the probes' outcomes are shared by the workers (the run's private space)."""
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
    assert all(r["message"] != failfast.MESSAGE for r in sorted(records, key=lambda r: r["case_index"])[:2])
    assert {r["outcome"] for (m, _, _), r in run.records().items() if m == "ok"} == {PASSED}


@pytest.mark.grading_run
def test_a_submission_that_hangs_on_some_cases_gets_the_same_verdict_either_way(tmp_path):
    """bad-timeout-some hangs on the two short-sequence cases (6 and 8 of the case table, next to each other in the
    selection) and answers the others correctly: its probes (0 and 1) pass, so every case runs and the verdicts equal
    --no-fail-fast's. ("Two timeouts in a row" gave up on cases 11 and 15 here, which pass.)"""
    subs = tmp_path / "subs"
    shutil.copytree(FIXTURES / "bad-timeout-some", subs / "bad-timeout-some")
    outcomes = []
    for extra in ((), ("--no-fail-fast",)):
        (tmp_path / f"run{len(outcomes)}").mkdir()
        run = run_grader(tmp_path / f"run{len(outcomes)}", f"--submissions-dir={subs}", *SELECT, *extra, *NO_COLOR)
        outcomes.append({case: r["outcome"] for (_, _, case), r in run.records().items()})
    assert outcomes[0] == outcomes[1], outcomes
    assert sorted(outcomes[0].values()) == [PASSED] * 4 + [TIMEOUT] * 2

"""Speed cases, issue 19: paired statistics on synthetic times, the stopping rule's trial counts, the device's paired
trials (on a stand-in for torch), the verdicts that keep a wrong submission untimed, and the slots by resource.

No timing is asserted: every figure here is computed from times made up for the test, or counted."""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import math
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from conftest import REPO
from plugins.base.records import NOT_TIMED, OUTCOMES, CaseRecord
from plugins.base.wording import interval_words, speed_words
from plugins.compare import paired
from plugins.discover.submissions import discover
from plugins.isolate import fairness, gpu_cases, schedule, verdicts
from plugins.isolate import plugin as plugin_module
from plugins.isolate.plugin import CaseRunner
from plugins.isolate.runspace import RunSpace
from plugins.isolate.runtimes import cuda as cuda_loader
from plugins.report.speed import peer_rows
from reference.challenges import reference_module


def test_the_credited_ratio_is_the_median_of_per_trial_ratios():
    """The figure is the median of per-trial ratios, not the ratio of the medians: load that slowed both sides of a
    trial cancels in its ratio (every trial exactly 2x: 2.0 with a zero-width interval), and where the two figures
    differ the paired one is credited (ratios 0.5, 5, 3: 3.0, where the medians' ratio is 2.5)."""
    steady = paired.paired([2.0, 2.2, 8.0, 8.8, 10.0], [1.0, 1.1, 4.0, 4.4, 5.0])
    assert (steady.ratio, steady.low, steady.high, steady.trials) == pytest.approx((2.0, 2.0, 2.0, 5))
    crossed = paired.paired([1.0, 5.0, 6.0], [2.0, 1.0, 2.0])
    assert crossed.ratio == pytest.approx(3.0)
    assert statistics.median([1.0, 5.0, 6.0]) / statistics.median([2.0, 1.0, 2.0]) == pytest.approx(2.5)


def test_the_bootstrap_interval_is_deterministic_and_holds_the_median():
    """The same times give the same interval every time (a fixed seed); it holds the median and widens with noise."""
    ratios = [1.9, 2.0, 2.1, 2.05, 1.95, 2.3, 1.7]
    first, second = paired.bootstrap_interval(ratios), paired.bootstrap_interval(ratios)
    assert first == second and first[0] <= statistics.median(ratios) <= first[1]
    noisy = paired.bootstrap_interval([1.0, 3.0, 2.0, 0.5, 4.0, 2.0, 1.5])
    assert noisy[1] - noisy[0] > first[1] - first[0]
    assert paired.bootstrap_interval([2.5]) == (2.5, 2.5) and all(map(math.isnan, paired.bootstrap_interval([])))


def test_unusable_trials_are_left_out_of_the_ratios():
    """A trial whose reference request failed (NaN) or timed nothing (0) gives no ratio."""
    assert paired.trial_ratios([1.0, 2.0, 3.0, 4.0], [0.5, math.nan, 0.0, 2.0]) == [2.0, 2.0]
    assert math.isnan(paired.paired([1.0], [math.nan]).ratio)


def run_plan(plan: paired.TrialPlan, pairs: list[tuple[float, float]]) -> tuple[int, str]:
    """Feed trials to the plan as _race does; returns how many it took and why it stopped."""
    mine: list[float] = []
    theirs: list[float] = []
    for a, b in pairs:
        mine.append(a)
        theirs.append(b)
        if reason := plan.stop(mine, theirs):
            return len(mine), reason
    raise AssertionError("the plan never stopped")


def test_steady_trials_stop_at_the_least():
    """Ratios that agree within a few percent stop at --speed-repeats, saying the interval was narrow."""
    steady = [(0.02 * (1 + 0.01 * (i % 3)), 0.01) for i in range(50)]
    count, reason = run_plan(paired.TrialPlan(least=5, most=20), steady)
    assert count == 5 and reason == "interval within ±10% after 5 trials"


def test_noisy_trials_go_on_to_the_cap():
    """Ratios spread over a factor of three never get a ±10% interval: the trials stop at the cap and say so."""
    noisy = [(0.01 * (1 + 2 * (i % 2)), 0.01) for i in range(50)]
    count, reason = run_plan(paired.TrialPlan(least=5, most=12), noisy)
    assert count == 12 and reason.startswith("trial cap of 12 reached (interval ±")


def test_noisy_slow_trials_stop_at_the_time_budget():
    """Seconds-long noisy trials stop once both sides' timed calls add up to the budget, past the least only."""
    slow = [(3.0 * (1 + (i % 2)), 2.0) for i in range(50)]  # 5 s and 8 s trials by turns: 26 s after four
    count, reason = run_plan(paired.TrialPlan(least=2, most=40, budget_s=20.0), slow)
    assert count == 4 and reason.startswith("time budget of 20 s reached after 4 trials")
    assert run_plan(paired.TrialPlan(least=4, most=40, budget_s=1.0), slow)[0] == 4  # never fewer than the least


def test_a_trial_that_settles_late_stops_when_it_settles():
    """Noise in the first trials, then agreement: the trials end once the interval has narrowed, before the cap."""
    trials = [(0.03, 0.01), (0.01, 0.01)] + [(0.02, 0.01)] * 40
    count, reason = run_plan(paired.TrialPlan(least=2, most=40), trials)
    assert 2 < count < 40 and reason == f"interval within ±10% after {count} trials"


def test_figures_keep_the_raw_times_and_the_interval():
    """The record's figures: both sides' raw times in trial order, both medians, the paired ratio and interval."""
    mine, theirs = [0.3, 0.1, 0.2], [0.1, 0.1, 0.1]
    figures = paired.figures(mine, theirs)
    assert figures["times_s"] == mine and figures["baseline_times_s"] == theirs and figures["repeats"] == 3
    assert figures["ratio"] == pytest.approx(2.0) and figures["median_s"] == pytest.approx(0.2)
    assert figures["ratio_low"] <= figures["ratio"] <= figures["ratio_high"] and figures["paired"] is True


def test_speed_words_show_the_interval_and_why_the_trials_ended():
    """The record message and the peer table carry the interval; records without one (older runs) read as before."""
    speed = paired.figures([0.3, 0.1, 0.2], [0.1, 0.1, 0.1]) | {"stopped": "trial cap of 3 reached (interval ±50%)"}
    words = speed_words(speed)
    assert words.startswith("2.0× slower than the reference (95% interval ") and "trial cap of 3 reached" in words
    old = {"median_s": 1.0, "spread_s": 0.0, "baseline_median_s": 0.5, "ratio": 2.0}
    assert interval_words(old) == "" and speed_words(old).startswith("2.0× slower than the reference, spread 0%")


def test_peers_are_compared_through_their_paired_ratios():
    """Two submissions whose reference medians differ (timed under different load) are put apart by their credited
    ratios, not by their raw medians: 4.0 against 2.0 is 2.00×, though their medians are equal."""

    def case(model: str, mine: list[float], theirs: list[float]) -> dict:
        speed = paired.figures(mine, theirs)
        return {"model": model, "challenge": "c", "case": "s", "category": "speed", "outcome": "passed", "speed": speed}

    summary = {"cases": [case("a", [4.0] * 3, [1.0] * 3), case("b", [4.0] * 3, [2.0] * 3)]}
    rows = peer_rows(summary)[("c", "s")]
    assert [row[0] for row in rows] == ["b", "a"] and rows[0][3] == "1.00× (fastest)" and rows[1][3] == "2.00×"


class _FakeTorch:
    """Enough of torch for ``time_launches``: events that report how many launches ran between them, in ms."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        self.cuda = self

    def synchronize(self) -> None: ...

    def current_device(self) -> int:
        return 0

    def get_device_properties(self, device: int) -> object:
        return type("Properties", (), {"L2_cache_size": 50 * 2**20})()

    def empty(self, size: int, dtype: object, device: str) -> object:
        assert size == 100 * 2**20  # twice the L2
        return type("Buffer", (), {"fill_": lambda self, value: None})()

    uint8 = "uint8"

    def Event(self, enable_timing: bool) -> object:  # noqa: N802 - torch's name
        fake = self

        class Event:
            def record(self) -> None:
                self.at = len(fake.launched)

            def synchronize(self) -> None: ...

            def elapsed_time(self, end: Event) -> float:
                return float(end.at - self.at)

        return Event()


def test_device_trials_alternate_every_launch_and_drop_a_failing_baseline():
    """Each trial times every launch once, in an order that rotates; a baseline that fails at warm-up is left out,
    the submission's failure is raised; the child's account of its wall time comes with the times."""
    torch = _FakeTorch()

    def launch(label: str):
        return lambda: torch.launched.append(label)

    def broken() -> None:
        raise RuntimeError("no triton")

    launches = {"submission": launch("submission"), "torch": launch("torch"), "triton": broken, "copy": launch("copy")}
    times = cuda_loader.time_launches(torch, launches, lambda: None)
    timed = torch.launched[3 * cuda_loader.WARMUP :]
    assert timed[:6] == ["submission", "torch", "copy", "torch", "copy", "submission"]
    assert all(len(times[label]) == cuda_loader.TRIALS for label in ("submission", "torch", "copy"))
    assert "triton" not in times and {"wall_warmup", "wall_flush", "wall_trials"} <= set(times)
    with pytest.raises(RuntimeError):
        cuda_loader.time_launches(torch, {"submission": broken, "torch": launch("torch")}, lambda: None)


def record(case: str, index: int, outcome: str, beyond: list[str] | None = None) -> CaseRecord:
    made = CaseRecord("m<b>", "kv_cache", case, index, "core", "trap", outcome)
    made.beyond = beyond or []
    return made


def test_verdicts_name_the_failed_correctness_cases_in_case_order(tmp_path: Path):
    """Failed and never-ended cases are named, in case-table order; passed, skipped and beyond-the-task ones are not;
    another submission's verdicts stay apart."""
    for index, case, outcome, beyond in [(3, "d", "wrong", None), (0, "a", "passed", None), (1, "b", "skipped", None),
                                         (2, "c", "crash", None), (4, "e", "wrong", ["tie-order"])]:  # fmt: skip
        verdicts.started(tmp_path, "m<b>", "kv_cache", index, case)
        verdicts.ended(tmp_path, record(case, index, outcome, beyond))
    verdicts.started(tmp_path, "m<b>", "kv_cache", 5, "f")  # its worker died during it
    assert verdicts.wrong_in(tmp_path, "m<b>", "kv_cache") == ["c", "d", "f"]
    # Before the speed phase, a case still running is not (yet) a failure: only verdicts that ended count.
    assert verdicts.wrong_in(tmp_path, "m<b>", "kv_cache", running_fails=False) == ["c", "d"]
    assert verdicts.wrong_in(tmp_path, "m<b>", "flash_attention") == []
    assert verdicts.not_timed_message(list("abcdefg")) == "not timed: wrong in a, b, c, d, e and 2 more"
    assert NOT_TIMED in OUTCOMES


def test_a_speed_case_starts_its_children_before_the_phase_and_reads_the_verdicts_after(tmp_path: Path):
    """``CaseRunner.speed_phase``: the children start first (never inside a slot), then the wait for the phase (the
    GPU's barrier for a case timed on the device), then the verdicts, all in by then: a case that failed during the
    wait refuses the timing; one still running before it did not count (``not_timed(..., ended=True)``)."""
    kv = next(s for s in discover(REPO / "submissions") if (s.model, s.challenge) == ("demo-tiled", "kv_cache"))
    speed_case = next(c for c in reference_module("kv_cache").CASES if c.is_speed)
    events: list[str] = []
    space = SimpleNamespace(root=tmp_path)
    runner = CaseRunner(SimpleNamespace(time_failed=False), SimpleNamespace(space=space))

    def waits(on_device: bool, meanwhile=None) -> str:
        events.append(f"wait on_device={on_device}")
        verdicts.started(tmp_path, kv.model, kv.challenge, 0, "c0")
        verdicts.ended(tmp_path, CaseRecord(kv.model, kv.challenge, "c0", 0, "core", "trap", "wrong"))
        return ""

    runner.phase_wait = waits
    child = SimpleNamespace(start_ahead=lambda: events.append("start"))
    verdicts.started(tmp_path, kv.model, kv.challenge, 1, "c1")  # still running on another worker
    assert runner.not_timed(kv, speed_case, 9, ended=True) is None
    refused = runner.speed_phase(kv, speed_case, 9, [child, child], on_device=True)
    assert events == ["start", "start", "wait on_device=True"]
    assert refused is not None and refused.outcome == NOT_TIMED and "c0" in refused.message


def test_the_wait_for_the_phase_does_the_cases_own_steps_until_they_run_out(tmp_path: Path):
    """``schedule.wait_for_speed_phase`` with ``meanwhile`` (the truths of a speed case's later trials): called while
    the barrier is absent, until it returns False (never again after), and not at all once the barrier is there."""
    barrier = tmp_path / schedule.BARRIER_NAME
    config = SimpleNamespace(workerinput={schedule.BARRIER_KEY: str(barrier)})
    steps: list[int] = []

    def three_steps() -> bool:
        steps.append(len(steps))
        return len(steps) < 3

    opens = threading.Timer(0.5, barrier.write_text, ("done\n",))
    opens.start()
    assert schedule.wait_for_speed_phase(config, meanwhile=three_steps) == ""
    assert steps == [0, 1, 2] and barrier.exists()  # the third said False: the wait then only slept until it opened
    steps.clear()
    assert schedule.wait_for_speed_phase(config, meanwhile=three_steps) == "" and not steps


def test_a_speed_cases_later_truths_are_computed_while_it_waits_and_read_in_its_trials(tmp_path: Path):
    """``CaseRunner.truth_ahead`` puts a later trial's truth in the run's shared store (not the worker's memory), and
    the trial reads it from there: the same values as computed in place, with no reference work in the trial."""
    reference = reference_module("layer_norm_bwd")
    case = next(c for c in reference.CASES if not c.is_speed)
    cfg = SimpleNamespace(seed=20261207)
    for run in ("run", "alone"):
        (tmp_path / run).mkdir()
    waiting = CaseRunner(cfg, SimpleNamespace(space=SimpleNamespace(root=tmp_path / "run")))
    assert waiting.truth_ahead(reference, case, 7)
    assert not waiting._truths and waiting.truth_seconds > 0
    trial = CaseRunner(cfg, SimpleNamespace(space=SimpleNamespace(root=tmp_path / "run")))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(reference, "expected", lambda *_: pytest.fail("the trial computed its truth again"))
        inputs, expected = trial.truth(reference, case, 7)
    alone = CaseRunner(cfg, SimpleNamespace(space=SimpleNamespace(root=tmp_path / "alone")))
    inputs_alone, expected_alone = alone.truth(reference, case, 7)
    assert all(np.array_equal(inputs[k], inputs_alone[k]) for k in inputs_alone)
    assert all(np.array_equal(expected.values[k], expected_alone.values[k]) for k in expected_alone.values)


def test_cpu_slots_are_pairs_of_cores_beside_the_gpus(monkeypatch):
    """One CPU slot per pair of cores left after a core per GPU; the GPU slot's pair gets the cores left over."""
    monkeypatch.setattr(schedule, "host_cores", lambda: 16)
    assert schedule.cpu_speed_slots() == 8 and schedule.cpu_speed_slots(1) == 7
    monkeypatch.setattr(schedule, "host_cores", lambda: 2)
    assert schedule.cpu_speed_slots() == 1 and schedule.cpu_speed_slots(1) == 1
    monkeypatch.setattr(fairness.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert fairness.slot_cores(6, 7) == {12, 13} and fairness.spare_cores(7) == {14, 15}
    assert fairness.spare_cores(8) is None and fairness.spare_cores(1) is None


KV_TESTS = "tests/test_kvcache"
KV_CORE = "b1-p16-s8-h4-d64-l2"  # one sequence: the submission below raises on it
KV_SPEED = "b2-p256-s2-h4-d64-l2-speed"  # two sequences, tens of milliseconds per call here
KV_ARGS = ("-k", f"{KV_CORE} or {KV_SPEED}", "--speed-repeats", "2", "--speed-max-trials", "4")
WRONG_ONCE = """
_prefill = prefill


def prefill(weights, prompts, lengths):  # wrong on a batch of one sequence only; right on the speed case's two
    if len(lengths) == 1:
        raise ValueError("one sequence")
    return _prefill(weights, prompts, lengths)
"""


@pytest.mark.grading_run
def test_a_submission_wrong_in_correctness_is_not_timed_unless_asked(grade, tmp_path):
    """A copy of demo-tiled that fails one core case is not timed on its (right) speed case and earns nothing there;
    demo-tiled beside it is timed in 2 to 4 paired trials, whose recorded figures follow from its raw times;
    --time-failed times the wrong one too, naming the failed case."""
    for model in ("demo-tiled", "wrong-once"):
        shutil.copytree(REPO / "submissions" / "demo-tiled" / "kv_cache", tmp_path / "subs" / model / "kv_cache")
    with open(tmp_path / "subs" / "wrong-once" / "kv_cache" / "kv_cache.py", "a") as source:
        source.write(WRONG_ONCE)
    run = grade(f"--submissions-dir={tmp_path / 'subs'}", *KV_ARGS, tests=KV_TESTS)
    records = run.records()
    assert records[("wrong-once", "kv_cache", KV_CORE)]["outcome"] == "error", run.output[-3000:]
    untimed = records[("wrong-once", "kv_cache", KV_SPEED)]
    assert (untimed["outcome"], untimed["message"], untimed["speed"]) == (NOT_TIMED, f"not timed: wrong in {KV_CORE}",
                                                                          None)  # fmt: skip
    assert "warmup_s" not in untimed["timing"] and untimed["timing"]["truth_s"] == 0  # nothing ran for it
    assert run.summary["models"]["wrong-once"]["challenges"]["kv_cache"]["categories"]["speed"]["score"] == 0
    speed = records[("demo-tiled", "kv_cache", KV_SPEED)]["speed"]
    assert 2 <= speed["repeats"] <= 4 and len(speed["times_s"]) == len(speed["baseline_times_s"]) == speed["repeats"]
    figure = paired.paired(speed["times_s"], speed["baseline_times_s"])
    assert (speed["ratio"], speed["ratio_low"], speed["ratio_high"]) == pytest.approx((figure.ratio, figure.low,
                                                                                       figure.high))  # fmt: skip
    assert speed["stopped"] == paired.TrialPlan(2, 4).stop(speed["times_s"], speed["baseline_times_s"])
    assert {"warmup_s", "trials_s", "timed_s"} <= set(records[("demo-tiled", "kv_cache", KV_SPEED)]["timing"])
    again = grade(f"--submissions-dir={tmp_path / 'subs'}", "--model", "wrong-once", "--time-failed", *KV_ARGS,
                  tests=KV_TESTS).records()  # fmt: skip
    timed = again[("wrong-once", "kv_cache", KV_SPEED)]
    assert timed["outcome"] == "passed" and timed["speed"]["repeats"] >= 2, timed["message"]
    assert timed["timing"]["timed_although_wrong_in"] == KV_CORE


def test_the_speed_agreement_report_compares_every_case_between_runs(capsys, monkeypatch):
    """bench_scaling's agreement table: per pair of runs, the median and largest relative difference of the credited
    ratios over the cases timed in both (printed; a case missing from a run is shown as a dash)."""
    spec = importlib.util.spec_from_file_location("bench_scaling", REPO / "benchmarks" / "bench_scaling.py")
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "bench_scaling", bench)  # its dataclasses look their module up there
    spec.loader.exec_module(bench)
    a, b, c = ("m", "kv", "a"), ("m", "kv", "b"), ("m", "kv", "c")
    runs = [{a: 1.0, b: 2.0, c: 4.0}, {a: 1.1, b: 2.0, c: 3.0}, {a: 1.0, b: 2.2}]
    out = bench.agreement(runs, ["-n 1", "-n 16", "-n 16 again"])
    assert out["pairs"]["-n 1 vs -n 16"] == pytest.approx({"cases": 3, "median": 0.1, "largest": 0.25})
    assert out["pairs"]["-n 16 vs -n 16 again"]["cases"] == 2
    assert out["pairs"]["-n 16 vs -n 16 again"]["largest"] == pytest.approx(0.1)  # b: 2.2 / 2.0; a: 1 - 1 / 1.1
    assert "—" in capsys.readouterr().out
    # With each run's errors: the noise two runs show from those alone, and the cases within two combined errors.
    errors = [{a: 0.036, b: 0.036, c: 0.036}, {a: 0.048, b: 0.048, c: 0.048}, {a: 0.05}]  # combined: 0.06
    out = bench.agreement(runs, ["-n 1", "-n 16", "-n 16 again"], errors)
    pair = out["pairs"]["-n 1 vs -n 16"]  # a (10%) and b (0%) within 12%, c (25%) not
    assert pair["noise"] == pytest.approx(0.674 * 0.06) and (pair["within_noise"], pair["with_errors"]) == (2, 3)
    assert out["pairs"]["-n 16 vs -n 16 again"]["with_errors"] == 1  # b has no error in the third run
    summary = {
        "cases": [
            {"model": "m", "challenge": "kv", "case": "a", "speed": {"ratio": 2.0, "ratio_low": 1.8, "ratio_high": 2.2}}
        ]
    }
    assert bench.speed_errors(summary)[a] == pytest.approx(0.1 / 1.96, rel=1e-3)  # ±10% at 95%


def test_warm_ups_hold_the_gpus_slot_together_and_never_beside_a_timed_case(tmp_path: Path):
    """``RunSpace.speed_lock(shared=True)``: two warm-ups hold a GPU's slot at once; a timed case (exclusive) waits
    until both have let go, and a warm-up waits while a timed case holds it."""
    space = RunSpace(tmp_path, owner=False)
    events: list[str] = []

    def timed() -> None:
        with space.speed_lock("0", 7):
            events.append("timed")

    both_hold, release = threading.Barrier(3, timeout=5), threading.Event()

    def warm_up_holding() -> None:
        with space.speed_lock("0", 7, shared=True):
            both_hold.wait()  # broken after 5 s unless both warm-ups hold the slot at once
            release.wait(10)

    warm_ups = [threading.Thread(target=warm_up_holding) for _ in range(2)]
    for thread in warm_ups:
        thread.start()
    both_hold.wait()
    waiter = threading.Thread(target=timed)
    waiter.start()
    time.sleep(0.3)
    events.append("warm-ups end")
    release.set()
    for thread in [*warm_ups, waiter]:
        thread.join(10)
    assert events == ["warm-ups end", "timed"]

    def warm_up() -> None:
        with space.speed_lock("0", 7, shared=True):
            events.append("warm-up")

    with space.speed_lock("0", 7):
        warm = threading.Thread(target=warm_up)
        warm.start()
        time.sleep(0.3)
        events.append("timed ends")
    warm.join(10)
    assert events[2:] == ["timed ends", "warm-up"]


def test_a_device_speed_case_warms_up_outside_its_slot_on_the_spare_cores(tmp_path: Path):
    """``gpu_cases.warm_up``: one untimed request on the warm-up inputs (never a timed trial's), under the shared
    warm-up lock, the child pinned to the cores no CPU slot has and given back all of them after, also when the
    request raises; its time is a part of the record."""
    calls: list[Any] = []

    class Runner:
        def __init__(self):
            self.parts: dict[str, float] = {}

        def warm_up_inputs(self, reference, case):
            return {"x": np.zeros(1)}

        @contextlib.contextmanager
        def warm_up_lock(self):
            calls.append("lock")
            try:
                yield {14, 15}
            finally:
                calls.append("unlock")

    class Child:
        def __init__(self, fails: bool):
            self.fails = fails

        def pin(self, cores):
            calls.append(("pin", cores))

        def run(self, inputs, params, options):
            calls.append(("run", sorted(inputs), params.get("speed")))
            if self.fails:
                raise RuntimeError("the child broke the wire")

    speed = next(c for c in reference_module("softmax_topk").CASES if c.is_speed)
    runner = Runner()
    gpu_cases.warm_up(runner, reference_module("softmax_topk"), speed, Child(fails=False))
    assert calls == ["lock", ("pin", {14, 15}), ("run", ["x"], True), ("pin", None), "unlock"]
    assert runner.parts["warm_s"] >= 0
    calls.clear()
    with pytest.raises(RuntimeError):
        gpu_cases.warm_up(Runner(), reference_module("softmax_topk"), speed, Child(fails=True))
    assert calls[-2:] == [("pin", None), "unlock"]
    kv = reference_module("kv_cache")
    inputs = CaseRunner(SimpleNamespace(seed=1), SimpleNamespace(space=SimpleNamespace(root=tmp_path)))
    warm, timed = inputs.warm_up_inputs(kv, kv.CASES[0]), inputs.draw(kv, kv.CASES[0], 0)
    assert any(not np.array_equal(warm[k], timed[k]) for k in timed)


def test_the_runners_warm_up_lock_shares_the_gpus_slot_and_yields_the_spare_cores(tmp_path: Path, monkeypatch):
    """``CaseRunner.warm_up_lock`` on a 16-core host with one GPU: the GPU's slot file held shared (another shared
    holder gets it at once, an exclusive one does not), the cores of no CPU slot yielded, its wait counted."""
    monkeypatch.setattr(plugin_module, "visible_gpus", lambda: ["0"])
    monkeypatch.setattr(schedule, "host_cores", lambda: 16)
    monkeypatch.setattr(fairness.os, "sched_getaffinity", lambda pid: set(range(16)))
    cfg = SimpleNamespace(on_gpu=True, gpu="0")
    runner = CaseRunner(cfg, SimpleNamespace(space=RunSpace(tmp_path, owner=False)))
    with runner.warm_up_lock() as cores, open(tmp_path / "speed-gpu0.lock", "a") as other:
        assert cores == {14, 15} and runner.cpu_slots == 7
        fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another warm-up
        fcntl.flock(other, fcntl.LOCK_UN)
        with pytest.raises(BlockingIOError):
            fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a timed case

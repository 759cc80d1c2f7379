"""Verdicts from outside the submission: attacks on the figures a case is judged by (KV-cache bytes per token, DFlash
forwards per verification), each beside a correct control graded in the same run.

Every attack hoards memory or spends a forward per tree node, and then steers what the old driver measured in the
child (memory hidden from its walk, a counter reset on the model it was handed, the driver's own functions replaced
through the stack or the garbage collector), or steers the channel (checkpoints of its own, the feed's tokens taken
early, a service call over the cap). Each fixture's docstring says which. Two grading runs: the KV cache without
speed (its memory case and a core case), DFlash with speed (its forward-count case and a core case).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import REPO, GradingRun, run_grader

pytestmark = pytest.mark.grading_run

ADVERSARIAL = Path(__file__).resolve().parent / "fixtures" / "adversarial"
KV_ATTACKS = ["kv-hidden-bytes", "kv-frame-walk", "kv-fake-checkpoints", "kv-early-feed"]
KV_MEMORY, KV_CORE = "b2-p192-s256-h4-d64-l2-mem", "b1-p16-s8-h4-d64-l2"
DFLASH_ATTACKS = ["dflash-reset-counter", "dflash-frame-walk", "dflash-forged-figure", "dflash-service-flood"]
DFLASH_FORWARDS, DFLASH_CORE = "one-forward-p200-n48", "chain-all"


def roster(root: Path, attacks: list[str], challenge: str) -> Path:
    """A submissions folder with the attacks and ``control`` (demo-tiled's solution of the challenge)."""
    submissions = root / "submissions"
    for model in attacks:
        shutil.copytree(ADVERSARIAL / model, submissions / model)
    shutil.copytree(REPO / "submissions" / "demo-tiled" / challenge, submissions / "control" / challenge)
    return submissions


def verdicts(run: GradingRun, model: str) -> dict[str, dict]:
    return {case: record for (m, _, case), record in run.records().items() if m == model}


def check(record: dict, name: str) -> dict:
    return next(c for c in record["checks"] if c["name"] == name)


@pytest.fixture(scope="module")
def kv_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    root = tmp_path_factory.mktemp("kv-verdicts")
    submissions = roster(root, KV_ATTACKS, "kv_cache")
    selected = f"{KV_MEMORY} or {KV_CORE}"
    run = run_grader(root, "--no-speed", f"--submissions-dir={submissions}", "-k", selected, tests="tests/test_kvcache")
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    return run


@pytest.fixture(scope="module")
def dflash_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    root = tmp_path_factory.mktemp("dflash-verdicts")
    submissions = roster(root, DFLASH_ATTACKS, "dflash_verify")
    selected = f"{DFLASH_FORWARDS} or {DFLASH_CORE}"
    args = (f"--submissions-dir={submissions}", "--speed-repeats", "2", "--speed-max-trials", "2", "-k", selected)
    run = run_grader(root, *args, tests="tests/test_dflash")
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    return run


def test_kv_control_passes_beside_the_attacks(kv_run):
    """The correct cache passes its memory and core cases, both measured the same way as the attacks'."""
    control = verdicts(kv_run, "control")
    assert {case: r["outcome"] for case, r in control.items()} == {KV_MEMORY: "passed", KV_CORE: "passed"}
    assert check(control[KV_MEMORY], "growth_bytes_per_token")["bound_ratio"] < 0.5


@pytest.mark.parametrize("model", ["kv-hidden-bytes", "kv-frame-walk"])
def test_hidden_or_unmeasured_memory_fails_the_memory_case(kv_run, model):
    """A per-step copy of the keys kept as bytes, or kept as arrays with the driver's measure replaced: the grader's
    own samples find the quadratic growth (many times the limit); the core case passes."""
    record = verdicts(kv_run, model)
    assert record[KV_CORE]["outcome"] == "passed", record[KV_CORE]["message"]
    growth = check(record[KV_MEMORY], "growth_bytes_per_token")
    assert record[KV_MEMORY]["outcome"] == "wrong" and growth["bound_ratio"] > 10, record[KV_MEMORY]["message"]


def test_checkpoints_of_its_own_leave_the_figure_unmeasured(kv_run):
    """Checkpoints sent by the submission, labelled as the grader's, fail the memory case (not measured, and why)."""
    record = verdicts(kv_run, "kv-fake-checkpoints")[KV_MEMORY]
    assert record["outcome"] == "wrong" and "memory checkpoints" in record["message"], record["message"]


def test_tokens_taken_early_leave_the_steps_ungraded(kv_run):
    """Taking the feed's tokens ahead (so every sample falls before the hoard) means the logits the grader received
    are placeholders: the steps' logits fail, though the submission's own steps computed the right ones."""
    record = verdicts(kv_run, "kv-early-feed")[KV_MEMORY]
    assert record["outcome"] == "wrong" and not check(record, "step_logits")["passed"], record["message"]
    assert check(record, "prefill_logits")["passed"]


def test_dflash_control_passes_beside_the_attacks(dflash_run):
    """The one-forward verifier passes both cases, its forward count 1 as the grader counted it, and keeps A+."""
    control = verdicts(dflash_run, "control")
    assert {case: r["outcome"] for case, r in control.items()} == {DFLASH_FORWARDS: "passed", DFLASH_CORE: "passed"}
    assert control[DFLASH_FORWARDS]["details"]["target forwards"] == 1
    assert dflash_run.letters()["control"] == {"dflash_verify": "A+"}


@pytest.mark.parametrize("model", ["dflash-reset-counter", "dflash-frame-walk", "dflash-forged-figure"])
def test_forwards_are_counted_by_the_grader(dflash_run, model):
    """A counter reset on the model, the driver's ``max`` replaced, the driver wrapped to report one forward: the
    grader's own count (a forward per node reached) fails the forward-count case; the answers and the core case pass."""
    record = verdicts(dflash_run, model)
    assert record[DFLASH_CORE]["outcome"] == "passed", record[DFLASH_CORE]["message"]
    speed = record[DFLASH_FORWARDS]
    assert speed["outcome"] == "wrong" and check(speed, "golden")["passed"], speed["message"]
    assert check(speed, "acceptance")["passed"], speed["message"]
    assert not check(speed, "forwards")["passed"] and speed["details"]["target forwards"] > 1


def test_an_oversized_service_call_fails_at_once(dflash_run):
    """A service call past the case's wire cap (or the exchange's per-call cap, whichever is lower) fails the case
    that makes it, named as over the cap (the child killed before the grader reads the call); the control beside it is
    untouched. Only the forward-count case serves the model; on the core case the model is a copy in the child, with
    no service to flood, and the (correct) verifier passes."""
    records = verdicts(dflash_run, "dflash-service-flood")
    assert set(records) == {DFLASH_FORWARDS, DFLASH_CORE}, dflash_run.output[-3000:]
    assert {r["outcome"] for r in verdicts(dflash_run, "control").values()} == {"passed"}
    flooded, message = records[DFLASH_FORWARDS], records[DFLASH_FORWARDS]["message"]
    assert flooded["outcome"] in ("wrong", "error") and ("over the cap" in message or "the cap is" in message), message
    assert records[DFLASH_CORE]["outcome"] == "passed", records[DFLASH_CORE]["message"]

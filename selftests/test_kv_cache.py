"""The KV-cache challenge: the reference agrees with toy_lm, the driver measures what it says, and the demos grade as
designed (the correct one passes every case on several seeds; each buggy one is caught by the cases meant for it)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from conftest import run_grader
from reference import kv_cache as kc
from reference import toy_lm
from reference.contract import CATEGORIES, AtMost, Case, ContractError

KV_TESTS = "tests/test_kvcache"
SEEDS = ("20261130", "7")  # the bug roster on the first, the correct demo alone on the second
BUGGY = ("demo-kv-noncausal-prefill", "demo-kv-overwrite", "demo-kv-pos-off-by-one")
SINGLE_TOKEN = "prompts of a single token"  # the one trap a non-causal prefill cannot fall into (nothing to look ahead)


def _case(trap: str) -> Case:
    return next(c for c in kc.CASES if c.guards == trap)


def test_case_table_is_well_formed():
    """Unique readable ids, every category covered, a trap per case, tolerances with reasons."""
    ids = [c.id for c in kc.CASES]
    assert len(ids) == len(set(ids)) and {c.category for c in kc.CASES} == set(CATEGORIES)
    assert all(c.guards for c in kc.CASES) and all(t.reason for t in kc.TOLERANCES.values())
    long = _case("4096 tokens in one sequence").params
    assert long["lengths"][0] + long["S"] == 4096
    assert all(c.params["L"] >= 2 and c.params["S"] >= 2 for c in kc.CASES)  # non-causal prefill and overwrites show


# Sequences up to 512 tokens: the 1024- and 4096-token cases cost seconds and take no path the others miss.
@pytest.mark.parametrize(
    "case", [c for c in kc.CASES if max(c.params["lengths"]) + c.params["S"] <= 512], ids=lambda c: c.id
)
def test_reference_cache_matches_recomputation(case):
    """The reference's own cache (the speed and tolerance baseline) equals toy_lm's causal forward to rounding."""
    inputs = kc.make_inputs(case, np.random.default_rng(11))
    want, got = kc.recompute(inputs, case.params), kc.incremental(inputs, case.params)
    for name in kc.FLOAT_OUTPUTS:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-11)


def test_reference_cache_holds_toy_lm_keys_and_values():
    """After prefill, the cache holds exactly toy_lm's per-layer K and V in each sequence's first slots."""
    case = _case("variable prompt lengths, padding never attended")
    inputs = kc.make_inputs(case, np.random.default_rng(3))
    weights = kc.weights_of(inputs, case.params)
    _, cache = kc.prefill(weights, inputs["prompts"], inputs["lengths"])
    for b, n in enumerate(inputs["lengths"]):
        states = toy_lm.kv_states(weights, weights["n_heads"], inputs["prompts"][b, :n])
        for layer, (k, v) in enumerate(states):
            np.testing.assert_allclose(cache.keys[layer][b, :, :n], k, atol=1e-12)
            np.testing.assert_allclose(cache.values[layer][b, :, :n], v, atol=1e-12)


def test_inputs_expose_the_traps():
    """Padding is random, the position case repeats one token, the precision case overflows a naive exp."""
    x = kc.make_inputs(_case("variable prompt lengths, padding never attended"), np.random.default_rng(0))
    assert len(np.unique(x["prompts"][2, 1:])) > 10  # row 2 is a single token followed by random padding
    x = kc.make_inputs(_case("position of each new token (one token repeated)"), np.random.default_rng(0))
    assert len(np.unique(x["steps"])) == 1 and x["prompts"][0, 0] == x["steps"][0, 0]
    case = _case("softmax over the cache with overflow-scale scores")
    x = kc.make_inputs(case, np.random.default_rng(0))
    w = kc.weights_of(x, case.params)
    seq = kc.sequences(x)[0]
    h = w["tok_emb"][seq] + w["pos_emb"][: len(seq)]
    a = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)  # layer 0's norm
    dh = case.params["d"] // case.params["H"]
    q, k = ((a @ w[f"l0.w{n}"]).reshape(len(seq), -1, dh).transpose(1, 0, 2) for n in "qk")
    assert (q @ k.transpose(0, 2, 1)).max() / np.sqrt(dh) > 709


class FakeRun:
    """The sandbox's ``run`` object, in process: calls entry points by name, as the child does."""

    def __init__(self, entries: dict[str, Any]):
        self.entries, self.contract_error = entries, ContractError

    def call(self, name: str, *args: Any, measure: bool = False) -> Any:
        return self.entries[name](*args)

    def unpack(self, value: Any, count: int, what: str) -> tuple[Any, ...]:
        assert isinstance(value, tuple) and len(value) == count, what
        return value


MEMORY = _case("cache grows linearly (bytes per token against the K/V payload)")
SMALL_MEMORY = kc.model_case("memory", "small memory case", (16, 16), 64, mem=True)  # a quadratic cache stays small


def _memory_figure(entries: dict[str, Any], case: Case) -> tuple[float, float]:
    """The driver's growth figure for ``entries`` (in process) and its limit."""
    inputs = kc.make_inputs(case, np.random.default_rng(5))
    growth = float(kc.drive(FakeRun(entries), inputs, dict(case.params))["growth_bytes_per_token"])
    bound = kc.expected(case, inputs).bounds["growth_bytes_per_token"]
    assert isinstance(bound, AtMost)
    return growth, bound.limit


def hoarding_step(weights: dict[str, Any], tokens: np.ndarray, cache: kc.ReferenceCache) -> Any:
    """The reference step, plus a copy of layer 0's keys kept after every step: memory quadratic in the length."""
    logits, cache = kc.decode_step(weights, tokens, cache)
    n = int(cache.lengths.max())
    cache.history = [*getattr(cache, "history", []), cache.keys[0][:, :, :n].copy()]
    return logits, cache


def test_memory_figure_passes_a_linear_cache_and_fails_a_quadratic_one():
    """The reference grows by one to two payloads per token; a cache that keeps a snapshot per step exceeds 4."""
    reference = {"prefill": kc.prefill, "decode_step": kc.decode_step}
    for case in (MEMORY, SMALL_MEMORY):
        growth, limit = _memory_figure(reference, case)
        assert kc.payload_bytes(case.params) <= growth <= limit / 2
    growth, limit = _memory_figure({"prefill": kc.prefill, "decode_step": hoarding_step}, SMALL_MEMORY)
    assert growth > limit


def test_held_bytes_counts_each_buffer_once_and_finds_module_state():
    """Views count their base once; attributes, slots and containers are walked; module globals count."""
    base = np.zeros((4, 1000))

    class Slotted:
        __slots__ = ("a",)

        def __init__(self) -> None:
            self.a = base[1:]

    holder = type("Holder", (), {})()
    holder.views = [base[:2], base.T, (Slotted(),)]
    assert kc.held_bytes(holder) == base.nbytes
    assert kc.held_bytes({"k": base, "v": np.ones(10)}) == base.nbytes + 80
    module_globals: dict[str, Any] = {"STATE": {"k": np.zeros(100)}, "np": np}
    exec("def decode_step(weights, tokens, cache):\n    return None, cache", module_globals)  # a module of its own
    run = FakeRun({"decode_step": module_globals["decode_step"]})
    assert kc.held_bytes([], *kc.entry_globals(run)) == 800  # state kept at module level counts too


def test_driver_rejects_modified_weights():
    """A submission that writes into the weights breaks the contract."""
    case = _case("prompts of a single token")
    inputs = kc.make_inputs(case, np.random.default_rng(0))

    def scribbling_prefill(weights, prompts, lengths):
        weights["w_out"] *= 2.0
        return kc.prefill(weights, prompts, lengths)

    with pytest.raises(ContractError, match="weights were modified"):
        kc.drive(FakeRun({"prefill": scribbling_prefill, "decode_step": kc.decode_step}), inputs, dict(case.params))


# --- grading runs --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kv_roster(tmp_path_factory: pytest.TempPathFactory):
    """The correct and the three buggy demos on the KV-cache cases (no speed: timings must not move grades)."""
    models = ",".join(("demo-tiled", *BUGGY))
    return run_grader(
        tmp_path_factory.mktemp("kv"), "--no-speed", "--seed", SEEDS[0], "--model", models, tests=KV_TESTS
    )


def _failed(run, model: str) -> dict[str, dict[str, Any]]:
    """Failed case records of one model, keyed by trap."""
    return {r["guards"]: r for r in run.summary["cases"] if r["model"] == model and r["outcome"] != "passed"}


def _check(record: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in record["checks"] if c["name"] == name)


@pytest.mark.grading_run
def test_correct_demo_passes_every_case(kv_roster, tmp_path):
    """demo-tiled passes every non-speed case on two seeds and gets an A+."""
    assert "INTERNALERROR" not in kv_roster.output, kv_roster.output[-3000:]
    assert _failed(kv_roster, "demo-tiled") == {}
    assert kv_roster.letters()["demo-tiled"] == {"kv_cache": "A+"}
    other = run_grader(tmp_path, "--no-speed", "--seed", SEEDS[1], "--model", "demo-tiled", tests=KV_TESTS)
    assert other.returncode == 0, other.output[-3000:]
    ran = [r for r in other.summary["cases"] if r["outcome"] != "skipped"]
    assert len(ran) == len([c for c in kc.CASES if not c.is_speed]) and all(r["outcome"] == "passed" for r in ran)


@pytest.mark.grading_run
def test_noncausal_prefill_is_caught_from_the_prefill_logits(kv_roster):
    """A prefill without the causal mask fails every case but single-token prompts, already in its own logits."""
    failed = _failed(kv_roster, "demo-kv-noncausal-prefill")
    scored = {c.guards for c in kc.CASES if not c.is_speed}
    assert set(failed) == scored - {SINGLE_TOKEN}
    record = failed["causal prefill in a deeper stack"]
    assert not _check(record, "prefill_logits")["passed"] and record["outcome"] == "wrong"
    assert kv_roster.letters()["demo-kv-noncausal-prefill"] == {"kv_cache": "F"}


@pytest.mark.grading_run
def test_overwrite_is_caught_from_the_second_step(kv_roster):
    """A cache that overwrites its last step: prefill and step 1 right, every case wrong from step 2 on."""
    failed = _failed(kv_roster, "demo-kv-overwrite")
    assert set(failed) == {c.guards for c in kc.CASES if not c.is_speed}
    record = failed["each step appends to the cache (an overwrite shows from step 2)"]
    assert _check(record, "prefill_logits")["passed"]
    steps = _check(record, "step_logits")
    assert not steps["passed"] and steps["first_mismatches"][0]["index"][0] == 1  # step index 1 is the second step


@pytest.mark.grading_run
def test_position_off_by_one_is_caught_at_the_first_step(kv_roster):
    """A decode position one too far: prefill right, the very first step wrong, the position case among the failures."""
    failed = _failed(kv_roster, "demo-kv-pos-off-by-one")
    assert "position of each new token (one token repeated)" in failed
    assert set(failed) == {c.guards for c in kc.CASES if not c.is_speed}
    for record in failed.values():
        assert _check(record, "prefill_logits")["passed"]
        assert _check(record, "step_logits")["first_mismatches"][0]["index"][0] == 0

"""The KV-cache challenge: the reference agrees with toy_lm, the driver measures what it says, and the demos grade as
designed (the correct one passes every case on several seeds; each buggy one is caught by the cases meant for it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import REPO, run_grader
from plugins.isolate.plugin import send
from plugins.isolate.sandbox import Limits, Program, Sandbox
from reference import kv_cache as kc
from reference import kv_feed, toy_lm
from reference.contract import CATEGORIES, Case, ContractError
from reference.memory_growth import growth_per_token

KV_TESTS = "tests/test_kvcache"
SEEDS = ("20261130", "7")  # the bug roster on the first, the correct demo alone on the second
BUGGY = ("demo-kv-noncausal-prefill", "demo-kv-overwrite", "demo-kv-pos-off-by-one")
GRADER_CASES = tuple(c for c in kc.CASES if c.contract == "grader-model")  # the own-model ones: test_kv_cache_own.py
SINGLE_TOKEN = "prompts of a single token"  # the one trap a non-causal prefill cannot fall into (nothing to look ahead)


def _case(trap: str) -> Case:
    return next(c for c in GRADER_CASES if c.guards == trap)


def test_case_table_is_well_formed():
    """Unique readable ids, every category covered, a trap per case, tolerances with reasons."""
    ids = [c.id for c in GRADER_CASES]
    assert len(ids) == len(set(ids)) and {c.category for c in GRADER_CASES} == set(CATEGORIES)
    assert all(c.guards for c in GRADER_CASES) and all(t.reason for t in kc.TOLERANCES.values())
    long = _case("4096 tokens in one sequence").params
    assert long["lengths"][0] + long["S"] == 4096
    assert all(
        c.params["L"] >= 2 and c.params["S"] >= 2 for c in GRADER_CASES
    )  # non-causal prefill and overwrites show


# Sequences up to 512 tokens: the 1024- and 4096-token cases cost seconds and take no path the others miss.
@pytest.mark.parametrize(
    "case", [c for c in GRADER_CASES if max(c.params["lengths"]) + c.params["S"] <= 512], ids=lambda c: c.id
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
    """The sandbox's ``run`` object, in process: calls entry points by name, as the child does, and the grader's
    services of the request (the feed) directly."""

    def __init__(self, entries: dict[str, Any], services: dict[str, Any]):
        self.entries, self.services, self.contract_error = entries, services, ContractError

    def service(self, name: str, arrays: dict[str, Any]) -> dict[str, Any]:
        return self.services[name](arrays)

    def call(self, name: str, *args: Any, measure: bool = False) -> Any:
        return self.entries[name](*args)

    def unpack(self, value: Any, count: int, what: str) -> tuple[Any, ...]:
        assert isinstance(value, tuple) and len(value) == count, what
        return value


MEMORY = _case("cache grows linearly (bytes per token against the K/V payload)")
DEMO = REPO / "submissions" / "demo-tiled" / "kv_cache" / "kv_cache.py"
# demo-tiled's cache, plus a copy of layer 0's keys kept after every step (in memory, or in a file under /tmp or in the
# working folder): memory quadratic in the length, wherever it is kept.
HOARDING = """
_step = decode_step


def decode_step(weights, tokens, cache):
    logits, cache = _step(weights, tokens, cache)
    keys = cache.k[0][:, :, : int((cache.prompt_lengths + cache.steps).max())].copy()
    if WHERE == "memory":
        HOARD.append(keys)
    else:
        np.save(f"{WHERE}/hoard-{len(HOARD)}.npy", keys)
        HOARD.append(None)
    return logits, cache
"""


def _memory_figure(folder: Path | None, seed: int) -> float:
    """The grader's growth figure of one memory-case request, in K/V payloads per token (the sandbox measures)."""
    entries = tuple((name, "kv_cache.py" if folder else "") for name in ("prefill", "decode_step"))
    sandbox = Sandbox(Program(kc.__name__, entries, folder), Limits(60, 4 << 30, "cpu"), REPO)
    try:
        outcome = send(sandbox, kc, MEMORY, kc.make_inputs(MEMORY, np.random.default_rng(seed)))
    finally:
        sandbox.close()
    assert outcome.status == "ok", outcome.message + outcome.traceback
    figures, _ = kc.measured_figures(MEMORY, outcome.service_calls, outcome.checkpoints)
    return float(figures["growth_bytes_per_token"]) / kc.payload_bytes(MEMORY.params)


@pytest.mark.parametrize("seed", [5, 6])
def test_memory_figure_is_measured_by_the_grader(tmp_path, seed):
    """From outside the child: the reference cache and demo-tiled grow by one to two payloads per token, a cache that
    keeps a copy per step by far more than the limit of 4, whether it keeps it in memory, under /tmp or in its
    folder; the same verdicts at every seed."""
    assert 1 <= _memory_figure(None, seed) <= kc.MEMORY_GROWTH_FACTOR / 2
    figures = {}
    for where in ("memory", "/tmp", "."):
        folder = tmp_path / f"hoard-{len(figures)}"
        folder.mkdir()
        source = DEMO.read_text() + f"\nWHERE, HOARD = {where!r}, []\n" + HOARDING
        (folder / "kv_cache.py").write_text(source)
        figures[where] = _memory_figure(folder, seed)
    (folder / "kv_cache.py").write_text(DEMO.read_text())
    assert _memory_figure(folder, seed) <= kc.MEMORY_GROWTH_FACTOR / 2
    assert min(figures.values()) > 10 * kc.MEMORY_GROWTH_FACTOR, figures


def test_growth_needs_exactly_the_protocols_checkpoints():
    """The figure is the worst growth per token over checkpoints holding twice the first one's tokens; a checkpoint
    skipped or added (a submission patching the driver or writing to its pipe) leaves it unmeasured, with the reason."""
    labels, tokens = kv_feed.labels({"S": 4}, 2), [10, 12, 20, 30, 40]
    linear = [{"label": label, "bytes": 1000 + 100 * n} for label, n in zip(labels, tokens, strict=True)]
    assert growth_per_token(linear, labels, tokens)[0] == 100  # steps 2-4: 20, 30 and 40 tokens are >= 2 x 10
    for changed in (linear[:-1], [*linear, linear[-1]], linear[:2] + linear[3:]):
        figure, details = growth_per_token(changed, labels, tokens)
        assert np.isnan(figure) and "memory checkpoints" in details["unmeasured"]
    unreadable = [*linear[:-1], {"label": labels[-1], "bytes": -1}]
    assert np.isnan(growth_per_token(unreadable, labels, tokens)[0])


def test_driver_rejects_modified_weights():
    """A submission that writes into the weights breaks the contract."""
    case = _case("prompts of a single token")
    inputs = kc.make_inputs(case, np.random.default_rng(0))

    def scribbling_prefill(weights, prompts, lengths):
        weights["w_out"] *= 2.0
        return kc.prefill(weights, prompts, lengths)

    run = FakeRun({"prefill": scribbling_prefill, "decode_step": kc.decode_step}, kc.services(case, inputs))
    with pytest.raises(ContractError, match="weights were modified"):
        kc.drive(run, kc.child_inputs(case, inputs), dict(case.params))


@pytest.mark.parametrize("case", [c for c in GRADER_CASES if c.params.get("split") or c.params["S"] == 32], ids=str)
def test_feed_grades_the_delivered_logits_and_hands_out_tokens_in_turn(case):
    """The reference cache driven through the feed: the logits it kept equal the truth's (interleaved caches too);
    the child never gets the steps' tokens up front, and a call past the last is refused."""
    inputs = kc.make_inputs(case, np.random.default_rng(1))
    child = kc.child_inputs(case, inputs)
    assert "steps" not in child and "timed" not in child
    feed = kc.services(case, inputs)[kv_feed.FEED]
    assert (
        kc.drive(FakeRun({"prefill": kc.prefill, "decode_step": kc.decode_step}, {"feed": feed}), child, case.params)
        == {}
    )
    want = kc.recompute(inputs, case.params)
    for name, got in feed.recorded().items():
        np.testing.assert_allclose(got, want[name], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="delivered already"):
        feed({"logits": want["prefill_logits"]})


def test_feed_leaves_undelivered_logits_nan():
    """A request that stops delivering leaves NaN where logits are missing (the comparison then fails)."""
    case = _case("prompts of a single token")
    inputs = kc.make_inputs(case, np.random.default_rng(1))
    feed = kv_feed.DecodeFeed(case.params, inputs)
    tokens = feed({"logits": np.zeros((2, case.params["V"]))})["tokens"]
    np.testing.assert_array_equal(tokens, inputs["steps"][0])
    recorded = feed.recorded()
    assert not np.isnan(recorded["prefill_logits"]).any() and np.isnan(recorded["step_logits"]).all()


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
def test_correct_demo_passes_every_case(kv_roster):
    """demo-tiled passes every non-speed case and gets an A+."""
    assert "INTERNALERROR" not in kv_roster.output, kv_roster.output[-3000:]
    assert _failed(kv_roster, "demo-tiled") == {}
    assert kv_roster.letters()["demo-tiled"] == {"kv_cache": "A+"}


@pytest.mark.slow  # a grading run of its own: 15 s beside the other self-tests on the 2-core machine
@pytest.mark.grading_run
def test_correct_demo_passes_every_case_on_another_seed(tmp_path):
    """demo-tiled passes every non-speed case on a second seed too."""
    other = run_grader(tmp_path, "--no-speed", "--seed", SEEDS[1], "--model", "demo-tiled", tests=KV_TESTS)
    assert other.returncode == 0, other.output[-3000:]
    ran = [r for r in other.summary["cases"] if r["outcome"] != "skipped"]
    assert len(ran) == len([c for c in GRADER_CASES if not c.is_speed]) and all(r["outcome"] == "passed" for r in ran)


@pytest.mark.grading_run
def test_noncausal_prefill_is_caught_from_the_prefill_logits(kv_roster):
    """A prefill without the causal mask fails every case but single-token prompts, already in its own logits."""
    failed = _failed(kv_roster, "demo-kv-noncausal-prefill")
    scored = {c.guards for c in GRADER_CASES if not c.is_speed}
    assert set(failed) == scored - {SINGLE_TOKEN}
    record = failed["causal prefill in a deeper stack"]
    assert not _check(record, "prefill_logits")["passed"] and record["outcome"] == "wrong"
    assert kv_roster.letters()["demo-kv-noncausal-prefill"] == {"kv_cache": "F"}


@pytest.mark.grading_run
def test_overwrite_is_caught_from_the_second_step(kv_roster):
    """A cache that overwrites its last step: prefill and step 1 right, every case wrong from step 2 on."""
    failed = _failed(kv_roster, "demo-kv-overwrite")
    assert set(failed) == {c.guards for c in GRADER_CASES if not c.is_speed}
    record = failed["each step appends to the cache (an overwrite shows from step 2)"]
    assert _check(record, "prefill_logits")["passed"]
    steps = _check(record, "step_logits")
    assert not steps["passed"] and steps["first_mismatches"][0]["index"][0] == 1  # step index 1 is the second step


@pytest.mark.grading_run
def test_position_off_by_one_is_caught_at_the_first_step(kv_roster):
    """A decode position one too far: prefill right, the very first step wrong, the position case among the failures."""
    failed = _failed(kv_roster, "demo-kv-pos-off-by-one")
    assert "position of each new token (one token repeated)" in failed
    assert set(failed) == {c.guards for c in GRADER_CASES if not c.is_speed}
    for record in failed.values():
        assert _check(record, "prefill_logits")["passed"]
        assert _check(record, "step_logits")["first_mismatches"][0]["index"][0] == 0

"""Batched beam search: the reference against brute force and greedy decoding, the scripted scenarios by hand, and
grading runs of the demos (the correct one passes everything on three seeds; each bug is caught by its cases)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import GradingRun, run_grader
from reference import beam_search as bs
from reference import toy_lm
from reference.beam_scenarios import EOS, scripted_model

TESTS = "tests/test_beam_search"
SEED = "20261130"
# Pinpoint cases that are deterministic (scripted models), per bug; the toy-model cases listed fail at SEED.
DROP_FINISHED = {
    "ended-beats-continuing",
    "length-penalty-a0.0",
    "length-penalty-a0.6",
    "length-penalty-a1.0",
    "all-finished-early",
}
NO_EOS_LOGPROB = {
    "eos-logprob-counted",
    "ended-beats-continuing",
    "length-penalty-a0.0",
    "length-penalty-a0.6",
    "length-penalty-a1.0",
    "all-finished-early",
    "ties-lexicographic",
}


def brute_force(prompt: np.ndarray, depth: int, alpha: float, eos: int, model) -> list[tuple[tuple[int, ...], float]]:
    """Every terminal sequence (ends at EOS, or reaches ``depth`` without it) with its score, best first."""
    found = []
    for n in range(1, depth + 1):
        for seq in itertools.product(range(model.vocab_size), repeat=n):
            if eos in seq[:-1] or (n < depth and seq[-1] != eos):
                continue
            logp = 0.0
            for t in range(n):
                logp += float(model.log_probs(np.concatenate([prompt, np.array(seq[:t], dtype=np.int64)]))[seq[t]])
            found.append((seq, logp / n**alpha))
    return sorted(found, key=lambda s: (-s[1], s[0]))


@pytest.mark.parametrize("alpha", [0.0, 0.6, 1.0])
@pytest.mark.parametrize("seed", [0, 1])
def test_reference_equals_brute_force_when_nothing_is_pruned(seed, alpha):
    """With K at least the number of terminal sequences (V = 3, depth 3), the pool is all of them, best first."""
    model = toy_lm.ToyLM.from_seed(seed, vocab_size=3, d_model=8, n_heads=2, n_layers=1, max_len=16)
    prompt = np.array([1, 0, 2], dtype=np.int64)
    want = brute_force(prompt, 3, alpha, eos=2, model=model)
    got = bs.beam_search(prompt, len(want), 3, alpha, 2, model)
    assert [b.tokens for b in got] == [w[0] for w in want]
    np.testing.assert_allclose([b.score(alpha) for b in got], [w[1] for w in want], rtol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_k1_alpha0_is_greedy_and_scores_are_the_model_log_probs(seed):
    """K = 1, alpha 0 equals greedy decoding; every returned score re-adds to the model's log-probs of its tokens."""
    model = toy_lm.ToyLM.from_seed(seed, **bs.TOY_SIZES)
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, 64, 5)
    eos = int(bs._frequent_tokens(model, rng)[0])
    (beam,) = bs.beam_search(prompt, 1, 10, 0.0, eos, model)
    assert (beam.tokens, beam.logp) == bs.greedy(prompt, 10, eos, model)
    for beam in bs.beam_search(prompt, 4, 8, 0.6, eos, model):
        logp = sum(
            model.log_probs(np.concatenate([prompt, beam.tokens[:t]]).astype(np.int64))[tok]
            for t, tok in enumerate(beam.tokens)
        )
        assert beam.logp == pytest.approx(logp, abs=1e-12)
        assert beam.finished == (beam.tokens[-1] == eos) and (beam.finished or len(beam.tokens) == 8)


@pytest.mark.parametrize(
    ("name", "alpha", "want"),
    [
        ("ended", None, [((3, EOS), -3.0), ((4, 4, 4, 4), -5.0)]),
        ("eos_logprob", None, [((4, 5), np.log(0.3) + np.log(0.8)), ((3, EOS), np.log(0.5) + np.log(0.1))]),
        ("length", 0.0, [((EOS,), -1.5), ((3, EOS), -2.2), ((4, 4, 4, EOS), -3.4)]),
        ("length", 0.6, [((3, EOS), -2.2 / 2**0.6), ((4, 4, 4, EOS), -3.4 / 4**0.6), ((EOS,), -1.5)]),
        ("length", 1.0, [((4, 4, 4, EOS), -0.85), ((3, EOS), -1.1), ((EOS,), -1.5)]),
        ("all_finished", None, [((EOS,), np.log(0.5)), ((3, EOS), np.log(0.1)), ((4, EOS), np.log(0.05))]),
        ("ties", None, [((2, 2), 2 * np.log(0.25)), ((2, 5), 2 * np.log(0.25)), ((2, 9), 2 * np.log(0.25))]),
    ],
)
def test_scripted_scenarios_come_out_as_worked_by_hand(name, alpha, want):
    """Each scenario's result is the one its comment in reference/beam_scenarios.py derives."""
    model, (prompt,), k, max_new, default_alpha, eos = scripted_model(name)
    alpha = default_alpha if alpha is None else alpha
    got = [(b.tokens, b.score(alpha)) for b in bs.beam_search(prompt, k, max_new, alpha, eos, model)]
    assert [g[0] for g in got] == [w[0] for w in want]
    np.testing.assert_allclose([g[1] for g in got], [w[1] for w in want], atol=1e-9)


@pytest.fixture(scope="module")
def roster(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    run = run_grader(tmp_path_factory.mktemp("beam"), "--no-speed", "--seed", SEED, tests=TESTS)
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    return run


def failed(run: GradingRun, model: str) -> dict[str, str]:
    return {f["case"]: f["message"] for f in run.summary["models"][model]["challenges"]["beam_search"]["failed"]}


@pytest.mark.grading_run
def test_each_bug_is_caught_by_its_cases(roster):
    """demo-tiled passes all 14 cases; each bug fails its pinpoint cases and the random configurations (core)."""
    assert failed(roster, "demo-tiled") == {}
    drop, no_eos = failed(roster, "demo-beam-drop-finished"), failed(roster, "demo-beam-no-eos-logprob")
    assert drop.keys() >= DROP_FINISHED and "eos-logprob-counted" not in drop
    assert no_eos.keys() >= NO_EOS_LOGPROB
    for messages in (drop, no_eos):
        assert "configurations matched" in messages["random-80-calls"]
        matched, total = map(int, messages["random-80-calls"].split(": ")[1].split(" ")[0].split("/"))
        assert 0 < matched < total  # right on some configurations, wrong on others: still a failed case
    assert roster.letters()["demo-tiled"]["beam_search"] == "A+"


@pytest.mark.grading_run
@pytest.mark.parametrize("seed", ["1", "2"])
def test_correct_demo_passes_on_other_seeds(tmp_path, seed):
    """The correct demo passes every case on fresh inputs too."""
    run = run_grader(tmp_path, "--no-speed", "--seed", seed, "--model", "demo-tiled", tests=TESTS)
    assert run.returncode == 0, run.output[-3000:]
    assert failed(run, "demo-tiled") == {} and len(run.records()) == len(bs.CASES)

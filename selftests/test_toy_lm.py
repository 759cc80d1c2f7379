"""The grader-owned models of reference/toy_lm.py: context-sensitive, positions from the mask, masks of every kind,
call counting, scripted tables and the wire round trip."""

from __future__ import annotations

import numpy as np
import pytest

from reference import toy_lm
from reference.beam_search import TOY_SIZES as BEAM_SIZES
from reference.dflash_trees import ancestors, tree_mask


@pytest.fixture(scope="module")
def model() -> toy_lm.ToyLM:
    return toy_lm.ToyLM.from_seed(3, max_len=256)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("sizes", [{}, BEAM_SIZES], ids=["default", "beam-sizes"])
def test_argmax_changes_with_context(seed, sizes):
    """Redrawing every token but the last changes the greedy token on most contexts (not a bigram model)."""
    sizes = {k: v for k, v in sizes.items() if k != "n_heads"}
    weights = toy_lm.init_weights(seed, **sizes)
    assert toy_lm.context_sensitivity(weights, 4, np.random.default_rng(seed)) > 0.75


def test_next_token_distributions_are_peaked_but_not_one_hot(model):
    """Top probabilities sit between uniform and certain, so beams and ties are meaningful."""
    lp = model.log_probs(np.random.default_rng(0).integers(0, 1000, (64, 12)))
    top = np.exp(lp.max(axis=-1))
    assert 0.05 < np.median(top) < 0.8 and np.all(top < 0.999)


def test_tree_mask_gives_every_node_its_autoregressive_logits(model):
    """Positions come from the mask: each node's row under a tree mask equals the causal forward over prompt + path."""
    rng = np.random.default_rng(1)
    prompt, parents = rng.integers(0, 1000, 7), [-1, 0, 1, -1, 3, 0, 5, 2]
    tokens = rng.integers(0, 1000, len(parents))
    logits = model.forward(np.concatenate([prompt, tokens]), tree_mask(prompt.size, parents))
    for i in range(len(parents)):
        path = np.concatenate([prompt, tokens[ancestors(parents, i)]])
        np.testing.assert_allclose(logits[prompt.size + i], model.forward(path)[-1], rtol=0, atol=1e-10)
    np.testing.assert_allclose(logits[: prompt.size], model.forward(prompt), rtol=0, atol=1e-10)


def test_boolean_additive_and_integer_masks_agree(model):
    """A bool mask, its 0/-inf and 0/-1e9 additive forms and a 0/1 int mask give the same logits, batched too."""
    tokens = np.random.default_rng(2).integers(0, 1000, (2, 9))
    mask = tree_mask(4, [-1, 0, 0, 2, -1])
    want = model.forward(tokens, mask)
    for other in (np.where(mask, 0.0, -np.inf), np.where(mask, 0.0, -1e9), mask.astype(np.int64), np.stack([mask] * 2)):
        np.testing.assert_array_equal(model.forward(tokens, other), want)
    assert want.shape == (2, 9, 1000)


def test_left_padding_hidden_by_the_mask_changes_nothing(model):
    """A left-padded row whose pads only see themselves gives the unpadded sequence's logits."""
    seq = np.random.default_rng(3).integers(0, 1000, 6)
    padded = np.concatenate([[0, 0, 0], seq])
    mask = np.zeros((9, 9), dtype=bool)
    mask[3:, 3:] = np.tri(6, dtype=bool)
    mask[np.arange(3), np.arange(3)] = True
    np.testing.assert_allclose(model.forward(padded, mask)[3:], model.forward(seq), rtol=0, atol=1e-10)


def test_bad_masks_and_tokens_are_rejected(model):
    """A query with no key, an additive value that is neither 0 nor blocked, and out-of-range ids raise."""
    with pytest.raises(ValueError, match="no key"):
        model.forward(np.arange(3), np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="additive"):
        model.forward(np.arange(3), np.where(np.tri(3, dtype=bool), 0.0, -1.0))
    with pytest.raises(ValueError, match="token ids"):
        model.forward(np.array([1, 1000]))


def test_every_call_counts_one_forward(model):
    """__call__, forward and log_probs each count one forward, batched or not."""
    m = toy_lm.ToyLM(model.weights, 4)
    m(np.arange(4))
    m.forward(np.arange(8).reshape(2, 4))
    assert m.log_probs(np.arange(4)).shape == (1000,) and m.log_probs(np.arange(8).reshape(2, 4)).shape == (2, 1000)
    assert m.forward_calls == 4


def test_scripted_model_returns_its_table_rows():
    """log-softmax of the logits is the table row of the context (the default elsewhere), also under a tree mask."""
    rows = np.log(np.random.default_rng(4).dirichlet(np.ones(6), 3))
    m = toy_lm.ScriptedLM({(1,): rows[0], (1, 2): rows[1]}, rows[2])
    np.testing.assert_allclose(toy_lm.log_softmax(m.forward(np.array([1, 2, 5]))), rows, atol=1e-12)
    tree = m.forward(np.array([1, 3, 2]), tree_mask(1, [-1, -1]))  # node 2 sees (1, 2), not (1, 3, 2)
    np.testing.assert_allclose(tree[2], rows[1], atol=1e-12)
    with pytest.raises(ValueError, match="normalised"):
        toy_lm.ScriptedLM({}, np.zeros(6))


@pytest.mark.parametrize("which", ["toy", "scripted"])
def test_models_cross_the_wire_as_arrays(model, which):
    """model_inputs -> model_from_inputs rebuilds the same model with a fresh counter."""
    rows = np.log(np.full((2, 5), 0.2))
    original = model if which == "toy" else toy_lm.ScriptedLM({(0, 1): rows[0]}, rows[1])
    original(np.arange(3))
    arrays = toy_lm.model_inputs(original)
    assert all(isinstance(v, np.ndarray) and v.dtype.kind in "if" for v in arrays.values())
    rebuilt = toy_lm.model_from_inputs(arrays)
    assert rebuilt.forward_calls == 0
    np.testing.assert_array_equal(rebuilt.forward(np.arange(4)), original.forward(np.arange(4)))


class _LocalRun:
    """The child's ``run`` with its services called in process (the wire aside): what ServedModel talks to."""

    def __init__(self, services: dict) -> None:
        self.services = services

    def service(self, name: str, arrays: dict) -> dict:
        return self.services[name]({k: np.asarray(v) for k, v in arrays.items()})


@pytest.mark.parametrize("which", ["toy", "scripted"])
def test_served_model_answers_as_the_model(model, which):
    """Through serve() and a ServedModel, forward, __call__ and log_probs give the model's own answers, masks too."""
    rows = np.log(np.full((2, 1000), 1e-3))
    original = model if which == "toy" else toy_lm.ScriptedLM({(0, 1): rows[0]}, rows[1])
    child = toy_lm.child_inputs(toy_lm.model_inputs(original))
    proxy = toy_lm.ServedModel.of_inputs(_LocalRun({"m": toy_lm.serve(original)}), "m", child)
    tokens, mask = np.arange(5), tree_mask(2, [-1, 0, -1])
    np.testing.assert_array_equal(proxy.forward(tokens, mask), original.forward(tokens, mask))
    np.testing.assert_array_equal(proxy(tokens[None]), original(tokens[None]))
    np.testing.assert_array_equal(proxy.log_probs(tokens), original.log_probs(tokens))
    assert proxy.vocab_size == original.vocab_size and proxy.forward_calls == 3


def test_child_inputs_withhold_the_weights(model):
    """No model array crosses to the child: only its vocabulary size and the case's other inputs."""
    inputs = toy_lm.model_inputs(model) | {"prompt": np.arange(3)}
    child = toy_lm.child_inputs(inputs)
    assert set(child) == {"prompt", "model.vocab_size"} and child["model.vocab_size"][0] == 1000


def test_serve_refuses_oversized_and_malformed_calls(model):
    """A call past the caps, or without tokens, is a ValueError before any work: the grader runs what the child asks."""
    forward = toy_lm.serve(model)
    with pytest.raises(ValueError, match="at most"):
        forward({"tokens": np.zeros((9, 1000), dtype=np.int64)})
    with pytest.raises(ValueError, match="tokens"):
        forward({"mask": np.ones((3, 3), dtype=bool)})
    assert forward({"tokens": np.arange(4)})["logits"].shape == (4, 1000)

"""Grader-owned language models: a small deterministic NumPy transformer and a scripted table model.

Decoding challenges (beam search, tree verification) hand these models to a submission, and the KV cache hands it the
transformer's weights. A model handed over is served: it lives in the grader's process, which runs every call and
counts it, and the submission holds a :class:`ServedModel` whose calls cross the wire (:func:`serve`,
:func:`child_inputs`); its weights never reach the sandbox child. The grader computes every expected answer with its
own copy. This module imports only NumPy and the standard library.

Architecture of the toy transformer (pre-norm, float64 throughout, no biases, no affine norms)::

    norm(x)  = (x - mean(x)) / sqrt(var(x) + 1e-5)            over the last axis
    h        = tok_emb[token] + pos_emb[position]
    per layer i:
        a            = norm(h)
        q, k, v      = a @ l{i}.wq, a @ l{i}.wk, a @ l{i}.wv      split into n_heads heads of d_model / n_heads
        attn         = softmax(q k^T / sqrt(d_model / n_heads) + mask) v, heads concatenated
        h            = h + attn @ l{i}.wo
        h            = h + relu(norm(h) @ l{i}.w1) @ l{i}.w2
    logits   = norm(h) @ w_out

Weights (:func:`init_weights`): a flat ``dict[str, np.ndarray]`` of float64 arrays, ``tok_emb`` (V, d),
``pos_emb`` (max_len, d), per layer ``l{i}.wq/wk/wv/wo`` (d, d), ``l{i}.w1`` (d, 4d), ``l{i}.w2`` (4d, d), and
``w_out`` (d, V). The head count is not in the dict (it holds arrays only, so it can cross the wire as inputs): callers
pass ``n_heads`` beside it.

Masks and positions (:func:`forward`): tokens are int (T,) or (n, T); logits are (T, V) or (n, T, V). ``mask=None`` is
causal. A mask is boolean (True = may attend; integer 0/1 masks count as boolean) or additive (float: 0 = may attend,
-inf or any value <= -1e4 = blocked; other values are rejected), of shape (T, T) or (n, T, T). **A query's position is
the number of keys it may attend, minus one**: the causal mask gives positions 0..T-1, and a correct tree mask (prompt
causal, each node sees the prompt, its ancestors and itself) gives every node the position it would have in
autoregressive decoding, so its logits equal (to rounding) those of the plain causal forward over prompt + path; a
left-padded row whose pads are hidden from the real queries (and see only themselves) gives the unpadded logits. A
query that may attend no key is an error.

Scale: embeddings are N(0, 1); projections N(0, 1/fan_in) except ``wq``/``wk`` (x2: sharper attention) and ``wo``
(x3: the attended context moves the residual stream as much as the current token does), and ``w_out`` gives logits of
std 3, so next-token distributions are peaked (top probability typically 0.1-0.6 over 1000 tokens) and their argmax
depends on the earlier tokens, not only on the last one (:func:`context_sensitivity`; selftests/test_toy_lm.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

_EPS = 1e-5
BLOCKED = -1e4  # additive mask entries at or below this are "may not attend"
_QUERY_CHUNK = 256  # queries per attention block: a (4, 4608, 4608) float64 score tensor would be 680 MB


def init_weights(
    seed: int, vocab_size: int = 1000, d_model: int = 64, n_heads: int = 4, n_layers: int = 2, max_len: int = 4608
) -> dict[str, np.ndarray]:
    """The toy transformer's weights, drawn from ``np.random.default_rng(seed)`` in a fixed order (see module doc)."""
    if d_model % n_heads:
        raise ValueError(f"d_model={d_model} is not a multiple of n_heads={n_heads}")
    rng = np.random.default_rng(seed)
    d = d_model

    def normal(shape: tuple[int, ...], std: float) -> np.ndarray:
        return rng.standard_normal(shape) * std

    weights = {"tok_emb": normal((vocab_size, d), 1.0), "pos_emb": normal((max_len, d), 1.0)}
    for i in range(n_layers):
        weights[f"l{i}.wq"] = normal((d, d), 2.0 / math.sqrt(d))
        weights[f"l{i}.wk"] = normal((d, d), 2.0 / math.sqrt(d))
        weights[f"l{i}.wv"] = normal((d, d), 1.0 / math.sqrt(d))
        weights[f"l{i}.wo"] = normal((d, d), 3.0 / math.sqrt(d))
        weights[f"l{i}.w1"] = normal((d, 4 * d), 1.0 / math.sqrt(d))
        weights[f"l{i}.w2"] = normal((4 * d, d), 1.0 / math.sqrt(4 * d))
    weights["w_out"] = normal((d, vocab_size), 3.0 / math.sqrt(d))
    return weights


def n_layers_of(weights: Mapping[str, np.ndarray]) -> int:
    """How many layers a weight dict holds."""
    return sum(1 for key in weights if key.endswith(".wq"))


def as_numpy(x: Any) -> np.ndarray:
    """NumPy view of a NumPy array, list or torch tensor (torch is duck-typed: this module never imports it)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def allowed_from_mask(mask: Any, t: int) -> np.ndarray:
    """The boolean "may attend" array of a boolean or additive mask of shape (T, T) or (n, T, T)."""
    m = as_numpy(mask)
    if m.shape[-2:] != (t, t) or m.ndim not in (2, 3):
        raise ValueError(f"mask of shape {m.shape} for {t} tokens; want ({t}, {t}) or (n, {t}, {t})")
    if m.dtype == bool or np.issubdtype(m.dtype, np.integer):
        allowed = m.astype(bool)
    else:
        m = m.astype(np.float64)
        allowed = m == 0
        if not np.all(allowed | (m <= BLOCKED)):
            raise ValueError("an additive mask holds 0 (may attend) and -inf or <= -1e4 (blocked) only")
    if not np.all(allowed.any(axis=-1)):
        raise ValueError("a query may attend no key: every row of the mask needs at least one allowed key")
    return allowed


def _norm(x: np.ndarray) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + _EPS)


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """softmax(q k^T / sqrt(dh)) v over allowed keys; q, k, v (n, H, T, dh), allowed (n, 1, T, T)."""
    t = q.shape[-2]
    out = np.empty_like(q)
    scale = 1.0 / math.sqrt(q.shape[-1])
    for start in range(0, t, _QUERY_CHUNK):
        rows = slice(start, min(t, start + _QUERY_CHUNK))
        scores = (q[..., rows, :] @ np.swapaxes(k, -1, -2)) * scale
        scores = np.where(allowed[..., rows, :], scores, -np.inf)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        out[..., rows, :] = (scores / scores.sum(axis=-1, keepdims=True)) @ v
    return out


def _run(
    weights: Mapping[str, np.ndarray], n_heads: int, tokens: Any, mask: Any
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], bool]:
    """Logits (n, T, V), each layer's (K, V) as (n, H, T, dh), and whether the input was one sequence."""
    tok = as_numpy(tokens)
    single = tok.ndim == 1
    tok = tok.reshape(1, -1) if single else tok
    if tok.ndim != 2 or not np.issubdtype(tok.dtype, np.integer):
        raise ValueError(f"tokens must be integers of shape (T,) or (n, T), got {tok.dtype} {tok.shape}")
    n, t = tok.shape
    allowed = np.tri(t, dtype=bool) if mask is None else allowed_from_mask(mask, t)
    allowed = np.broadcast_to(allowed, (n, t, t))
    positions = allowed.sum(axis=-1) - 1  # (n, T): keys a query may attend, minus one
    vocab, d = weights["tok_emb"].shape
    if tok.min(initial=0) < 0 or tok.max(initial=0) >= vocab:
        raise ValueError(f"token ids must lie in [0, {vocab})")
    if positions.max(initial=0) >= weights["pos_emb"].shape[0]:
        raise ValueError(f"position {positions.max()} beyond max_len {weights['pos_emb'].shape[0]}")
    dh = d // n_heads
    h = weights["tok_emb"][tok] + weights["pos_emb"][positions]
    kv = []
    for i in range(n_layers_of(weights)):
        a = _norm(h)
        q, k, v = ((a @ weights[f"l{i}.w{w}"]).reshape(n, t, n_heads, dh).transpose(0, 2, 1, 3) for w in "qkv")
        kv.append((k, v))
        attn = _attention(q, k, v, allowed[:, None]).transpose(0, 2, 1, 3).reshape(n, t, d)
        h = h + attn @ weights[f"l{i}.wo"]
        h = h + np.maximum(_norm(h) @ weights[f"l{i}.w1"], 0.0) @ weights[f"l{i}.w2"]
    return _norm(h) @ weights["w_out"], kv, single


def forward(weights: Mapping[str, np.ndarray], n_heads: int, tokens: Any, mask: Any = None) -> np.ndarray:
    """Logits (T, V) for tokens (T,), or (n, T, V) for (n, T); ``mask`` None = causal (see module doc)."""
    logits, _, single = _run(weights, n_heads, tokens, mask)
    return logits[0] if single else logits


def kv_states(
    weights: Mapping[str, np.ndarray], n_heads: int, tokens: Any, mask: Any = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each layer's keys and values, (H, T, d/H) for tokens (T,) or (n, H, T, d/H) for (n, T): what a KV cache holds."""
    _, kv, single = _run(weights, n_heads, tokens, mask)
    return [(k[0], v[0]) for k, v in kv] if single else kv


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log-softmax over the last axis, shifted by the row max so it never overflows."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class _CountingModel:
    """Shared interface: ``model(tokens)``, ``forward(tokens, mask)``, ``log_probs(tokens)``, ``forward_calls`` (the
    grader's own copies only: a submission's calls are counted by the grader, see :class:`ServedModel`)."""

    vocab_size: int

    def __init__(self) -> None:
        self.forward_calls = 0

    def _logits(self, tokens: Any, mask: Any) -> np.ndarray:
        raise NotImplementedError

    def forward(self, tokens: Any, mask: Any = None) -> np.ndarray:
        """Logits (T, V) or (n, T, V); counts one forward call."""
        self.forward_calls += 1
        return self._logits(tokens, mask)

    def __call__(self, tokens: Any, mask: Any = None) -> np.ndarray:
        return self.forward(tokens, mask)

    def log_probs(self, tokens: Any, mask: Any = None) -> np.ndarray:
        """Next-token log-probabilities after the last position: (V,) for (T,) tokens, (n, V) for (n, T)."""
        return log_softmax(self.forward(tokens, mask)[..., -1, :])


class ToyLM(_CountingModel):
    """The toy transformer with fixed weights (see module doc)."""

    def __init__(self, weights: Mapping[str, np.ndarray], n_heads: int) -> None:
        super().__init__()
        self.weights = {key: np.asarray(value, dtype=np.float64) for key, value in weights.items()}
        self.n_heads = int(n_heads)
        self.vocab_size = int(self.weights["tok_emb"].shape[0])

    @classmethod
    def from_seed(cls, seed: int, n_heads: int = 4, **sizes: int) -> ToyLM:
        return cls(init_weights(seed, n_heads=n_heads, **sizes), n_heads)

    def _logits(self, tokens: Any, mask: Any) -> np.ndarray:
        return forward(self.weights, self.n_heads, tokens, mask)


class ScriptedLM(_CountingModel):
    """A model whose next-token log-probabilities come from a table keyed by the whole context.

    ``table[context]`` is a (V,) row of log-probabilities (normalised, finite) for the token after ``context`` (a tuple
    of ints); contexts not in the table get ``default``. Under a mask, a query's context is the tokens of the keys it
    may attend, in key order, so tree masks work as with :class:`ToyLM`. ``forward`` returns the table rows themselves
    as logits (their log-softmax is the row again).
    """

    def __init__(self, table: Mapping[tuple[int, ...], np.ndarray], default: np.ndarray) -> None:
        super().__init__()
        self.default = np.asarray(default, dtype=np.float64)
        self.vocab_size = int(self.default.shape[0])
        self.table = {tuple(int(t) for t in key): np.asarray(row, dtype=np.float64) for key, row in table.items()}
        for key, row in [((), self.default), *self.table.items()]:
            if row.shape != (self.vocab_size,) or not np.all(np.isfinite(row)):
                raise ValueError(f"table row for {key} must be {self.vocab_size} finite log-probabilities")
            if abs(float(np.logaddexp.reduce(row))) > 1e-9:
                raise ValueError(f"table row for {key} is not normalised (logsumexp {np.logaddexp.reduce(row)})")

    @classmethod
    def from_arrays(cls, contexts: np.ndarray, rows: np.ndarray, default: np.ndarray) -> ScriptedLM:
        """From wire arrays: ``contexts`` (m, L) int padded with -1 at the end, ``rows`` (m, V), ``default`` (V,)."""
        table = {tuple(int(t) for t in ctx if t >= 0): row for ctx, row in zip(contexts, rows, strict=True)}
        return cls(table, default)

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The inverse of :meth:`from_arrays`: ``{"contexts", "rows", "default"}``."""
        width = max((len(key) for key in self.table), default=0)
        contexts = np.full((len(self.table), width), -1, dtype=np.int64)
        for r, key in enumerate(self.table):
            contexts[r, : len(key)] = key
        rows = np.array(list(self.table.values())).reshape(len(self.table), self.vocab_size)
        return {"contexts": contexts, "rows": rows, "default": self.default}

    def _logits(self, tokens: Any, mask: Any) -> np.ndarray:
        tok = as_numpy(tokens)
        single = tok.ndim == 1
        tok = tok.reshape(1, -1) if single else tok
        n, t = tok.shape
        allowed = np.tri(t, dtype=bool) if mask is None else allowed_from_mask(mask, t)
        allowed = np.broadcast_to(allowed, (n, t, t))
        out = np.empty((n, t, self.vocab_size))
        for b in range(n):
            for q in range(t):
                context = tuple(int(x) for x in tok[b][allowed[b, q]])
                out[b, q] = self.table.get(context, self.default)
        return out[0] if single else out


def context_sensitivity(
    weights: Mapping[str, np.ndarray], n_heads: int, rng: np.random.Generator, n_contexts: int = 64, length: int = 12
) -> float:
    """Share of random contexts whose greedy next token changes when every token but the last is redrawn.

    A model whose prediction followed only the last token (and position) would score 0; the toy model scores well above
    one half, so decoding bugs that confuse positions or parents change the output.
    """
    vocab = weights["tok_emb"].shape[0]
    first = rng.integers(0, vocab, (n_contexts, length))
    second = rng.integers(0, vocab, (n_contexts, length))
    second[:, -1] = first[:, -1]
    a = forward(weights, n_heads, first)[:, -1].argmax(-1)
    b = forward(weights, n_heads, second)[:, -1].argmax(-1)
    return float(np.mean(a != b))


def model_inputs(model: ToyLM | ScriptedLM) -> dict[str, np.ndarray]:
    """A model as named arrays for a case's inputs (they cross the wire to the child): ``toy.<weight>`` plus
    ``toy.n_heads``, or ``scripted.contexts/rows/default``."""
    if isinstance(model, ToyLM):
        return {f"toy.{k}": v for k, v in model.weights.items()} | {"toy.n_heads": np.array([model.n_heads])}
    return {f"scripted.{k}": v for k, v in model.to_arrays().items()}


def model_from_inputs(inputs: Mapping[str, np.ndarray]) -> ToyLM | ScriptedLM:
    """A fresh model (forward counter at zero) from the arrays :func:`model_inputs` made."""
    if "toy.n_heads" in inputs:
        weights = {k[4:]: v for k, v in inputs.items() if k.startswith("toy.") and k != "toy.n_heads"}
        return ToyLM(weights, int(np.asarray(inputs["toy.n_heads"]).reshape(-1)[0]))
    return ScriptedLM.from_arrays(inputs["scripted.contexts"], inputs["scripted.rows"], inputs["scripted.default"])


# --- served models: the grader runs the model, the sandbox child holds a proxy ---------------------------------------

MODEL_PREFIXES = ("toy.", "scripted.")  # input arrays of a model (model_inputs): they stay in the grader's process
# What one served call may ask for: a tree-masked forward over prompt + tree is a few hundred tokens, a batched beam
# step a few dozen rows of a few dozen tokens. The caps keep the grader's own work per call bounded (the child picks
# the arguments): the logits (n, T, V) and the attention scores of a query block (n, H, 256, T) stay under 70 MB.
MAX_SERVED_TOKENS = 8192
MAX_SERVED_LENGTH = 1024


def child_inputs(inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A case's inputs as the sandbox child gets them: the model's arrays withheld (a submission that held the weights
    could run the model itself, uncounted), its vocabulary size in ``model.vocab_size`` instead."""
    kept = {k: v for k, v in inputs.items() if not k.startswith(MODEL_PREFIXES)}
    if any(k.startswith(MODEL_PREFIXES) for k in inputs):
        kept["model.vocab_size"] = np.array([model_from_inputs(inputs).vocab_size], dtype=np.int64)
    return kept


def serve(model: ToyLM | ScriptedLM) -> Any:
    """The grader's side of a served model: arrays ``{"tokens", "mask" (optional)}`` -> ``{"logits"}``, as
    ``model.forward``; arguments it cannot take raise ValueError (the child's proxy raises it again)."""

    def forward(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        tokens = arrays.get("tokens")
        if tokens is None or tokens.ndim not in (1, 2):
            raise ValueError("tokens must be an array of shape (T,) or (n, T)")
        if tokens.size > MAX_SERVED_TOKENS or tokens.shape[-1] > MAX_SERVED_LENGTH:
            raise ValueError(
                f"{tokens.shape} tokens in one call; a served model takes at most {MAX_SERVED_TOKENS} tokens of "
                f"sequences of at most {MAX_SERVED_LENGTH}"
            )
        return {"logits": np.ascontiguousarray(model.forward(tokens, arrays.get("mask")), dtype=np.float64)}

    return forward


class ServedModel:
    """A grader-owned model as the submission holds it in the sandbox child: the same interface as :class:`ToyLM`
    and :class:`ScriptedLM`, but each call crosses to the grader (``run.service(name, ...)``), which runs the model in
    its own process and counts the call there. ``forward_calls`` counts this object's calls for the submission's own
    use; no verdict reads it."""

    def __init__(self, run: Any, name: str, vocab_size: int) -> None:
        self._run, self._name = run, name
        self.vocab_size = int(vocab_size)
        self.forward_calls = 0

    @classmethod
    def of_inputs(cls, run: Any, name: str, inputs: Mapping[str, np.ndarray]) -> ServedModel:
        """The proxy for the model that :func:`child_inputs` withheld."""
        return cls(run, name, int(np.asarray(inputs["model.vocab_size"]).reshape(-1)[0]))

    def forward(self, tokens: Any, mask: Any = None) -> np.ndarray:
        """Logits (T, V) or (n, T, V), computed by the grader."""
        self.forward_calls += 1
        arrays = {"tokens": as_numpy(tokens)}
        if mask is not None:
            arrays["mask"] = as_numpy(mask)
        return self._run.service(self._name, arrays)["logits"]

    def __call__(self, tokens: Any, mask: Any = None) -> np.ndarray:
        return self.forward(tokens, mask)

    def log_probs(self, tokens: Any, mask: Any = None) -> np.ndarray:
        """Next-token log-probabilities after the last position: (V,) for (T,) tokens, (n, V) for (n, T)."""
        return log_softmax(self.forward(tokens, mask)[..., -1, :])

"""A tiny Qwen3-style decoder as plain weights, and its float64 NumPy forward (the grader's own).

The model is a dict of arrays with the keys below plus a config dict of JSON values, so that PyTorch, NumPy and MLX
code can all build it. Every weight matrix is stored as ``torch.nn.Linear`` stores it, ``(out_features,
in_features)``; the embedding table is ``(vocab_size, d_model)``. Ternary groups run along the last axis of each.

==========================  ==========================  ==========================================
key                         shape                       use
==========================  ==========================  ==========================================
``embed_tokens``            (vocab_size, d_model)       token embeddings (ternary)
``layers.{i}.attn_norm``    (d_model,)                  RMSNorm gain before attention (full precision)
``layers.{i}.q_proj``       (n_heads*head_dim, d_model) ternary
``layers.{i}.k_proj``       (n_kv_heads*head_dim, d)    ternary
``layers.{i}.v_proj``       (n_kv_heads*head_dim, d)    ternary
``layers.{i}.q_norm``       (head_dim,)                 Qwen3's per-head RMSNorm on queries (full precision)
``layers.{i}.k_norm``       (head_dim,)                 Qwen3's per-head RMSNorm on keys (full precision)
``layers.{i}.o_proj``       (d_model, n_heads*head_dim) ternary
``layers.{i}.mlp_norm``     (d_model,)                  RMSNorm gain before the MLP (full precision)
``layers.{i}.gate_proj``    (ffn_dim, d_model)          ternary
``layers.{i}.up_proj``      (ffn_dim, d_model)          ternary
``layers.{i}.down_proj``    (d_model, ffn_dim)          ternary
``norm``                    (d_model,)                  final RMSNorm gain (full precision)
``lm_head``                 (vocab_size, d_model)       ternary; absent when ``tied`` (the head is ``embed_tokens``)
==========================  ==========================  ==========================================

Forward, for token ids ``(B, T)``: ``h = E[tokens]``; per layer ``h += o_proj(attn(rope(q_norm(q)), rope(k_norm(k)),
v))`` on ``rmsnorm(h) * attn_norm`` and ``h += down_proj(silu(gate_proj(x)) * up_proj(x))`` on ``x = rmsnorm(h) *
mlp_norm``; then ``logits = rmsnorm(h) * norm @ W_head^T`` and ``log_softmax`` over the vocabulary. RMSNorm is ``x /
sqrt(mean(x^2) + norm_eps) * gain`` over the last axis. Attention is causal with scale ``1/sqrt(head_dim)``; query head
``j`` reads key/value head ``j // (n_heads // n_kv_heads)`` (grouped-query attention). Rotary positions are Qwen3's
(the rotate-half convention): position ``p``, frequency ``f_i = rope_theta^(-2i/head_dim)`` for ``i < head_dim/2``,
``x' = x * cos + rotate_half(x) * sin`` with ``cos, sin`` of ``p * [f, f]`` and ``rotate_half([a, b]) = [-b, a]``.
Activations stay in full precision: only weights are ternary. No biases.

Imports NumPy and the standard library only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# The weight kinds that must be ternary, in report order.
KINDS = ("embed_tokens", "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj", "lm_head")
CONFIG_KEYS = (
    "vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim", "rope_theta", "norm_eps",
    "tied", "group_size",
)  # fmt: skip


def weight_shapes(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Every key of the model and its shape, in a fixed order."""
    v, d, hd, f = config["vocab_size"], config["d_model"], config["head_dim"], config["ffn_dim"]
    q, kv = config["n_heads"] * hd, config["n_kv_heads"] * hd
    shapes: dict[str, tuple[int, ...]] = {"embed_tokens": (v, d)}
    for i in range(config["n_layers"]):
        p = f"layers.{i}."
        shapes |= {
            p + "attn_norm": (d,), p + "q_proj": (q, d), p + "k_proj": (kv, d), p + "v_proj": (kv, d),
            p + "q_norm": (hd,), p + "k_norm": (hd,), p + "o_proj": (d, q), p + "mlp_norm": (d,),
            p + "gate_proj": (f, d), p + "up_proj": (f, d), p + "down_proj": (d, f),
        }  # fmt: skip
    shapes["norm"] = (d,)
    if not config["tied"]:
        shapes["lm_head"] = (v, d)
    return shapes


def kind_of(key: str) -> str | None:
    """The ternary kind of a weight key (``layers.1.up_proj`` -> ``up_proj``), or None for a norm gain."""
    kind = key.rsplit(".", 1)[-1]
    return kind if kind in KINDS else None


def ternary_keys(config: dict[str, Any]) -> list[str]:
    return [k for k in weight_shapes(config) if kind_of(k)]


def init_weights(config: dict[str, Any], rng: np.random.Generator, std: float = 0.02) -> dict[str, np.ndarray]:
    """Latent float32 weights: N(0, std) matrices (Qwen3's initializer range), norm gains of one."""
    out = {}
    for key, shape in weight_shapes(config).items():
        out[key] = np.ones(shape, np.float32) if kind_of(key) is None else (rng.standard_normal(shape) * std)
        out[key] = out[key].astype(np.float32)
    return out


def rms_norm(x: np.ndarray, gain: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * gain


def rope_tables(t: int, head_dim: int, theta: float, dtype: Any = np.float64) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of shape (T, head_dim) for positions 0..T-1 (frequencies repeated for both halves)."""
    freq = theta ** (-np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    angles = np.arange(t, dtype=np.float64)[:, None] * freq[None, :]
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(dtype), np.sin(angles).astype(dtype)


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary positions on (B, heads, T, head_dim)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def attention(
    x: np.ndarray, w: dict[str, np.ndarray], p: str, config: dict[str, Any], rope: tuple[np.ndarray, np.ndarray]
) -> np.ndarray:
    """Causal grouped-query attention with q/k norms and rotary positions on (B, T, d); returns (B, T, d)."""
    b, t, _ = x.shape
    hd, nh, nkv = config["head_dim"], config["n_heads"], config["n_kv_heads"]
    eps = config["norm_eps"]

    def heads(key: str, n: int) -> np.ndarray:
        return (x @ w[p + key].T).reshape(b, t, n, hd).transpose(0, 2, 1, 3)

    q = rotate(rms_norm(heads("q_proj", nh), w[p + "q_norm"], eps), *rope)
    k = rotate(rms_norm(heads("k_proj", nkv), w[p + "k_norm"], eps), *rope)
    v = heads("v_proj", nkv)
    k, v = (np.repeat(z, nh // nkv, axis=1) for z in (k, v))  # query head j reads kv head j // group
    scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(hd)
    scores = np.where(np.tri(t, dtype=bool), scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    out = (scores / scores.sum(axis=-1, keepdims=True)) @ v
    return out.transpose(0, 2, 1, 3).reshape(b, t, nh * hd) @ w[p + "o_proj"].T


def silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


def log_probs(
    weights: dict[str, np.ndarray], config: dict[str, Any], tokens: np.ndarray, dtype: Any = np.float64
) -> np.ndarray:
    """Next-token log-probabilities (B, T, vocab) of the model with exactly these weights, computed in ``dtype``.

    The weights are used as given (the caller projects them to ternary first); float64 is the grader's truth, float32
    the same-precision baseline that tolerances are measured against.
    """
    w = {k: np.asarray(v, dtype=dtype) for k, v in weights.items()}
    eps = config["norm_eps"]
    tokens = np.asarray(tokens)
    h = w["embed_tokens"][tokens]
    rope = rope_tables(tokens.shape[1], config["head_dim"], config["rope_theta"], dtype)
    for i in range(config["n_layers"]):
        p = f"layers.{i}."
        h = h + attention(rms_norm(h, w[p + "attn_norm"], eps), w, p, config, rope)
        x = rms_norm(h, w[p + "mlp_norm"], eps)
        h = h + (silu(x @ w[p + "gate_proj"].T) * (x @ w[p + "up_proj"].T)) @ w[p + "down_proj"].T
    head = w["embed_tokens"] if config["tied"] else w["lm_head"]
    logits = rms_norm(h, w["norm"], eps) @ head.T
    logits = logits - logits.max(axis=-1, keepdims=True)
    return logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))


def windows(tokens: np.ndarray, length: int, count: int | None = None) -> np.ndarray:
    """Consecutive non-overlapping windows of ``length + 1`` tokens (inputs and the targets one step ahead)."""
    n = (len(tokens) - 1) // length if count is None else count
    return np.stack([tokens[i * length : i * length + length + 1] for i in range(n)])


def bits_per_token(
    weights: dict[str, np.ndarray], config: dict[str, Any], tokens: np.ndarray, length: int, batch: int = 16
) -> float:
    """Mean next-token loss in bits over non-overlapping windows (each window predicts ``length`` tokens)."""
    chunks = windows(tokens, length)
    total = 0.0
    for start in range(0, len(chunks), batch):
        part = chunks[start : start + batch]
        lp = log_probs(weights, config, part[:, :-1])
        total -= float(np.take_along_axis(lp, part[:, 1:, None], axis=-1).sum())
    return total / (chunks.shape[0] * length) / np.log(2)


def greedy(weights: dict[str, np.ndarray], config: dict[str, Any], prompt: np.ndarray, steps: int) -> np.ndarray:
    """Greedy continuation of one prompt (1-D token ids) by ``steps`` tokens, with the grader's forward."""
    seq = list(int(t) for t in prompt)
    for _ in range(steps):
        lp = log_probs(weights, config, np.asarray(seq, dtype=np.int64)[None, :])
        seq.append(int(np.argmax(lp[0, -1])))
    return np.asarray(seq[len(prompt) :], dtype=np.int64)

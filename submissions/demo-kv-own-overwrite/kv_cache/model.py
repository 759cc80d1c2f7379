"""BUG (on purpose): every decode step writes its K/V into the slot right after the prompt, overwriting the previous
step's instead of appending.

A decoder of its own with a KV cache, in float32 NumPy (the own-model KV contract, reference/kv_cache_own.py).

The model: tied token embeddings, learned absolute positions, 2 pre-RMSNorm layers of 4-head causal attention and a
tanh-GELU MLP, a final RMSNorm, logits = h @ tok_emb.T. The cache: per layer keys and values (B, H, capacity, dh),
preallocated and doubled when full; sequence b holds its tokens in slots 0..n_b-1 and a decode step writes slot n_b.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

D, HEADS, LAYERS = 64, 4, 2


@dataclass
class Model:
    params: dict[str, np.ndarray]
    max_len: int


@dataclass
class Cache:
    k: list[np.ndarray]  # per layer (B, H, capacity, dh)
    v: list[np.ndarray]
    lengths: np.ndarray  # (B,) tokens held per sequence
    prompt_lengths: np.ndarray  # (B,)


def build_model(seed, vocab_size, max_len):
    rng = np.random.default_rng(seed)

    def w(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[0])).astype(np.float32)

    params = {"tok": w(vocab_size, D) * np.float32(np.sqrt(vocab_size)), "pos": w(max_len, D)}
    for i in range(LAYERS):
        params.update({f"{i}.{n}": w(D, D) for n in ("q", "k", "v", "o")})
        params.update({f"{i}.up": w(D, 4 * D), f"{i}.down": w(4 * D, D)})
    return Model(params, max_len)


def _rms(x):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + np.float32(1e-6))


def _gelu(x):
    return np.float32(0.5) * x * (1 + np.tanh(np.float32(0.7978845608) * (x + np.float32(0.044715) * x**3)))


def _heads(x):  # (B, T, D) -> (B, H, T, dh)
    b, t, _ = x.shape
    return x.reshape(b, t, HEADS, D // HEADS).transpose(0, 2, 1, 3)


def _attend(q, k, v, allowed):  # allowed (B, Tq, Tk)
    scores = q @ k.transpose(0, 1, 3, 2) / np.float32(np.sqrt(D // HEADS))
    scores = np.where(allowed[:, None], scores, np.float32(-np.inf))
    p = np.exp(scores - scores.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ v
    b, _, t, _ = out.shape
    return out.transpose(0, 2, 1, 3).reshape(b, t, D)


def _mlp(p, i, h):
    return h + _gelu(_rms(h) @ p[f"{i}.up"]) @ p[f"{i}.down"]


def _logits(p, h):
    return _rms(h) @ p["tok"].T


def forward(model, tokens):
    p, t = model.params, tokens.shape[1]
    h = p["tok"][tokens] + p["pos"][:t]
    allowed = np.broadcast_to(np.tri(t, dtype=bool), (len(tokens), t, t))
    for i in range(LAYERS):
        a = _rms(h)
        q, k, v = (_heads(a @ p[f"{i}.{n}"]) for n in "qkv")
        h = _mlp(p, i, h + _attend(q, k, v, allowed) @ p[f"{i}.o"])
    return _logits(p, h)


def prefill(model, prompts, lengths):
    p, (b, t) = model.params, prompts.shape
    capacity = 1 << max(6, (t + 16).bit_length())
    shape = (b, HEADS, capacity, D // HEADS)
    cache = Cache(
        [np.zeros(shape, np.float32) for _ in range(LAYERS)],
        [np.zeros(shape, np.float32) for _ in range(LAYERS)],
        lengths.astype(np.int64),
        lengths.astype(np.int64),
    )
    allowed = np.tri(t, dtype=bool)[None] & (np.arange(t) < lengths[:, None])[:, None, :]
    h = p["tok"][prompts] + p["pos"][:t]
    for i in range(LAYERS):
        a = _rms(h)
        q, k, v = (_heads(a @ p[f"{i}.{n}"]) for n in "qkv")
        cache.k[i][:, :, :t], cache.v[i][:, :, :t] = k, v
        h = _mlp(p, i, h + _attend(q, k, v, allowed) @ p[f"{i}.o"])
    return _logits(p, h[np.arange(b), lengths - 1]), cache


def decode_step(model, tokens, cache):
    p, pos, b = model.params, cache.lengths, len(tokens)
    if pos.max() >= cache.k[0].shape[2]:  # full: double the room
        cache.k = [np.concatenate([k, np.zeros_like(k)], axis=2) for k in cache.k]
        cache.v = [np.concatenate([v, np.zeros_like(v)], axis=2) for v in cache.v]
    span = int(pos.max()) + 1
    allowed = (np.arange(span) <= pos[:, None])[:, None, :]
    h = (p["tok"][tokens] + p["pos"][pos])[:, None, :]
    rows = np.arange(b)
    for i in range(LAYERS):
        a = _rms(h)
        q, k, v = (_heads(a @ p[f"{i}.{n}"]) for n in "qkv")
        slot = cache.prompt_lengths  # BUG: always the slot after the prompt, not pos
        cache.k[i][rows, :, slot], cache.v[i][rows, :, slot] = k[:, :, 0], v[:, :, 0]
        h = _mlp(p, i, h + _attend(q, cache.k[i][:, :, :span], cache.v[i][:, :, :span], allowed) @ p[f"{i}.o"])
    cache.lengths = pos + 1
    return _logits(p, h[:, 0]), cache

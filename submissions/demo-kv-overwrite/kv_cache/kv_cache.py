"""BUG (on purpose): every decode step writes its K/V into the slot right after the prompt, overwriting the previous
step's instead of appending.

A KV cache for the toy decoder in NumPy: per-layer K/V arrays preallocated per sequence, doubled when full.

Layout: for each layer, keys and values of shape (B, n_kv_heads, capacity, dh). Sequence b holds its tokens in slots
0..n_b-1 (n_b its current length); slots past n_b hold prefill padding or nothing and are masked out. A decode step
writes each sequence's new K/V at its own slot n_b, so sequences of different lengths advance together.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass
class KVCache:
    k: list[np.ndarray]  # per layer (B, Hkv, capacity, dh)
    v: list[np.ndarray]
    prompt_lengths: np.ndarray  # (B,)
    steps: int  # decode steps taken so far


def _norm(x):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + 1e-5)


def _softmax(s):
    e = np.exp(s - s.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _n_layers(weights):
    return sum(1 for name in weights if name.endswith(".wq"))


def _split(x, heads):
    """(B, T, heads*dh) -> (B, heads, T, dh)."""
    b, t, _ = x.shape
    return x.reshape(b, t, heads, -1).transpose(0, 2, 1, 3)


def _attend(weights, i, h, k_all, v_all, mask):
    """Attention of h's queries over k_all/v_all (B, Hkv, S, dh) where mask (B, T, S) allows, then the MLP."""
    H, Hkv = weights["n_heads"], weights["n_kv_heads"]
    b, t, d = h.shape
    # Query head j reads K/V head j // group: group the query heads instead of copying K/V once per query head.
    q = (_norm(h) @ weights[f"l{i}.wq"]).reshape(b, t, Hkv, H // Hkv, -1).transpose(0, 2, 3, 1, 4)
    scores = q @ k_all.transpose(0, 1, 3, 2)[:, :, None] / math.sqrt(q.shape[-1])  # (B, Hkv, group, T, S)
    scores = np.where(mask[:, None, None], scores, -np.inf)
    out = (_softmax(scores) @ v_all[:, :, None]).transpose(0, 3, 1, 2, 4).reshape(b, t, d)
    h = h + out @ weights[f"l{i}.wo"]
    return h + np.maximum(_norm(h) @ weights[f"l{i}.w1"], 0) @ weights[f"l{i}.w2"]


def prefill(weights, prompts, lengths):
    B, T = prompts.shape
    H, Hkv = weights["n_heads"], weights["n_kv_heads"]
    d = weights["tok_emb"].shape[1]
    dh = d // H
    capacity = max(64, 2 * T)
    cache = KVCache([], [], np.asarray(lengths, dtype=np.int64).copy(), 0)
    keys = np.arange(T)
    mask = (keys[None, :] <= keys[:, None])[None] & (keys[None, None, :] < cache.prompt_lengths[:, None, None])
    h = weights["tok_emb"][prompts] + weights["pos_emb"][:T]
    for i in range(_n_layers(weights)):
        a = _norm(h)
        k_buf = np.zeros((B, Hkv, capacity, dh))
        v_buf = np.zeros((B, Hkv, capacity, dh))
        k_buf[:, :, :T] = _split(a @ weights[f"l{i}.wk"], Hkv)
        v_buf[:, :, :T] = _split(a @ weights[f"l{i}.wv"], Hkv)
        cache.k.append(k_buf)
        cache.v.append(v_buf)
        h = _attend(weights, i, h, k_buf[:, :, :T], v_buf[:, :, :T], mask)
    last = h[np.arange(B), cache.prompt_lengths - 1]
    return _norm(last) @ weights["w_out"], cache


def _grow(cache, needed):
    capacity = cache.k[0].shape[2]
    if needed <= capacity:
        return
    while capacity < needed:
        capacity *= 2
    for layer in (cache.k, cache.v):
        for i, buf in enumerate(layer):
            bigger = np.zeros(buf.shape[:2] + (capacity,) + buf.shape[3:])
            bigger[:, :, : buf.shape[2]] = buf
            layer[i] = bigger


def decode_step(weights, tokens, cache):
    B = len(tokens)
    Hkv = weights["n_kv_heads"]
    pos = cache.prompt_lengths + cache.steps  # (B,) position of each new token = tokens its sequence holds
    span = int(pos.max()) + 1
    _grow(cache, span)
    rows = np.arange(B)
    mask = (np.arange(span)[None, :] <= pos[:, None])[:, None, :]  # (B, 1, span): own tokens only, never padding
    h = (weights["tok_emb"][tokens] + weights["pos_emb"][pos])[:, None, :]
    for i in range(_n_layers(weights)):
        a = _norm(h)
        slot = cache.prompt_lengths  # BUG: should be pos; each step overwrites the last step's K/V
        cache.k[i][rows, :, slot] = (a @ weights[f"l{i}.wk"]).reshape(B, Hkv, -1)
        cache.v[i][rows, :, slot] = (a @ weights[f"l{i}.wv"]).reshape(B, Hkv, -1)
        h = _attend(weights, i, h, cache.k[i][:, :, :span], cache.v[i][:, :, :span], mask)
    cache.steps += 1
    return _norm(h[:, 0]) @ weights["w_out"], cache

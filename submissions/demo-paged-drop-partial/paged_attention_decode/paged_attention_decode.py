"""Paged-attention decode in Triton: one program per (sequence, query head), one cache block per step.

Demo bug: drops the last partial block of every context (length // block_size blocks).

paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale) -> out (B, H, D) float32
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _decode_kernel(
    Q,  # (B, H, D)
    K_CACHE,  # (num_blocks, BS, H_KV, D)
    V_CACHE,  # (num_blocks, BS, H_KV, D)
    BLOCK_TABLES,  # (B, max_blocks) int32
    CONTEXT_LENS,  # (B,) int32
    OUT,  # (B, H, D) float32
    scale,
    max_blocks,
    H: tl.constexpr,
    H_KV: tl.constexpr,
    D: tl.constexpr,
    BS: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    kvh = h // (H // H_KV)  # grouped-query attention: H // H_KV query heads share a KV head
    length = tl.load(CONTEXT_LENS + b)
    dims = tl.arange(0, D)
    slots = tl.arange(0, BS)
    q = tl.load(Q + (b * H + h) * D + dims).to(tl.float32)
    m = tl.full([], float("-inf"), tl.float32)
    denom = tl.zeros([], tl.float32)
    acc = tl.zeros([D], tl.float32)
    for i in range(0, length // BS):  # BUG: whole blocks only, the last partial block is dropped
        block = tl.load(BLOCK_TABLES + b * max_blocks + i).to(tl.int64)
        valid = i * BS + slots < length
        rows = ((block * BS + slots) * H_KV + kvh) * D
        k = tl.load(K_CACHE + rows[:, None] + dims[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
        s = tl.where(valid, tl.sum(k * q[None, :], axis=1) * scale, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, axis=0))  # finite: the block holds at least one token of the context
        alpha = tl.exp(m - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(V_CACHE + rows[:, None] + dims[None, :], mask=valid[:, None], other=0.0).to(tl.float32)
        denom = denom * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m = m_new
    tl.store(OUT + (b * H + h) * D + dims, acc / denom)


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    B, H, D = q.shape
    _, bs, h_kv, _ = k_cache.shape
    out = torch.empty((B, H, D), dtype=torch.float32, device=q.device)
    _decode_kernel[(B, H)](
        q.contiguous(), k_cache.contiguous(), v_cache.contiguous(), block_tables.contiguous(),
        context_lens.contiguous(), out, float(scale), block_tables.shape[1], H=H, H_KV=h_kv, D=D, BS=bs,
    )  # fmt: skip
    return out

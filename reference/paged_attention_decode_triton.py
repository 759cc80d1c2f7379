"""The grader's own paged-attention decode in Triton: a row in the speed tables, not a contract.

    paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale) -> out

    q             (B, H, D) float16 or bfloat16, on CUDA (or on the CPU under TRITON_INTERPRET=1); D a power of two
    k_cache       (num_blocks, block_size, H_kv, D), q's dtype; v_cache the same
    block_tables  (B, max_blocks_per_seq) int32; token t of sequence b is in block block_tables[b, t // block_size]
    context_lens  (B,) int32, each >= 1
    out           (B, H, D) float32: softmax(scale * q K^T) V over each sequence's context, KV head h // (H // H_kv)

Split-K (flash-decoding): program (b, g, p) reads partition p (PARTITION tokens) of sequence b's context once for all
G = H // H_kv query heads of KV head g, keeping an online softmax per head:

    m' = max(m, max_j s_j),  l' = l e^(m - m') + sum_j e^(s_j - m'),  acc' = acc e^(m - m') + sum_j e^(s_j - m') v_j

and writes (m, l, acc) of its partition; a second kernel merges the partitions of each (b, h) with the same rule and
divides. Scores come from tl.dot in float32 (fp16/bf16 products are exact in float32); the weights e^(s - m') are
rounded to the input dtype for the P V product (as flash kernels do: ~1e-3 relative, inside the contract's bound) and
summed unrounded into l. Slots past the context are masked before any arithmetic (their keys to 0, their scores to
-inf, their values to 0), so the cache's poison there never reaches the output.
"""

from __future__ import annotations

import os

import torch

try:  # the grading plugins import this module on machines without Triton or a GPU
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only where Triton is absent
    triton = None

PARTITION = 512  # tokens per program: at 32k context and B * H_kv = 16 that is 1024 programs, several waves of SMs
TILE = 64  # tokens per step inside a program (4 blocks of 16, 2 of 32)
MIN_HEADS = 16  # tl.dot needs at least 16 rows: the G heads of a KV head are padded to this

if triton is not None:
    if os.environ.get("TRITON_INTERPRET") == "1":  # read at decoration time, as triton.jit does

        @triton.jit
        def _dot(a, b):
            """The interpreter multiplies bfloat16 operands as their uint16 bit patterns (Triton 3.9): both go to
            float32 first, which is exact, so the values are those of the device's dot."""
            return tl.dot(a.to(tl.float32), b.to(tl.float32))

    else:

        @triton.jit
        def _dot(a, b):
            """fp16/bf16 operands on the tensor cores, products exact and summed in float32."""
            return tl.dot(a, b)

    @triton.jit
    def _paged_decode_partition(
        Q,  # (B, H, D) fp16/bf16
        K_CACHE,  # (num_blocks, BS, H_KV, D)
        V_CACHE,  # (num_blocks, BS, H_KV, D)
        BLOCK_TABLES,  # (B, max_blocks) int32
        CONTEXT_LENS,  # (B,) int32
        M_OUT,  # (B, H, NUM_PARTS) float32 out: running max of each partition
        L_OUT,  # (B, H, NUM_PARTS) float32 out: sum of e^(s - m)
        ACC_OUT,  # (B, H, NUM_PARTS, D) float32 out: sum of e^(s - m) v
        scale,
        max_blocks,
        NUM_PARTS,
        H: tl.constexpr,
        H_KV: tl.constexpr,
        G: tl.constexpr,  # query heads per KV head
        GP: tl.constexpr,  # G padded to a power of two >= MIN_HEADS
        D: tl.constexpr,
        BS: tl.constexpr,
        TILE: tl.constexpr,
        PARTITION: tl.constexpr,
    ):
        b = tl.program_id(0)
        kvh = tl.program_id(1)
        part = tl.program_id(2)
        length = tl.load(CONTEXT_LENS + b)
        start = part * PARTITION
        if start < length:  # partitions past the context write nothing; the merge never reads them
            rows = tl.arange(0, GP)
            heads = kvh * G + rows
            live = rows < G
            dims = tl.arange(0, D)
            q = tl.load(Q + (b * H + heads)[:, None] * D + dims[None, :], mask=live[:, None], other=0.0)
            m = tl.full([GP], float("-inf"), tl.float32)
            denom = tl.zeros([GP], tl.float32)
            acc = tl.zeros([GP, D], tl.float32)
            stop = tl.minimum(start + PARTITION, length)
            for t0 in range(start, stop, TILE):
                tok = t0 + tl.arange(0, TILE)
                valid = tok < stop
                block = tl.load(BLOCK_TABLES + b * max_blocks + tok // BS, mask=valid, other=0)
                slot = ((block.to(tl.int64) * BS + tok % BS) * H_KV + kvh) * D
                k = tl.load(K_CACHE + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)
                s = _dot(q, tl.trans(k)) * scale  # (GP, TILE) float32
                s = tl.where(valid[None, :], s, float("-inf"))
                m_new = tl.maximum(m, tl.max(s, axis=1))  # finite: every tile holds a token of the context
                alpha = tl.exp(m - m_new)  # 0 on the first tile (m = -inf)
                p = tl.exp(s - m_new[:, None])
                denom = denom * alpha + tl.sum(p, axis=1)
                v = tl.load(V_CACHE + slot[:, None] + dims[None, :], mask=valid[:, None], other=0.0)
                acc = acc * alpha[:, None] + _dot(p.to(v.dtype), v)
                m = m_new
            at = (b * H + heads) * NUM_PARTS + part
            tl.store(M_OUT + at, m, mask=live)
            tl.store(L_OUT + at, denom, mask=live)
            tl.store(ACC_OUT + at[:, None] * D + dims[None, :], acc, mask=live[:, None])

    @triton.jit
    def _paged_decode_merge(
        M_PART,  # (B, H, NUM_PARTS) float32
        L_PART,  # (B, H, NUM_PARTS) float32
        ACC_PART,  # (B, H, NUM_PARTS, D) float32
        CONTEXT_LENS,  # (B,) int32
        OUT,  # (B, H, D) float32 out
        NUM_PARTS,
        H: tl.constexpr,
        D: tl.constexpr,
        PARTS_P2: tl.constexpr,  # NUM_PARTS padded to a power of two
        PARTITION: tl.constexpr,
    ):
        b = tl.program_id(0)
        h = tl.program_id(1)
        length = tl.load(CONTEXT_LENS + b)
        parts = tl.arange(0, PARTS_P2)
        used = parts < tl.cdiv(length, PARTITION)
        base = (b * H + h) * NUM_PARTS
        m = tl.load(M_PART + base + parts, mask=used, other=float("-inf"))
        top = tl.max(m, axis=0)
        w = tl.where(used, tl.exp(m - top), 0.0)
        denom = tl.sum(w * tl.load(L_PART + base + parts, mask=used, other=0.0), axis=0)
        dims = tl.arange(0, D)
        acc = tl.load(ACC_PART + (base + parts)[:, None] * D + dims[None, :], mask=used[:, None], other=0.0)
        tl.store(OUT + (b * H + h) * D + dims, tl.sum(w[:, None] * acc, axis=0) / denom)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def paged_attention_decode(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,
    context_lens: torch.Tensor,
    scale: float,
    partition: int = PARTITION,
) -> torch.Tensor:
    """out (B, H, D) float32 (see the module docstring); ``partition`` (a multiple of TILE) is for tests of the merge
    on small contexts."""
    if triton is None:
        raise RuntimeError("paged_attention_decode needs Triton (or TRITON_INTERPRET=1 with Triton on the CPU)")
    B, H, D = q.shape
    _, bs, h_kv, _ = k_cache.shape
    if H % h_kv or D & (D - 1) or partition % TILE:
        raise ValueError(f"unsupported shape: H={H}, H_kv={h_kv}, D={D}, partition={partition}")
    tables = block_tables.to(torch.int32).contiguous()
    lens = context_lens.to(torch.int32).contiguous()
    longest = int(lens.max().item())  # one sync: sizes the grid (the merge reads only each sequence's partitions)
    parts = -(-longest // partition)
    dev = q.device
    m = torch.empty((B, H, parts), dtype=torch.float32, device=dev)
    denom = torch.empty_like(m)
    acc = torch.empty((B, H, parts, D), dtype=torch.float32, device=dev)
    out = torch.empty((B, H, D), dtype=torch.float32, device=dev)
    g = H // h_kv
    _paged_decode_partition[(B, h_kv, parts)](
        q.contiguous(), k_cache.contiguous(), v_cache.contiguous(), tables, lens, m, denom, acc, float(scale),
        tables.shape[1], parts, H=H, H_KV=h_kv, G=g, GP=max(MIN_HEADS, _next_pow2(g)), D=D, BS=bs, TILE=TILE,
        PARTITION=partition, num_warps=4,
    )  # fmt: skip
    merge = {"H": H, "D": D, "PARTS_P2": _next_pow2(parts), "PARTITION": partition}
    _paged_decode_merge[(B, H)](m, denom, acc, lens, out, parts, **merge)
    return out

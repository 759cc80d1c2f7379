"""Paged-attention decode (CUDA C++ or Triton): contract, float64 oracle, input generator, tolerances and hidden cases.

One decode step over a paged KV cache: each sequence's one new query token attends to its whole context, whose keys
and values lie in fixed-size blocks scattered through one shared cache. A Python (Triton or torch) answer defines,
on torch CUDA tensors::

    paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale) -> out

a CUDA C++ answer the host function of ``C_SIGNATURES``, with C linkage (argument names as here; ``dtype`` 0 is
float16, 1 bfloat16; ``out`` a device buffer it writes).

- ``q`` (B, H, D), float16 or bfloat16; D is 64 or 128.
- ``k_cache``, ``v_cache`` (num_blocks, block_size, H_kv, D), q's dtype; block_size is 16 or 32; H is a multiple of
  H_kv (grouped-query attention: query head h reads KV head ``h // (H // H_kv)``).
- ``block_tables`` (B, max_blocks_per_seq) int32: token t of sequence b sits in slot ``t % block_size`` of physical
  block ``block_tables[b, t // block_size]``; entries past the sequence's last block are valid block numbers of
  blocks that hold no context.
- ``context_lens`` (B,) int32, each at least 1.
- ``out`` (B, H, D): ``softmax(scale * q[b, h] K_b^T) V_b`` over the sequence's context_lens[b] tokens, accumulated in
  float32; float32 (a Python answer may also return q's dtype).
- Every slot that holds no context (the rest of a sequence's last block, every block no table reaches up to its
  context length) may hold any bits, NaN and infinity included: none may reach the output. Every input is read only.

Truth: float64 from a gather (each sequence's K and V in token order by its block table, then a direct softmax per
head). The bound (``TOLERANCES``): twice the worst-case error of rounding the weights P to the input dtype before
P V (what flash kernels do), a floor of 1e-5 of the output's scale, and one unit in the last place of the input dtype
relative (a Python answer may return that dtype). Speed cases time the kernel against torch's
gather + ``scaled_dot_product_attention`` and the read-once floor: the K and V bytes of the contexts at the run's
copy bandwidth (:func:`read_bytes`).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from typing import Any

import numpy as np

from reference.contract import (
    AtMost,
    Bound,
    Case,
    Challenge,
    ContractError,  # noqa: F401 - the CUDA loader raises driver.ContractError in the child
    Expected,
    Tolerance,
    copied_bytes,
    read_once_check,
)

CHALLENGE = Challenge(
    id="paged_attention_decode",
    title="Paged-attention decode (CUDA or Triton)",
    folder_names=("paged_attention_decode", "paged_attention"),
    entry_points=("paged_attention_decode",),
    runtimes=("cuda", "triton"),
)

# The Python (Triton or torch) answer's contract line, as `kernelgrade check` and the prompt write it.
SIGNATURES = {
    "paged_attention_decode": "paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale) -> out"
}

# The C declaration the CUDA loader passes arguments by (the stream is the loader's; ``drive`` gives the rest).
C_SIGNATURES = {
    "paged_attention_decode": "int paged_attention_decode(const void* q, const void* k_cache, const void* v_cache, "
    "const int* block_tables, const int* context_lens, int num_seqs, int num_heads, int num_kv_heads, int head_dim, "
    "int block_size, int max_blocks_per_seq, int dtype, float scale, float* out, cudaStream_t stream)"
}
DTYPE_CODES = {"float16": 0, "bfloat16": 1}  # the C ``dtype`` argument

UNIT_ROUNDOFF = {"float16": 2.0**-11, "bfloat16": 2.0**-8}  # the largest relative error of one rounding
_PRECISION = (
    "the baseline error is the worst case of float32 arithmetic that rounds the softmax weights P to the input "
    "dtype once before P V, as flash kernels do (unit roundoff times sum p|v| / sum p, the largest over the outputs); "
    "twice it covers the float32 arithmetic besides (a kernel that keeps P in float32 errs ~1e-6 relative). A floor "
    "of 1e-5 of the output's scale where that is 0 (one token: P = 1 exactly)"
)
TOLERANCES = {
    "float16": Tolerance(
        atol_floor=1e-5,
        rtol=2.0**-10,
        baseline_factor=2.0,
        reason=_PRECISION + "; rtol one float16 ulp (2^-10), since a Python answer may return float16, rounded once "
        "(half an ulp). Real bugs (a wrong block, dropped tokens of a short context, the wrong KV head, a read past "
        "the context, exp overflow) err by 1e-2 or more, or give NaN",
    ),
    "bfloat16": Tolerance(
        atol_floor=1e-5,
        rtol=2.0**-7,
        baseline_factor=2.0,
        reason=_PRECISION + "; rtol one bfloat16 ulp (2^-7), since a Python answer may return bfloat16, rounded once "
        "(half an ulp). Real bugs err by 1e-1 or more, or give NaN",
    ),
}

# Speed: a time whose read-once floor exceeds it by more than this is impossible (as for the fused top-k: the H200's
# datasheet bandwidth is under 1.25x the copy rate measured there), so a measurement error or a cheat.
FLOOR_SLACK = 1.25
SPEED_BASELINE_WORDS = "torch gather + scaled_dot_product_attention"

# Rules beyond the maths that cases depend on: none. The prompt states the poison past each context, the grouped-query
# head mapping and the scale argument, so every case is the task's under every profile.
RULES: dict[str, str] = {}

SPARE_ENTRIES = 2  # block-table entries past the longest sequence's last block: each sequence has unused entries
POISON_BLOCKS = 3  # physical blocks that belong to no sequence (unused table entries point at them)
BIG_V = 1.0e4  # "big" poison: finite, so a read past the context shows as a wrong value rather than as NaN


def paged_case(
    category: str,
    guards: str,
    lens: list[int],
    h: int,
    kv: int,
    d: int,
    bs: int,
    dtype: str = "float16",
    *,
    q_std: float = 1.0,
    poison: str = "nan",
    scale: float | None = None,
    tag: str = "",
    **extra: Any,
) -> Case:
    """A case whose id spells its shape (``b4-h32-kv8-d128-bs16-n1000-f16``: sequences, heads, KV heads, head dim,
    block size, longest context, dtype) and its tags. Context lengths are params, so the bytes read are known from
    the case alone (:func:`read_bytes`); ``q_std`` is the scores' standard deviation at the default scale."""
    tags = f"-{tag}" if tag else ""
    tags += "".join(f"-{key}" for key, value in extra.items() if value is True)
    short = {"float16": "f16", "bfloat16": "bf16"}[dtype]
    params = {
        "context_lens": list(lens), "num_heads": h, "num_kv_heads": kv, "head_dim": d, "block_size": bs,
        "dtype": dtype, "q_std": q_std, "poison": poison, "scale": 1.0 / math.sqrt(d) if scale is None else scale,
        **extra,
    }  # fmt: skip
    return Case(f"b{len(lens)}-h{h}-kv{kv}-d{d}-bs{bs}-n{max(lens)}-{short}{tags}", category, guards, params)


BUILD_CASE = Case("build", "core", "a CUDA answer compiles with nvcc and exports the C entry point", {"build": True})

# 64 assorted lengths from 1 to 700, fixed (a formula, not a draw) so that read_bytes knows them.
_MANY = [(37 * i * i + 11 * i) % 700 + 1 for i in range(64)]

CASES = (
    BUILD_CASE,  # the only case graded where there is no GPU
    # Odd lengths on purpose: 77, 33, 1000, 45, 129, 999 end in a partial block; 512, 64 end on a block boundary.
    paged_case("core", "multi-head attention (H_kv = H) over shuffled blocks", [200, 77, 512, 33], 8, 8, 128, 16),
    paged_case("core", "grouped-query heads: 4 query heads per KV head", [300, 1000, 45, 129], 32, 8, 128, 16),
    paged_case("core", "bfloat16 caches", [300, 1000, 45, 129], 32, 8, 128, 16, "bfloat16"),
    paged_case("core", "head dim 64, block size 32", [250, 64, 999], 16, 4, 64, 32),
    paged_case("edge", "context length 1: the only token sits in a partial block", [1, 1, 1], 8, 2, 128, 16),
    paged_case("edge", "lengths around block boundaries", [15, 16, 17, 31, 32, 33, 47], 8, 8, 64, 16),
    paged_case("edge", "lengths around 32-token blocks, bfloat16", [31, 32, 33, 63, 65, 1], 16, 2, 128, 32, "bfloat16"),
    paged_case("edge", "8 query heads per KV head", [517, 1200, 3], 32, 4, 128, 16, "bfloat16"),
    paged_case("edge", "one 32k-token sequence beside short ones", [32768, 5, 100, 1], 16, 2, 128, 16),
    paged_case("edge", "64 sequences of assorted lengths: programs must not mix sequences", _MANY, 8, 2, 64, 16),
    paged_case("edge", "a scale that is not 1/sqrt(D)", [100, 333], 8, 8, 128, 16, scale=0.3, tag="scaled"),
    # Finite poison: K 0 and V 1e4 past every context, so a read one slot past it moves the output by ~1 or more.
    paged_case("edge", "a read past the context shows without NaN", [17, 64, 250], 8, 8, 128, 16, poison="big"),
    # Scores of std 40: the largest of a thousand is ~130, and exp(130) overflows float32 without the max subtracted.
    paged_case("precision", "scores x40: exp overflows without the max", [1000, 2000, 3], 8, 8, 128, 16, q_std=40.0),
    paged_case("precision", "scores x40 in bfloat16", [1500, 700], 32, 8, 128, 16, "bfloat16", q_std=40.0),
    # Near-uniform weights over 32768 tokens: a sum that a low-precision accumulator gets wrong.
    paged_case("precision", "near-uniform weights over 32k tokens", [32768], 8, 8, 64, 32, "bfloat16", q_std=0.01),
    # Speed at the shapes of a 8B-class model (32 heads, 8 KV heads, D 128): 134 MB and 268 MB of K and V, several
    # times the H200's L2. Timed in the child: the limit also covers compiling the Triton reference on first use.
    paged_case("speed", "time at 4k context", [4096] * 8, 32, 8, 128, 16, speed=True, timeout_s=300),
    paged_case("speed", "time at 32k context", [32768] * 2, 32, 8, 128, 16, speed=True, timeout_s=300),
)


def read_bytes(params: dict[str, Any]) -> int:
    """K and V bytes of the contexts a correct kernel must read once: sum of context_len * H_kv * D * 2 bytes * 2."""
    tokens = sum(int(n) for n in params["context_lens"])
    return tokens * int(params["num_kv_heads"]) * int(params["head_dim"]) * 2 * 2


def to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns (uint16), rounded to nearest even; NaN stays a quiet NaN."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))) >> np.uint32(16)).astype(
        np.uint16
    )
    rounded[np.isnan(x)] = 0x7FC0
    return rounded


def as_float32(x: np.ndarray, dtype: str) -> np.ndarray:
    """Values of a float16 array or of bfloat16 bit patterns, as float32 (exact)."""
    if dtype == "bfloat16":
        return (x.astype(np.uint32) << np.uint32(16)).view(np.float32)
    return x.astype(np.float32)


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """float32 values rounded to ``dtype`` and back to float32."""
    if dtype == "bfloat16":
        return as_float32(to_bfloat16_bits(x), dtype)
    return x.astype(np.float16).astype(np.float32)


def _store(x: np.ndarray, dtype: str) -> np.ndarray:
    return to_bfloat16_bits(x) if dtype == "bfloat16" else x.astype(np.float16)


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """q (B, H, D) ~ N(0, q_std^2); caches ~ N(0, 1) in shuffled physical blocks; poison past every context (see the
    module docstring); bfloat16 as uint16 bit patterns."""
    p = case.params
    if p.get("build"):
        return {}
    lens = np.asarray(p["context_lens"], dtype=np.int64)
    kv, d, bs, dtype = p["num_kv_heads"], p["head_dim"], p["block_size"], p["dtype"]
    nblocks = -(-lens // bs)
    used = int(nblocks.sum())
    order = rng.permutation(used + POISON_BLOCKS).astype(np.int32)  # block i of the concatenated contexts -> slot
    poison_ids = order[used:]
    tables = rng.choice(poison_ids, size=(lens.size, int(nblocks.max()) + SPARE_ENTRIES)).astype(np.int32)
    past = np.zeros((used + POISON_BLOCKS, bs), dtype=bool)  # slots that hold no context
    past[poison_ids] = True
    for b, first in enumerate(np.concatenate([[0], np.cumsum(nblocks)[:-1]])):
        tables[b, : nblocks[b]] = order[first : first + nblocks[b]]
        past[tables[b, nblocks[b] - 1], lens[b] - (nblocks[b] - 1) * bs :] = True
    caches = {}
    poisons = {"k_cache": 0.0, "v_cache": BIG_V} if p["poison"] == "big" else {"k_cache": np.nan, "v_cache": np.nan}
    for name, poison in poisons.items():
        x = rng.standard_normal((used + POISON_BLOCKS, bs, kv, d), dtype=np.float32)
        x[past] = poison
        caches[name] = _store(x, dtype)
    q = rng.standard_normal((lens.size, p["num_heads"], d), dtype=np.float32) * np.float32(p["q_std"])
    return {"q": _store(q, dtype), **caches, "block_tables": tables, "context_lens": lens.astype(np.int32)}


def context_of(cache: np.ndarray, table: np.ndarray, length: int) -> np.ndarray:
    """A sequence's (length, H_kv, D) keys or values in token order, gathered by its block table."""
    bs = cache.shape[1]
    n = -(-length // bs)
    return cache[table[:n]].reshape(n * bs, *cache.shape[2:])[:length]


def decode(inputs: dict[str, np.ndarray], scale: float, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The float64 truth ``out`` (B, H, D) by a direct softmax per head over each gathered context, and beside it
    ``spread`` = sum_i p_i |v_i| / sum_i p_i per element: rounding each weight p_i to ``dtype`` (relative error at most
    u) moves an output by at most u * spread, the worst case of a kernel that rounds P before P V."""
    q = as_float32(inputs["q"], dtype).astype(np.float64)
    B, H, D = q.shape
    kv = inputs["k_cache"].shape[2]
    g = H // kv
    out, spread = np.empty((B, H, D)), np.empty((B, H, D))
    for b, length in enumerate(inputs["context_lens"].tolist()):
        keys = context_of(inputs["k_cache"], inputs["block_tables"][b], length)
        values = context_of(inputs["v_cache"], inputs["block_tables"][b], length)
        for j in range(kv):
            heads = slice(j * g, (j + 1) * g)
            k = as_float32(np.ascontiguousarray(keys[:, j]), dtype).astype(np.float64)
            v = as_float32(np.ascontiguousarray(values[:, j]), dtype).astype(np.float64)
            s = (q[b, heads] @ k.T) * scale
            e = np.exp(s - s.max(axis=1, keepdims=True))
            total = e.sum(axis=1, keepdims=True)
            out[b, heads] = (e @ v) / total
            spread[b, heads] = (e @ np.abs(v)) / total
    return out, spread


def bound_for(tolerance: Tolerance, want: np.ndarray, spread: np.ndarray, dtype: str) -> Bound:
    """Resolve a :class:`Tolerance`. Its baseline error is the worst case of rounding every weight P to ``dtype``
    once (unit roundoff times the largest ``spread``), not one such computation's measured error: with peaked
    weights the measured error rests on the rounding of a handful of weights and varies by more than 2x with the
    order of rounding (an online softmax rounds against a running max), so a correct flash-style kernel could fail.
    Any float dtype is accepted."""
    scale = max(1.0, float(np.max(np.abs(want))))
    baseline_error = UNIT_ROUNDOFF[dtype] * float(np.max(spread))
    return Bound(atol=max(tolerance.atol_floor * scale, tolerance.baseline_factor * baseline_error),
                 rtol=tolerance.rtol, dtype=None)  # fmt: skip


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """The float64 output and its bound; on speed cases also the floor check."""
    p = case.params
    if p.get("build"):
        return Expected({}, {})
    want, spread = decode(inputs, p["scale"], p["dtype"])
    values: dict[str, Any] = {"out": want}
    bounds: dict[str, Any] = {"out": bound_for(TOLERANCES[p["dtype"]], want, spread, p["dtype"])}
    if case.is_speed:
        values["floor_over_time"] = None  # derived in the grader from the child's raw times (read_once_check)
        bounds["floor_over_time"] = AtMost(
            FLOOR_SLACK,
            "read-once floor (K and V of the contexts at the copy bandwidth) / measured time (over 1.25: faster than "
            "reading them once, a measurement error or a cheat)",
        )
    derive = read_once_check(read_bytes(p), copied_bytes(inputs)) if case.is_speed else None
    return Expected(values, bounds, derive=derive)


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox child: one call (for CUDA on an output poisoned with NaN, so unwritten rows show); speed
    cases then time the kernel on the device."""
    if params.get("build"):
        return {}
    q, k_cache, v_cache = inputs["q"], inputs["k_cache"], inputs["v_cache"]
    tables, lens, scale = inputs["block_tables"], inputs["context_lens"], float(params["scale"])
    if params["dtype"] == "bfloat16":  # NumPy has no bfloat16: the bits travel as uint16 and are typed here
        q, k_cache, v_cache = (run.typed(x, "bfloat16") for x in (q, k_cache, v_cache))
    if run.runtime == "cuda":
        B, H, D = inputs["q"].shape
        sizes = (B, H, params["num_kv_heads"], D, params["block_size"], tables.shape[1], DTYPE_CODES[params["dtype"]])
        poisoned = np.full((B, H, D), np.nan, dtype=np.float32)
        result = run.call(
            "paged_attention_decode", q, k_cache, v_cache, tables, lens, *sizes, scale, poisoned, measure=True
        )
        (out,) = run.unpack(result, 1, "(out,)")
    else:
        out = run.call("paged_attention_decode", q, k_cache, v_cache, tables, lens, scale, measure=True)
    outputs: dict[str, Any] = {"out": out}
    if params.get("speed"):
        times = run.call("paged_attention_decode:timed")  # the same call again, timed on the device
        outputs |= {f"time_{name}": np.asarray(t, dtype=np.float64) for name, t in times.items()}
    return outputs


def speed_baselines(torch: Any, runtime: str, *device_args: Any) -> dict[str, Any]:
    """Runs in the child, on the GPU: zero-argument launches timed beside the submission on the same device inputs:
    torch's gather + ``scaled_dot_product_attention``, and the grader's Triton kernel when it imports."""
    if runtime == "cuda":
        q, k_cache, v_cache, tables, lens, B, H, kv, D, bs, width, _, scale, _ = device_args
        q, tables = q.reshape(B, H, D), tables.reshape(B, width)
        k_cache, v_cache = (c.reshape(-1, bs, kv, D) for c in (k_cache, v_cache))
    else:
        q, k_cache, v_cache, tables, lens, scale = device_args
    launches = {"torch": torch_decode(torch, q, k_cache, v_cache, tables, lens, scale)}
    triton = _triton_reference()
    if triton is not None:
        launches["triton"] = lambda: triton.paged_attention_decode(q, k_cache, v_cache, tables, lens, scale)
    return launches


def torch_decode(torch: Any, q: Any, k_cache: Any, v_cache: Any, tables: Any, lens: Any, scale: float) -> Any:
    """A zero-argument launch of what a torch user writes: gather each sequence's blocks up to the longest context
    (padded, masked past each context), then ``scaled_dot_product_attention`` with grouped KV heads."""
    B, H, D = q.shape
    _, bs, kv, _ = k_cache.shape
    longest = int(lens.max().item())
    n = -(-longest // bs)
    mask = (torch.arange(n * bs, device=q.device)[None, :] < lens[:, None].long()).view(B, 1, 1, n * bs)
    mask = None if bool(mask.all()) else mask  # equal full contexts: no mask, so torch may take its fused kernels
    blocks = tables[:, :n].long()

    def launch() -> Any:
        k = k_cache[blocks].view(B, n * bs, kv, D).transpose(1, 2)
        v = v_cache[blocks].view(B, n * bs, kv, D).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(
            q.view(B, H, 1, D), k, v, attn_mask=mask, scale=scale, enable_gqa=kv != H
        )

    return launch


def _triton_reference() -> Any:
    """``reference/paged_attention_decode_triton.py``, loaded by path (the child has dropped the repo from
    ``sys.path``); None where it does not import (no Triton)."""
    path = Path(__file__).resolve().parent / "paged_attention_decode_triton.py"
    try:
        spec = importlib.util.spec_from_file_location("_kernelgrade_paged_attention_decode_triton", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - no Triton: the speed figures then leave this row out
        return None
    return module

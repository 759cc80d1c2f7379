"""Fused softmax + top-k (CUDA): contract, float64 oracle, input generator, tolerances and hidden cases.

Contract: the submission's CUDA source defines one host function with C linkage, exactly::

    extern "C" int softmax_topk(const float* logits, int rows, int V, int k,
                                int* indices, float* probs, cudaStream_t stream);

- ``logits``: device pointer to a contiguous row-major (rows, V) float32 array (for logits [B, T, V], rows = B * T);
  read only. 1 <= rows, 1 <= k <= V, V up to 151936; the values may include -inf (never NaN, never a row of -inf
  only).
- ``indices``: device pointer to (rows, k) int32: per row, the indices of its k largest logits, in descending
  probability (ties: see below).
- ``probs``: device pointer to (rows, k) float32: the softmax probability of each returned index,
  ``exp(x_i - logsumexp(row))``, computed stably (the row maximum subtracted), without writing the full softmax to
  global memory.
- ``stream``: queue the work on it; the grader synchronises after the call.
- Returns 0 when the work is queued. Any other value means it was not: a CUDA error code, or arguments the submission
  does not support (a K above the largest it was written for). A non-zero return fails that case (outcome ``error``,
  "returned N") and never stops the run; a CUDA fault (illegal address) is a ``crash`` of that case, and the next case
  starts in a fresh process.

Tie rule (:class:`reference.contract.TopK`): with ``s_k`` the k-th largest logit of a row (counting repeats), a row
passes when its k indices are distinct, within [0, V), include every index whose logit is above ``s_k``, take the rest
from those equal to ``s_k`` (any of them), and list logits in non-increasing order (equal logits in any order). The
order is decided on the logits, which are exact: selecting on rounded float32 probabilities can misorder near-ties.

Checks per case: ``indices`` under the tie rule; ``probs`` against the float64 softmax of the k largest logits (equal
for every accepted index set); ``mass``, the sum of the returned probabilities, against the float64 mass of the top k
(the mass of the returned indices whenever they pass). Speed cases also time the kernel on the GPU (see
``plugins/isolate/runtimes/cuda.py``) and fail a time below the read-once floor.

The submission is built with nvcc by ``plugins/isolate/build.py``; a folder's ``adapter.cu`` wins and may
``#include`` the submission's own source to define the function above on top of its own launcher.
"""

from __future__ import annotations

import importlib.util
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
    TopK,
    copied_bytes,
    read_once_check,
)

CHALLENGE = Challenge(
    id="softmax_topk",
    title="Fused softmax + top-k (CUDA)",
    folder_names=("softmax_topk", "fuse"),
    entry_points=("softmax_topk",),
    runtimes=("cuda",),
)

# The C declaration of each entry point; the CUDA loader passes arguments by it (a cudaStream_t is supplied by the
# loader, every other argument by ``drive``, in order).
C_SIGNATURES = {
    "softmax_topk": "int softmax_topk(const float* logits, int rows, int V, int k, int* indices, float* probs, "
    "cudaStream_t stream)"
}

TOLERANCES = {
    "probs": Tolerance(
        atol_floor=1e-9,
        rtol=1e-4,
        baseline_factor=2.0,
        reason="the denominator sums up to 151936 float32 exponentials: any reasonable order (per-thread runs of up "
        "to ~1000 terms, then a tree) stays within 1e-4 relative, and a fast exp adds ~1e-6; the 1e-9 floor covers "
        "probabilities that a float32 kernel flushes to zero; real bugs (a partial sum, renormalising over the top k, "
        "no max subtraction) err by far more",
    ),
    "mass": Tolerance(
        atol_floor=1e-9,
        rtol=1e-4,
        baseline_factor=2.0,
        reason="the sum of k probabilities that each hold the 1e-4 relative bound",
    ),
}

SPEED_BASELINE_WORDS = "torch softmax + topk"  # the "torch" launch of speed_baselines, as reports name it


def read_bytes(params: dict[str, Any]) -> int:
    """The bytes a speed case must read at least once: the float32 logits (the floor of its time)."""
    return params["rows"] * params["V"] * 4


# Speed: a time whose read-once floor (input bytes at the copy bandwidth of the same run) exceeds it by more than this
# factor is impossible: the memory's datasheet peak (4.8 TB/s on the H200) is under 1.25x the copy rate measured there
# (4.3 TB/s), so such a time is a measurement error or a cheat.
FLOOR_SLACK = 1.25


# Rules beyond softmax and top-k themselves that cases depend on; our prompt states all three. A prompt that promises
# V >= 50k and names no range of k or -inf logits states none of them (a kernel written to it may not handle these).
RULES = {
    "any-vocab-size": "V may be any size up to 151936, small ones (under 50k) included",
    "k-up-to-v": "k may be anything from 1 to V: 256 and V itself included",
    "neg-inf-logits": "logits may be -inf (a masked vocabulary), and a row may hold fewer finite logits than k",
}
LARGE_V = 50_000  # a case with a smaller V depends on any-vocab-size
LARGE_K = 256  # a case with k this large (or k = V) depends on k-up-to-v


def topk_case(category: str, guards: str, rows: int, v: int, k: int, kind: str = "normal", **extra: Any) -> Case:
    """A case whose id spells its shape and input kind (``r7-v50257-k50-ninf``); its rules follow from V, k and the
    kind (see RULES)."""
    tags = "" if kind == "normal" else f"-{kind}"
    tags += "".join(f"-{key}" for key, value in extra.items() if value is True)
    rules = (
        *(("any-vocab-size",) if v < LARGE_V else ()),
        *(("k-up-to-v",) if k >= LARGE_K or k == v else ()),
        *(("neg-inf-logits",) if kind == "ninf" else ()),
    )
    params = {"rows": rows, "V": v, "k": k, "kind": kind, **extra}
    return Case(f"r{rows}-v{v}-k{k}{tags}", category, guards, params, rules)


BUILD_CASE = Case("build", "core", "compiles with nvcc and exports the C entry point", {"build": True})

CASES = (
    BUILD_CASE,  # the only case graded where there is no GPU (run cases are then skipped "no GPU")
    # 50257: GPT-2's vocabulary (odd); 151936: Qwen's. One row: a grid of a single block.
    topk_case("core", "one row over a GPT-2 vocabulary", 1, 50257, 8),
    topk_case("core", "several rows, K = 50", 7, 50257, 50),
    topk_case("core", "Qwen vocabulary (151936)", 7, 151936, 8),
    topk_case("core", "K = 1 (argmax) over many rows", 4096, 1000, 1),
    # 1023 = 1024 - 1: a row one short of a power of two, so the last block-stride chunk is partial.
    topk_case("edge", "V not a multiple of the block", 7, 1023, 8),
    # More rows than any one-wave grid: rows handled by the same block in turn, or by different blocks, must not mix.
    topk_case("edge", "4096 rows: rows must not mix across blocks", 4096, 1023, 50),
    topk_case("edge", "K = 256", 7, 50257, 256),
    topk_case("edge", "K = 256 over the Qwen vocabulary", 1, 151936, 256),
    topk_case("edge", "K = V (every index returned)", 3, 1000, 1000),
    topk_case("edge", "all-equal logits (any k distinct indices)", 7, 1000, 8, "equal"),
    topk_case("edge", "quantised logits: ties across the k-th boundary", 7, 50257, 50, "quantised"),
    # -inf: a masked vocabulary; row 0 holds fewer finite logits than k, so -inf entries (probability 0) are returned.
    topk_case("edge", "-inf entries, fewer finite logits than k", 7, 1023, 50, "ninf"),
    topk_case("precision", "logits x100 (overflow without max subtraction)", 7, 50257, 8, "x100"),
    topk_case("precision", "logits x100 over the Qwen vocabulary", 1, 151936, 8, "x100"),
    # Near-uniform rows: every probability ~1/V, so the denominator's summation error shows directly.
    topk_case("precision", "near-uniform row: the sum of 151936 terms", 3, 151936, 50, "flat"),
    # 1024 x 151936 float32 is 622 MB, 10x the H200's L2: the kernel streams from memory as at 4096 rows, while the
    # input still crosses the wire to the sandbox and fits its 4 GiB data cap.
    # Timed in the child (see drive): its limit also covers compiling the Triton reference on first use.
    topk_case(
        "speed", "time against torch softmax + topk and the read-once floor", 1024, 151936, 8, speed=True, timeout_s=300
    ),
    topk_case("speed", "time over the GPT-2 vocabulary", 4096, 50257, 8, speed=True, timeout_s=300),
)


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Float32 logits (rows, V): N(0, 3^2) by default; the case's kind shapes them (see CASES)."""
    p = case.params
    if p.get("build"):
        return {}
    rows, v, kind = p["rows"], p["V"], p["kind"]
    if kind == "equal":  # one constant per row, different across rows
        return {"logits": np.repeat(np.linspace(-1.0, 1.0, rows, dtype=np.float32)[:, None], v, axis=1)}
    x = rng.standard_normal((rows, v), dtype=np.float32)
    if kind == "quantised":  # multiples of 0.5: dozens of equal values around the k-th largest
        x = np.round(x * 4.0) / np.float32(2.0)
    elif kind == "x100":
        x *= np.float32(100.0)
    elif kind == "flat":
        x *= np.float32(1e-3)
    else:
        x *= np.float32(3.0)
    if kind == "ninf":
        x[rng.random((rows, v)) < 0.6] = -np.inf
        x[:, 0] = -np.inf  # the first element a thread sees is -inf: its running max must not turn into NaN
        keep = rng.choice(np.arange(1, v), size=p["k"] // 2, replace=False)
        x[0] = -np.inf
        x[0, keep] = rng.standard_normal(keep.size, dtype=np.float32) * np.float32(3.0)
    return {"logits": np.ascontiguousarray(x, dtype=np.float32)}


def topk_probs(x: np.ndarray, k: int, dtype: type = np.float64, chunk: int = 256) -> np.ndarray:
    """Softmax probabilities of each row's k largest logits, largest first, computed in ``dtype`` (max subtracted).

    In float64 it is the oracle; in float32 the same-precision baseline of the tolerance. Rows go in chunks so that a
    (4096, 50257) input never needs a float64 copy of the whole.
    """
    out = np.empty((x.shape[0], k), dtype=dtype)
    for start in range(0, x.shape[0], chunk):
        c = x[start : start + chunk].astype(dtype)
        m = c.max(axis=1, keepdims=True)
        total = np.exp(c - m).sum(axis=1, keepdims=True)
        top = -np.sort(-np.partition(c, c.shape[1] - k, axis=1)[:, c.shape[1] - k :], axis=1)
        out[start : start + chunk] = np.exp(top - m) / total
    return out


def bound_for(tolerance: Tolerance, want: np.ndarray, baseline: np.ndarray, dtype: str | None) -> Bound:
    """Resolve a :class:`Tolerance` (outputs are probabilities, so the floor's scale is 1)."""
    baseline_error = float(np.max(np.abs(baseline.astype(np.float64) - want))) if want.size else 0.0
    atol = max(tolerance.atol_floor, tolerance.baseline_factor * baseline_error)
    return Bound(atol=atol, rtol=tolerance.rtol, dtype=dtype)


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """The scores for the tie rule, the float64 top-k probabilities and their mass; on speed cases the floor check."""
    if case.params.get("build"):
        return Expected({}, {})
    x, k = inputs["logits"], case.params["k"]
    probs = topk_probs(x, k)
    baseline = topk_probs(x, k, np.float32)
    mass = probs.sum(axis=1)
    values: dict[str, Any] = {"indices": x, "probs": probs, "mass": mass}
    bounds: dict[str, Any] = {
        "indices": TopK(),
        "probs": bound_for(TOLERANCES["probs"], probs, baseline, "float32"),
        "mass": bound_for(TOLERANCES["mass"], mass, baseline.astype(np.float64).sum(axis=1), None),
    }
    if case.is_speed:
        values["floor_over_time"] = None  # derived in the grader from the child's raw times (read_once_check)
        bounds["floor_over_time"] = AtMost(
            FLOOR_SLACK,
            "read-once floor / measured time (over 1.25: faster than the read-once floor, a measurement error or "
            "a cheat)",
        )
    derive = read_once_check(read_bytes(case.params), copied_bytes(inputs)) if case.is_speed else None
    return Expected(values, bounds, derive=derive)


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Runs in the sandbox child: one call on poisoned outputs; speed cases then time the kernel on the device."""
    x = inputs["logits"]
    rows, v = x.shape
    k = params["k"]
    # Poison: -1 is never an index and NaN never passes, so a row the kernel did not write shows as wrong.
    poisoned = (np.full((rows, k), -1, dtype=np.int32), np.full((rows, k), np.nan, dtype=np.float32))
    result = run.call("softmax_topk", x, rows, v, k, *poisoned, measure=True)
    indices, probs = run.unpack(result, 2, "(indices, probs)")
    outputs = {"indices": indices, "probs": probs, "mass": probs.astype(np.float64).sum(axis=1)}
    if params.get("speed"):
        times = run.call("softmax_topk:timed")  # the same call again, timed on the device (its buffers kept)
        outputs |= {f"time_{name}": np.asarray(t, dtype=np.float64) for name, t in times.items()}
    return outputs


def speed_baselines(torch: Any, runtime: str, logits: Any, rows: int, v: int, k: int, *outputs: Any) -> dict[str, Any]:
    """Runs in the child, on the GPU: what speed cases time beside the submission, as zero-argument launches on the
    same device input (the call's arguments as tensors, ``runtime`` the submission's: only CUDA here): torch's
    unfused softmax then topk, and the grader's Triton kernel when it imports."""
    del runtime, outputs
    x = logits.view(rows, v)
    launches = {"torch": lambda: torch.topk(torch.softmax(x, dim=-1), k, dim=-1)}
    triton = _triton_reference()
    if triton is not None:
        launches["triton"] = lambda: triton.softmax_topk(x, k)
    return launches


def _triton_reference() -> Any:
    """``reference/softmax_topk_triton.py``, loaded by path (the child has dropped the repo from ``sys.path``)."""
    path = Path(__file__).resolve().parent / "softmax_topk_triton.py"
    try:
        spec = importlib.util.spec_from_file_location("_kernelgrade_softmax_topk_triton", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - no Triton, no file yet: the speed figures then leave this row out
        return None
    return module

"""Flash-attention backward: contract, float64 autograd oracle, input generator, tolerances and hidden cases.

Contract (NumPy in, NumPy out; every argument is passed positionally)::

    flash_attention_fwd(Q, K, V, tile_size, causal=True) -> (O, cache)
    flash_attention_bwd(dO, cache, tile_size, causal=True) -> (dQ, dK, dV)

- ``Q, K, V, dO``: arrays of shape (B, H, N, D), float64 or float32; never modified.
- ``cache``: whatever the backward needs, holding at least ``O`` and ``L``, the per-row logsumexp of the scaled
  (and masked) scores, shape (B, H, N). It is found as ``cache["L"]`` / ``cache.L`` (also under the names ``lse`` and
  ``logsumexp``), or as the one (B, H, N) array among the cache's items.
- ``dQ, dK, dV``: shapes of Q, K, V. Judged by value against the bound of the inputs' precision whatever float dtype
  comes back; only the robustness case naming the rule ``float32-stays-float32`` asks float32 to stay float32 (the task
  never did).

The memory case's budget covers the forward and the backward together (the whole ``drive``): what the forward keeps
in the cache counts, so an N x N matrix computed in the forward and walked in the backward is over budget. Its speed
case times the same pair, against the reference's own forward and backward.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from reference.contract import Case, Challenge, ContractError, Expected, Tolerance
from reference.flash_attention import (
    QUERY_BLOCK,
    attention,
    blocked_attention,
    bound_for,
    budgets,
    input_dtype,
    shaped_case,
    strided,
)
from reference.flash_attention import RULES as FORWARD_RULES
from reference.flash_attention import make_inputs as forward_inputs

CHALLENGE = Challenge(
    id="flash_attention_bwd",
    title="Flash-attention backward",
    folder_names=("flash_attention_bwd",),
    entry_points=("flash_attention_fwd", "flash_attention_bwd"),
)

# Each entry point's contract line, as prompts, `kernelgrade check` and skeletons show it (the docstring's lines above
# say the same; the contracts self-test holds them together).
SIGNATURES = {
    "flash_attention_fwd": "flash_attention_fwd(Q, K, V, tile_size, causal=True) -> (O, cache)",
    "flash_attention_bwd": "flash_attention_bwd(dO, cache, tile_size, causal=True) -> (dQ, dK, dV)",
}
# What speed cases are timed against: each entry point's reference function in this module (the NumPy baseline
# the grader runs in a child of its own, beside the submission's).
SPEED_BASELINE = {"flash_attention_fwd": "flash_attention_fwd", "flash_attention_bwd": "flash_attention_bwd"}

TOLERANCES = {
    "float64": Tolerance(
        atol_floor=1e-9,
        rtol=1e-9,
        baseline_factor=3.0,
        reason="gradients sum N products per element in a tile-dependent order; float64 rounding stays near 1e-13 of "
        "the gradient's magnitude, and any real bug (a missed tile, an overwrite) errs by 1e-2 or more",
    ),
    "float32": Tolerance(
        atol_floor=5e-6,
        rtol=1e-4,
        baseline_factor=3.0,
        reason="at most three times the error of a direct float32 backward on the same input (gradients amplify "
        "rounding more than the forward does), with a floor of a few float32 ulps of the gradient's magnitude",
    ),
}

# The forward's rules (float32 kept, strided inputs), the only ones these cases depend on; no prompt of ours states
# either.
RULES = dict(FORWARD_RULES)

CASES = (
    shaped_case("core", "causal gradients over whole tiles", 1, 2, 256, 64, 64),
    shaped_case("core", "non-causal gradients", 1, 2, 256, 64, 64, causal=False),
    # Eight query tiles: a backward that overwrites dK/dV per query tile keeps only the last one's share.
    shaped_case("core", "dK/dV accumulated across query tiles", 2, 3, 256, 32, 32, causal=False),
    # 300 = 3 * 97 + 9: uneven on both the query side (dQ rows) and the key side (dK/dV rows).
    shaped_case("edge", "uneven final tile, query and key side", 1, 2, 300, 64, 97),
    shaped_case("edge", "uneven final tile without a mask", 1, 2, 300, 64, 97, causal=False),
    shaped_case("edge", "one-row final tile", 1, 1, 1025, 64, 128),
    shaped_case("edge", "sequence shorter than one tile", 1, 2, 40, 64, 64),
    shaped_case("edge", "tile of one element", 1, 1, 33, 16, 1),
    shaped_case("edge", "single token (N = 1)", 1, 2, 1, 64, 64),
    shaped_case("edge", "odd head dim with uneven tiles", 2, 2, 200, 59, 64),
    # Values only, against float32 rounding: the task allows float32 inputs but never says the gradients stay float32.
    shaped_case("precision", "float32 inputs (any float dtype back)", 1, 2, 300, 64, 97, f32=True),
    # exp(S - L) with scores near 1200 overflows unless the stored L is the true logsumexp. The task's own: it asks for
    # the forward's numerically stable online softmax and its logsumexp, which exist for exactly such scores.
    shaped_case("precision", "stored logsumexp with overflow-scale scores", 1, 2, 256, 64, 64, s=300),
    shaped_case("precision", "overflow-scale scores without a mask", 1, 2, 300, 64, 97, causal=False, s=300),
    # Measured over the forward and the backward: an N x N matrix kept in the cache counts.
    shaped_case("memory", "no N x N materialisation in the backward or the cache", 1, 1, 4096, 64, 128, mem=True),
    # The task's N = 4096 and D = 64 with B*H = 2, not 16: a timed request is a forward and a backward (about 3.5 s at
    # 8 heads for the grader's blocked implementation single-threaded), run six times on both sides plus fresh truths;
    # per-row work is per (batch, head), so fewer heads keep the ratio and let the default run fit a 2-core machine.
    shaped_case(
        "speed", "time forward + backward against the grader's fast blocked NumPy attention", 1, 2, 4096, 64, 128,
        speed=True,
    ),
    shaped_case(
        "robustness", "strided (non-contiguous) inputs", 1, 2, 256, 64, 64, rules=("strided-inputs",),
        strided=True,
    ),
    # The precision case's inputs again, now also asking O, dQ, dK, dV to stay float32 (L may be any float dtype).
    shaped_case(
        "robustness", "float32 stays float32 (never stated by the task)", 1, 2, 300, 64, 97,
        rules=("float32-stays-float32",), f32=True, keep=True,
    ),
)  # fmt: skip


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Q, K, V and the upstream gradient dO, all (B, H, N, D); Q and K scaled as in the forward's cases."""
    inputs = forward_inputs(case, rng)
    p = case.params
    inputs["dO"] = rng.standard_normal((p["B"], p["H"], p["N"], p["D"])).astype(input_dtype(case))
    return inputs


def gradients(q: np.ndarray, k: np.ndarray, v: np.ndarray, do: np.ndarray, causal: bool) -> dict[str, np.ndarray]:
    """Direct attention backward in the inputs' precision, vectorised (the baseline): O, L, dQ, dK, dV.

    With P = softmax(S), S = Q K^T * scale: dV = P^T dO, dP = dO V^T, dS = P * (dP - rowsum(dO * O)),
    dQ = dS K * scale, dK = dS^T Q * scale.
    """
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    out, lse = attention(q, k, v, causal)
    scores = (q @ np.swapaxes(k, -1, -2)) * scale
    if causal:
        scores = np.where(np.tri(q.shape[-2], dtype=bool), scores, -np.inf)
    probs = np.exp(scores - lse[..., None])
    d_probs = do @ np.swapaxes(v, -1, -2)
    d_scores = probs * (d_probs - np.sum(do * out, axis=-1, keepdims=True))
    return {
        "O": out,
        "L": lse,
        "dQ": (d_scores @ k) * scale,
        "dK": (np.swapaxes(d_scores, -1, -2) @ q) * scale,
        "dV": np.swapaxes(probs, -1, -2) @ do,
    }


def autograd_oracle(inputs: dict[str, np.ndarray], causal: bool) -> dict[str, np.ndarray]:
    """The float64 truth through torch autograd: O, L, dQ, dK, dV (shapes as in the module docstring)."""
    import torch

    q, k, v = (torch.from_numpy(inputs[n].astype(np.float64)).requires_grad_() for n in "QKV")
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if causal:
        n = q.shape[-2]
        scores = scores.masked_fill(~torch.ones(n, n, dtype=torch.bool).tril(), float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    out.backward(torch.from_numpy(inputs["dO"].astype(np.float64)))
    lse = torch.logsumexp(scores, dim=-1)
    truths = {"O": out, "L": lse, "dQ": q.grad, "dK": k.grad, "dV": v.grad}
    return {name: t.detach().numpy() for name, t in truths.items()}


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """Float64 autograd truths for O, L and the three gradients, each with its bound; the memory budget if any."""
    causal = case.params["causal"]
    q, k, v, do = (inputs[name] for name in ("Q", "K", "V", "dO"))
    if case.is_speed:  # the task's scale: autograd's N x N tensors do not fit; the same formulas by query blocks
        want = blocked_gradients(*(x.astype(np.float64) for x in (q, k, v, do)), causal)
        baseline = want if q.dtype == np.float64 else blocked_gradients(q, k, v, do, causal)
    else:
        want, baseline = autograd_oracle(inputs, causal), gradients(q, k, v, do, causal)
    dtype = input_dtype(case)
    tolerance = TOLERANCES[dtype.name]
    keep = bool(case.params.get("keep"))
    bounds = {name: bound_for(tolerance, want[name], baseline[name], dtype, keep) for name in want}
    # FlashAttention keeps the logsumexp in float32 or wider whatever the input precision: any float dtype is fine.
    bounds["L"] = replace(bounds["L"], dtype=None)
    return Expected(want, bounds, budgets(case))


def blocked_backward(
    cache: dict[str, np.ndarray], do: np.ndarray, causal: bool, block: int = QUERY_BLOCK
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The formulas of :func:`gradients`, one block of query rows at a time (as ``blocked_attention`` does the
    forward): P is recomputed per block from the stored L, dQ is written per block and dK, dV are summed over blocks.
    Nothing N x N exists; masked keys above the diagonal are never multiplied. ``(dQ, dK, dV)``."""
    q, k, v, out, lse = (cache[name] for name in ("Q", "K", "V", "O", "L"))
    n = q.shape[-2]
    scale = q.dtype.type(1.0 / math.sqrt(q.shape[-1]))
    delta = np.sum(do * out, axis=-1)  # rowsum(dO * O), (B, H, N)
    dq, dk, dv = np.empty_like(q), np.zeros_like(k), np.zeros_like(v)
    for start in range(0, n, block):
        stop = min(start + block, n)
        keys = stop if causal else n
        q_rows, do_rows = q[..., start:stop, :], do[..., start:stop, :]
        probs = q_rows @ np.swapaxes(k[..., :keys, :], -1, -2)
        probs *= scale
        if causal:
            above = np.arange(start, stop)[:, None] < np.arange(start, keys)[None, :]
            probs[..., start:keys] = np.where(above, -np.inf, probs[..., start:keys])
        probs -= lse[..., start:stop, None]
        np.exp(probs, out=probs)
        dv[..., :keys, :] += np.swapaxes(probs, -1, -2) @ do_rows
        d_scores = do_rows @ np.swapaxes(v[..., :keys, :], -1, -2)
        d_scores -= delta[..., start:stop, None]
        d_scores *= probs
        dq[..., start:stop, :] = (d_scores @ k[..., :keys, :]) * scale
        dk[..., :keys, :] += (np.swapaxes(d_scores, -1, -2) @ q_rows) * scale
    return dq, dk, dv


def blocked_gradients(q: np.ndarray, k: np.ndarray, v: np.ndarray, do: np.ndarray, causal: bool) -> dict[str, Any]:
    """What :func:`gradients` returns, computed by query blocks (for sizes whose N x N arrays do not fit)."""
    out, lse = blocked_attention(q, k, v, causal)
    dq, dk, dv = blocked_backward({"Q": q, "K": k, "V": v, "O": out, "L": lse}, do, causal)
    return {"O": out, "L": lse, "dQ": dq, "dK": dk, "dV": dv}


# --- the grader's fast implementation as entry points, timed by speed cases (forward + backward per request) ---


def flash_attention_fwd(Q: np.ndarray, K: np.ndarray, V: np.ndarray, tile_size: int, causal: bool = True) -> Any:
    del tile_size  # its own block size
    out, lse = blocked_attention(Q, K, V, causal)
    return out, {"Q": Q, "K": K, "V": V, "O": out, "L": lse}


def flash_attention_bwd(dO: np.ndarray, cache: dict[str, np.ndarray], tile_size: int, causal: bool = True) -> Any:
    del tile_size
    return blocked_backward(cache, dO, causal)


def min_flops(case: Case) -> float:
    """The least arithmetic of the timed pair (see ``reference.flash_attention.min_flops``): the forward's 4 N^2 D and
    the backward's dV = P^T dO, dP = dO V^T, dQ = dS K, dK = dS^T Q at 2 N^2 D each, per (batch, head); a causal mask
    halves it."""
    p = case.params
    flops = 12.0 * p["B"] * p["H"] * p["N"] ** 2 * p["D"]
    return flops / 2 if p["causal"] else flops


# --- runs in the sandbox child ---

_LSE_NAMES = ("L", "lse", "logsumexp", "LSE")


def find_logsumexp(cache: Any, shape: tuple[int, ...]) -> Any:
    """The cache's L: by name (mapping key or attribute), else the one item of shape (B, H, N) (or (B, H, N, 1))."""
    items = dict(cache) if isinstance(cache, Mapping) else None
    if items is None and isinstance(cache, (tuple, list)):
        items = {str(i): x for i, x in enumerate(cache)}
    if items is None:
        items = {name: getattr(cache, name) for name in dir(cache) if not name.startswith("_")}
    for name in _LSE_NAMES:
        if name in items:
            return items[name]
    fits = [x for x in items.values() if tuple(getattr(x, "shape", ())) in (shape, (*shape, 1))]
    if len(fits) != 1:
        raise ContractError(
            f"the cache exposes no L: no key/attribute {_LSE_NAMES} and {len(fits)} items of shape {shape}"
        )
    return fits[0]


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """Forward to get (O, cache), then the backward on the submission's own cache (memory and time cover both)."""
    q, k, v = (strided(inputs[n]) if params.get("strided") else inputs[n] for n in "QKV")
    tile, causal = params["tile"], params["causal"]
    out, cache = run.unpack(run.call("flash_attention_fwd", q, k, v, tile, causal), 2, "(O, cache)")
    lse = find_logsumexp(cache, q.shape[:-1])
    grads = run.call("flash_attention_bwd", inputs["dO"], cache, tile, causal, measure=True)
    dq, dk, dv = run.unpack(grads, 3, "(dQ, dK, dV)")
    return {"O": out, "L": lse, "dQ": dq, "dK": dk, "dV": dv}

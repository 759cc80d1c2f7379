"""Layer-norm backward: contract, float64 oracle, input generator, tolerances and hidden cases.

Contract (NumPy in, NumPy out; every argument is passed positionally, so a submission's defaults, eps included, are
never used)::

    layer_norm_forward(x, gamma, beta, eps) -> (y, cache)      # also accepted: layernorm_forward
    layer_norm_backward(dy, cache) -> (dx, dgamma, dbeta)      # also accepted: layernorm_backward

- ``x, dy``: arrays of shape (B, T, D), float64 or float32; never modified by the calls.
- ``gamma, beta``: arrays of shape (D,), same dtype as ``x``.
- ``eps``: a Python float, added to the variance inside the square root.
- ``y = gamma * (x - mean) / sqrt(var + eps) + beta`` over the last axis, with the biased variance
  ``var = mean((x - mean)**2)``; shape (B, T, D).
- ``cache``: opaque (a tuple, a dict, an object): it never leaves the sandbox, the backward just gets it back.
- ``dx``: shape (B, T, D); ``dgamma, dbeta``: shape (D,), summed over both B and T (a (1, 1, D) keepdims shape is
  accepted as the same D values).

Every case checks all four outputs, the forward's ``y`` included, against a float64 truth. Output dtypes are free
(a float64 result for float32 inputs is judged by its values) except in the one robustness case that asks float32 to
stay float32, which the task never stated. ``RULES`` names what cases depend on beyond the maths above.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from reference.contract import Bound, Case, Challenge, Expected, Tolerance

CHALLENGE = Challenge(
    id="layer_norm_bwd",
    title="Layer-norm backward",
    folder_names=("layer_norm_bwd", "backwards"),
    entry_points=("layer_norm_forward", "layer_norm_backward"),
    aliases={"layer_norm_forward": ("layernorm_forward",), "layer_norm_backward": ("layernorm_backward",)},
)

# Each entry point's contract line, as prompts, `kernelgrade check` and skeletons show it (the docstring's lines above
# say the same; the contracts self-test holds them together).
SIGNATURES = {
    "layer_norm_forward": "layer_norm_forward(x, gamma, beta, eps) -> (y, cache)",
    "layer_norm_backward": "layer_norm_backward(dy, cache) -> (dx, dgamma, dbeta)",
}
# What speed cases are timed against: each entry point's reference function in this module (the NumPy baseline
# the grader runs in a child of its own, beside the submission's).
SPEED_BASELINE = {"layer_norm_forward": "layer_norm_forward", "layer_norm_backward": "layer_norm_backward"}

TOLERANCES = {
    "float64": Tolerance(
        atol_floor=1e-10,
        rtol=1e-10,
        baseline_factor=3.0,
        reason="on ordinary rows a float64 layer norm differs from the truth by rounding only (about 1e-15 of each "
        "output's magnitude), so 1e-10 admits any summation order; on rows whose mean dwarfs their spread the input "
        "fixes x - mean only to about u * |x| / std (1e-8 of xhat at offset 1e4, std 1e-4), and there the bound is "
        "three times the error of the least accurate direct implementation in BASELINES. Real bugs err by far "
        "more: a missing mean term by several percent of dx, eps outside the root by ~1e-5, a one-pass variance on "
        "offset rows by 100%",
    ),
    "float32": Tolerance(
        atol_floor=1e-6,
        rtol=1e-5,
        baseline_factor=3.0,
        reason="float32 rounding of the row reductions and of the batch sums in dgamma/dbeta: at most three times the "
        "error of the least accurate direct float32 implementation in BASELINES on the same input, with a floor of a "
        "few float32 ulps of each output's magnitude",
    ),
}


@dataclass(frozen=True)
class Baselines:
    """Which same-precision implementations set the ``baseline_factor`` part of a bound, and why."""

    methods: tuple[str, ...]
    reason: str


BASELINES = Baselines(
    methods=("pairwise", "recursive", "welford"),
    reason="the three textbook ways to get a row's statistics: a two-pass mean and variance with NumPy's pairwise "
    "sums, the same with left-to-right sums (explicit loops), and Welford's update. On offset and constant rows the "
    "last two err 5 to 40 times more than the first, so the baseline error is the largest of the three and "
    "summation order alone never fails a submission. Over 20 seeds torch's layer_norm, a blocked Chan merge, "
    "einsum reductions and the staged dvar/dmu backward stayed under 0.45 of every bound; a one-pass variance "
    "failed the offset rows (NaN) and the constant rows (1e4x the bound)",
)


def _num(value: float) -> str:
    """A compact number for case ids: 256, 1, 1e-5, 1e4."""
    if float(value).is_integer() and abs(value) < 1e4:
        return str(int(value))
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def shaped_case(
    category: str, guards: str, b: int, t: int, d: int, eps: float = 1e-5, rules: tuple[str, ...] = (), **extra: Any
) -> Case:
    """A case whose id spells its shape, eps and tags (``b2-t32-d1024-eps1e-12-off1e4-std1e-4``); float32 if ``f32``."""
    tags = "".join(f"-{key}" if value is True else f"-{key}{_num(value)}" for key, value in extra.items())
    case_id = f"b{b}-t{t}-d{d}-eps{_num(eps)}{tags}"
    dtype = "float32" if extra.get("f32") else "float64"
    params = {"B": b, "T": t, "D": d, "eps": eps, "dtype": dtype, **extra}
    return Case(case_id, category, guards, params, rules)


# Rules beyond layer norm's maths that cases depend on. Our prompt states eps-argument; no prompt of ours states the
# other two (never scored). A prompt that names no entry point may leave eps to the submission: a hard-coded eps is
# then no fault, and only the cases whose eps is not PyTorch's default (1e-5) depend on the rule.
RULES = {
    "eps-argument": "eps is an argument of the forward and used as given (cases with an eps other than 1e-5, "
    "PyTorch's default, depend on it)",
    "float32-stays-float32": "float32 inputs give float32 outputs (the task allows float32, never says the outputs "
    "keep it)",
    "strided-inputs": "x and dy may be non-contiguous views (a (T, B, D) buffer seen as (B, T, D))",
}
EPS = ("eps-argument",)

CASES = (
    shaped_case("core", "forward and backward on ordinary rows (B, T > 1)", 2, 64, 256),
    # B != T: a reduction over the wrong batch axis, or over one of them only, cannot give the right (D,) sums.
    shaped_case("core", "dgamma and dbeta summed over both batch axes", 4, 8, 512),
    # Each row gets its own mean (std 3) and spread (0.5 to 2): statistics broadcast along the wrong axis show.
    # B = 3, T = 17: 51 rows, odd and prime, so no row count divides into blocks evenly.
    shaped_case("core", "rows with their own nonzero mean and spread", 3, 17, 768, shifted=True),
    # D = 1: every row is constant, x - mean = 0, so y = beta, dx = 0 and rstd = 1/sqrt(eps) is eps's alone.
    shaped_case("edge", "D = 1 (every row constant)", 2, 8, 1),
    # 1023 = 2**10 - 1: catches block sizes or vector widths assumed to divide D.
    shaped_case("edge", "odd D (1023)", 2, 16, 1023),
    shaped_case("edge", "T = 1 (one position per sequence)", 4, 1, 256),
    shaped_case("edge", "one row (B = T = 1): dgamma needs no batch sum", 1, 1, 64),
    # Constants of magnitude ~100: var = 0 exactly, dx = (g - mean(g)) / sqrt(eps), about 300x g; a one-pass
    # E[x^2] - E[x]^2 leaves ~1e-12 of cancellation noise in the variance, 1e-7 of eps.
    shaped_case("edge", "constant rows: variance 0, eps decides", 2, 50, 768, const=True),
    # eps = 1 is comparable to the variance: it must sit inside the root and cannot be a submission's own default.
    shaped_case("edge", "large eps (1.0) honoured inside the square root", 2, 32, 256, eps=1.0, rules=EPS),
    # std 1e-3 gives var 1e-6: eps = 1e-12 is negligible, any default eps (1e-5 .. 1e-8) or clamp is not.
    shaped_case("edge", "tiny eps (1e-12) with small-variance rows", 2, 32, 256, eps=1e-12, rules=EPS, std=1e-3),
    # Offset rows: the variance (1e-8 here, 1e-4 below) is under the rounding of E[x^2] (ulp(1e8) ~ 1.5e-8,
    # ulp(1e12) ~ 1.2e-4), so a one-pass variance keeps no correct digit and is often negative; a two-pass one
    # keeps ~8 digits. D = 1024 makes the row sums long enough for summation order to matter.
    # eps = 1e-12 keeps the variance, not eps, in charge of rstd, so these depend on eps being passed.
    shaped_case(
        "precision",
        "mean offset 1e4 with std 1e-4: two-pass variance",
        2,
        32,
        1024,
        eps=1e-12,
        rules=EPS,
        off=1e4,
        std=1e-4,
    ),
    shaped_case(
        "precision",
        "mean offset 1e6 with std 1e-2: two-pass variance",
        2,
        32,
        1024,
        eps=1e-12,
        rules=EPS,
        off=1e6,
        std=1e-2,
    ),
    # Any float dtype back; judged against float32 rounding (the task never says float32 must stay float32).
    # D = 1023 again: float32 row sums of odd length, where vectorised and scalar tails both run.
    shaped_case("precision", "float32 inputs (any float dtype back)", 2, 64, 1023, f32=True),
    # 4 * 512 * 1024 = 2M elements (16 MiB per float64 array): big enough that per-call overheads vanish.
    shaped_case("speed", "time the backward against the vectorised NumPy reference", 4, 512, 1024, speed=True),
    shaped_case(
        "robustness",
        "float32 stays float32 (never stated by the task)",
        2,
        64,
        1023,
        rules=("float32-stays-float32",),
        f32=True,
        keep=True,
    ),
    # (T, B, D) storage viewed as (B, T, D), the layout of sequence-first activations.
    shaped_case("robustness", "strided (non-contiguous) x and dy", 2, 64, 256, rules=("strided-inputs",), strided=True),
)


def input_dtype(case: Case) -> np.dtype:
    return np.dtype(case.params["dtype"])


def make_inputs(case: Case, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """x and dy of shape (B, T, D), gamma and beta of shape (D,); x's rows as the case's tags ask (see CASES)."""
    p = case.params
    shape = (p["B"], p["T"], p["D"])
    if p.get("const"):
        x = np.repeat(100.0 * rng.standard_normal((*shape[:2], 1)), p["D"], axis=-1)
    elif p.get("shifted"):
        row_mean, row_std = 3.0 * rng.standard_normal((*shape[:2], 1)), rng.uniform(0.5, 2.0, (*shape[:2], 1))
        x = row_mean + row_std * rng.standard_normal(shape)
    else:
        x = p.get("off", 0.0) + p.get("std", 1.0) * rng.standard_normal(shape)
    gamma = 1.0 + 0.5 * rng.standard_normal(p["D"])
    beta = 0.5 * rng.standard_normal(p["D"])
    dy = rng.standard_normal(shape)
    dtype = input_dtype(case)
    return {name: a.astype(dtype) for name, a in (("x", x), ("gamma", gamma), ("beta", beta), ("dy", dy))}


# --- the float64 truth and the same-precision baselines ---


def _row_mean(a: np.ndarray, summation: str) -> np.ndarray:
    """Mean over the last axis (keepdims) with NumPy's pairwise sum or a left-to-right one (``np.cumsum``)."""
    if summation == "recursive":
        return np.cumsum(a, axis=-1)[..., -1:] / a.shape[-1]
    return a.mean(axis=-1, keepdims=True)


def _batch_sum(a: np.ndarray, summation: str) -> np.ndarray:
    """Sum over every axis but the last: the (D,) reduction of dgamma and dbeta."""
    rows = a.reshape(-1, a.shape[-1])
    return np.cumsum(rows, axis=0)[-1] if summation == "recursive" else rows.sum(axis=0)


def _moments(x: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Row mean and biased variance (keepdims): two-pass with the given summation, or Welford's one-pass update."""
    if method != "welford":
        mean = _row_mean(x, method)
        return mean, _row_mean((x - mean) ** 2, method)
    mean = np.zeros((*x.shape[:-1], 1), dtype=x.dtype)
    m2 = np.zeros_like(mean)
    for k in range(x.shape[-1]):  # vectorised over rows, sequential along D
        delta = x[..., k : k + 1] - mean
        mean = mean + delta / (k + 1)
        m2 = m2 + delta * (x[..., k : k + 1] - mean)
    return mean, m2 / x.shape[-1]


def layer_norm(
    x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, dy: np.ndarray, eps: float, method: str = "pairwise"
) -> dict[str, np.ndarray]:
    """A direct layer norm, forward and backward, in the inputs' precision: y, dx, dgamma, dbeta.

    ``method`` is one of ``BASELINES.methods``. With xhat = (x - mean) * rstd, rstd = 1/sqrt(var + eps) and
    g = dy * gamma: dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), dgamma = sum_{B,T} dy * xhat,
    dbeta = sum_{B,T} dy.
    """
    summation = "recursive" if method == "recursive" else "pairwise"
    mean, var = _moments(x, method)
    rstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * rstd
    g = dy * gamma
    dx = rstd * (g - _row_mean(g, summation) - xhat * _row_mean(g * xhat, summation))
    return {
        "y": gamma * xhat + beta,
        "dx": dx,
        "dgamma": _batch_sum(dy * xhat, summation),
        "dbeta": _batch_sum(dy, summation),
    }


def oracle(inputs: dict[str, np.ndarray], eps: float) -> dict[str, np.ndarray]:
    """The float64 truth: y, dx, dgamma, dbeta, with the mean corrected by a second pass over the centred values.

    ``x - mean(x)`` is exact for offset rows (Sterbenz), so its mean is the rounding left in the first mean, and
    subtracting it centres the row to float64 accuracy even where |mean| / std is 1e8; on ordinary rows the correction
    is ~1e-16 and changes nothing. Checked against torch autograd and 40-digit decimals in the self-tests.
    """
    x, gamma, beta, dy = (inputs[n].astype(np.float64) for n in ("x", "gamma", "beta", "dy"))
    first = x - x.mean(axis=-1, keepdims=True)
    centered = first - first.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(centered * centered, axis=-1, keepdims=True) + eps)
    xhat = centered * rstd
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    sum_axes = tuple(range(x.ndim - 1))
    return {"y": gamma * xhat + beta, "dx": dx, "dgamma": (dy * xhat).sum(sum_axes), "dbeta": dy.sum(sum_axes)}


def baseline_errors(inputs: dict[str, np.ndarray], eps: float, want: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output, the largest max error of the direct implementations in BASELINES, in the inputs' precision."""
    args = (inputs["x"], inputs["gamma"], inputs["beta"], inputs["dy"], eps)
    errors = dict.fromkeys(want, 0.0)
    for method in BASELINES.methods:
        got = layer_norm(*args, method=method)
        for name, truth in want.items():
            err = float(np.max(np.abs(got[name].astype(np.float64) - truth))) if truth.size else 0.0
            errors[name] = max(errors[name], err)
    return errors


def expected(case: Case, inputs: dict[str, np.ndarray]) -> Expected:
    """Float64 truths of y, dx, dgamma and dbeta, each with its bound (float32 kept only in the ``keep`` case)."""
    eps = case.params["eps"]
    want = oracle(inputs, eps)
    tolerance = TOLERANCES[input_dtype(case).name]
    dtype = input_dtype(case).name if case.params.get("keep") else None
    errors = baseline_errors(inputs, eps, want)
    bounds = {}
    for name, truth in want.items():
        scale = max(1.0, float(np.max(np.abs(truth))) if truth.size else 1.0)
        atol = max(tolerance.atol_floor * scale, tolerance.baseline_factor * errors[name])
        bounds[name] = Bound(atol=atol, rtol=tolerance.rtol, dtype=dtype)
    return Expected(want, bounds)


# --- the vectorised baseline as entry points, timed by speed cases ---


def layer_norm_forward(x: np.ndarray, gamma: np.ndarray, beta: np.ndarray, eps: float) -> tuple[np.ndarray, Any]:
    centered = x - x.mean(axis=-1, keepdims=True)
    rstd = 1.0 / np.sqrt(np.mean(centered * centered, axis=-1, keepdims=True) + eps)
    xhat = centered * rstd
    return gamma * xhat + beta, {"xhat": xhat, "rstd": rstd, "gamma": gamma}


def layer_norm_backward(dy: np.ndarray, cache: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xhat, rstd, gamma = cache["xhat"], cache["rstd"], cache["gamma"]
    g = dy * gamma
    dx = rstd * (g - g.mean(axis=-1, keepdims=True) - xhat * np.mean(g * xhat, axis=-1, keepdims=True))
    sum_axes = tuple(range(dy.ndim - 1))
    return dx, (dy * xhat).sum(sum_axes), dy.sum(sum_axes)


# --- runs in the sandbox child ---


def strided(a: np.ndarray) -> np.ndarray:
    """The same values as a (B, T, D) view of (T, B, D) storage."""
    return np.ascontiguousarray(a.transpose(1, 0, 2)).transpose(1, 0, 2)


def _param_grad(value: Any, d: int) -> Any:
    """dgamma/dbeta as (D,): a keepdims (1, 1, D) array holds the same D values, so it is flattened, nothing else."""
    if isinstance(value, np.ndarray) and value.size == d and value.shape != (d,):
        return value.reshape(d)
    return value


def drive(run: Any, inputs: dict[str, np.ndarray], params: dict[str, Any]) -> dict[str, Any]:
    """The forward on x, then the measured backward on the submission's own cache."""
    x, dy = (strided(inputs[n]) if params.get("strided") else inputs[n] for n in ("x", "dy"))
    forward = run.call("layer_norm_forward", x, inputs["gamma"], inputs["beta"], params["eps"])
    y, cache = run.unpack(forward, 2, "(y, cache)")
    grads = run.call("layer_norm_backward", dy, cache, measure=True)
    dx, dgamma, dbeta = run.unpack(grads, 3, "(dx, dgamma, dbeta)")
    d = params["D"]
    return {"y": y, "dx": dx, "dgamma": _param_grad(dgamma, d), "dbeta": _param_grad(dbeta, d)}

"""The one comparator: a submission's output against a float64 truth, with diagnostics a person can act on.

An element passes when ``|got - want| <= atol + rtol * |want|``; the bound ratio is the largest
``|got - want| / (atol + rtol * |want|)`` over all elements, so a ratio at or under 1 passes and the ratio says by how
much a failure missed. NaN or infinity in the output never passes (a NaN must not act as a wildcard); where the truth
is finite, the message says "non-finite (NaN/Inf)", a failure of its own kind rather than an error over the bound
(``nonfinite`` counts those elements). All values in a :class:`Comparison` are plain Python, ready to travel through
xdist.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reference.contract import AtMost, Bound, Exact, TopK, Verified

MAX_LISTED = 5  # mismatching elements listed with their index and both values


@dataclass(frozen=True)
class Comparison:
    """The verdict on one named output (or one measured budget, such as memory)."""

    name: str
    passed: bool
    message: str
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    bound_ratio: float | None = None
    atol: float | None = None
    rtol: float | None = None
    mismatches: int = 0
    total: int = 0
    nan: int = 0
    inf: int = 0
    first_mismatches: list[dict[str, Any]] = field(default_factory=list)
    # NaN or infinite output elements where the truth is finite: a worse failure than an error over the bound, named
    # apart in the message and in the reports' trap tables.
    nonfinite: int = 0

    @property
    def headline(self) -> str:
        """The message without the listed elements (they follow as "; at (i, j) got x want y", see _message)."""
        return self.message.split("; at (", 1)[0]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compare(name: str, got: Any, want: np.ndarray, bound: Bound) -> Comparison:
    """Compare ``got`` with ``want`` under ``bound``: shape and dtype first, then non-finite values, then errors."""
    if not isinstance(got, np.ndarray):
        return Comparison(name, False, f"{name}: expected an array, got {type(got).__name__}")
    if got.shape != want.shape:
        return Comparison(name, False, f"{name}: shape {got.shape}, expected {want.shape}")
    if got.dtype.name != (bound.dtype or got.dtype.name) or got.dtype.kind != "f":
        return Comparison(name, False, f"{name}: dtype {got.dtype.name}, expected {bound.dtype or 'a float dtype'}")
    got64 = got.astype(np.float64)
    finite = np.isfinite(got64)
    nan, inf = int(np.isnan(got64).sum()), int(np.isinf(got64).sum())
    nonfinite = int((~finite & np.isfinite(want)).sum())
    abs_err = np.abs(got64 - want)
    allowed = bound.atol + bound.rtol * np.abs(want)
    bad = ~(abs_err <= allowed)  # NaN compares False, so NaN elements count as mismatches
    total, mismatches = int(want.size), int(bad.sum())
    # Error statistics over the finite elements; non-finite ones are counted separately and always fail.
    err = np.where(finite, abs_err, 0.0)
    max_abs = float(err.max()) if total else 0.0
    with np.errstate(over="ignore"):  # a huge error over a tiny truth is +inf relative error, which is what it is
        max_rel = float((err / np.maximum(np.abs(want), np.finfo(np.float64).tiny)).max()) if total else 0.0
    ratio = float("inf") if nan or inf else float((err / allowed).max()) if total else 0.0
    listed = (
        [
            {"index": [int(i) for i in idx], "got": _plain(got64[idx]), "want": _plain(want[idx])}
            for idx in zip(*np.nonzero(bad), strict=True)
        ][:MAX_LISTED]
        if mismatches
        else []
    )
    passed = mismatches == 0 and nan == 0 and inf == 0
    return Comparison(
        name,
        passed,
        _message(name, passed, mismatches, total, (nan, inf, nonfinite), max_abs, ratio, bound, listed),
        max_abs,
        max_rel,
        ratio,
        bound.atol,
        bound.rtol,
        mismatches,
        total,
        nan,
        inf,
        listed,
        nonfinite,
    )


def _plain(x: np.floating) -> float | str:
    """A float for JSON, or its text for NaN and infinities (JSON has no literal for them)."""
    value = float(x)
    return value if np.isfinite(value) else str(value)


def _message(
    name: str,
    passed: bool,
    mismatches: int,
    total: int,
    counts: tuple[int, int, int],
    max_abs: float,
    ratio: float,
    bound: Bound,
    listed: list[dict[str, Any]],
) -> str:
    """The headline says the kind of failure first: non-finite (NaN/Inf) where the truth is finite, else non-finite
    where the truth is too (it never passes either), else the error against the bound."""
    nan, inf, nonfinite = counts
    bound_text = f"atol {bound.atol:.3g}, rtol {bound.rtol:.3g}"
    if nonfinite:
        head = f"{name}: non-finite (NaN/Inf) where the truth is finite: {nan} NaN and {inf} inf among {total} elements"
    elif nan or inf:
        head = f"{name}: {nan} NaN and {inf} inf among {total} elements (non-finite output never passes)"
    else:
        head = f"{name}: max abs err {max_abs:.3g}, {ratio:.3g}x the bound ({bound_text})"
    if passed:
        return head
    parts = [head, f"{mismatches} of {total} elements outside"]
    parts += [f"at {tuple(m['index'])} got {m['got']} want {m['want']}" for m in listed[:2]]
    return "; ".join(parts)


def compare_budget(name: str, measured: float | None, budget: float) -> Comparison:
    """A measured quantity (peak allocation) against its budget; ``bound_ratio`` is measured / budget."""
    if measured is None:
        return Comparison(name, False, f"{name}: not measured")
    ratio = measured / budget
    passed = ratio <= 1.0
    verdict = "within" if passed else "over"
    message = (
        f"{name}: peak {measured / 2**20:.1f} MiB, {verdict} the budget of {budget / 2**20:.1f} MiB ({ratio:.2f}x)"
    )
    return Comparison(name, passed, message, bound_ratio=ratio, total=1, mismatches=0 if passed else 1)


def compare_exact(name: str, got: Any, want: np.ndarray, bound: Exact) -> Comparison:
    """Discrete outputs element for element; with ``bound.unit`` also how many rows along axis 0 matched entirely."""
    if not isinstance(got, np.ndarray):
        return Comparison(name, False, f"{name}: expected an array, got {type(got).__name__}")
    if got.shape != want.shape:
        return Comparison(name, False, f"{name}: shape {got.shape}, expected {want.shape}")
    if got.dtype.kind == "f" and not np.all(np.isfinite(got) & (got == np.round(got))):
        return Comparison(name, False, f"{name}: float values that are not whole numbers (dtype {got.dtype.name})")
    if got.dtype.kind not in "biuf":
        return Comparison(name, False, f"{name}: dtype {got.dtype.name}, expected integers")
    bad = got.astype(np.int64) != np.asarray(want).astype(np.int64)
    total, mismatches = int(bad.size), int(bad.sum())
    listed = [
        {"index": [int(i) for i in idx], "got": int(got[idx]), "want": int(want[idx])}
        for idx in zip(*np.nonzero(bad), strict=True)
    ][:MAX_LISTED]
    if bound.unit and want.ndim:
        rows_bad = bad.reshape(bad.shape[0], -1).any(axis=1) if bad.size else np.zeros(want.shape[0], bool)
        head = f"{name}: {want.shape[0] - int(rows_bad.sum())}/{want.shape[0]} {bound.unit}s matched"
    else:
        head = f"{name}: {total - mismatches}/{total} elements equal"
    parts = [head] + [f"at {tuple(m['index'])} got {m['got']} want {m['want']}" for m in listed[:2]]
    ratio = 0.0 if not mismatches else float("inf")
    return Comparison(
        name,
        not mismatches,
        "; ".join(parts),
        bound_ratio=ratio,
        mismatches=mismatches,
        total=total,
        first_mismatches=listed,
    )


def compare_topk(name: str, got: Any, scores: np.ndarray, bound: TopK) -> Comparison:
    """Top-k indices per row against the row's scores, under the tie rule of :class:`TopK` (no reference index set
    is imposed: any set the rule accepts passes). ``bound_ratio`` is 0 when every row passes, else infinity."""
    if not isinstance(got, np.ndarray):
        return Comparison(name, False, f"{name}: expected an array, got {type(got).__name__}")
    rows, width = scores.shape
    if got.ndim != 2 or got.shape[0] != rows:
        return Comparison(name, False, f"{name}: shape {got.shape}, expected ({rows}, k)")
    if got.dtype.kind not in "iu":
        return Comparison(name, False, f"{name}: dtype {got.dtype.name}, expected integers")
    k = got.shape[1]
    idx = got.astype(np.int64)
    reasons = np.full(rows, "", dtype=object)
    in_range = (idx >= 0) & (idx < width)
    reasons[~in_range.all(axis=1)] = "index out of range"
    ordered = np.sort(idx, axis=1)
    repeated = (ordered[:, 1:] == ordered[:, :-1]).any(axis=1) if k > 1 else np.zeros(rows, bool)
    reasons[(reasons == "") & repeated] = "repeated index"
    picked = np.take_along_axis(scores, np.clip(idx, 0, width - 1), axis=1)
    kth = np.partition(scores, width - k, axis=1)[:, width - k] if 0 < k <= width else np.full(rows, np.inf)
    below = (picked < kth[:, None]).any(axis=1)
    reasons[(reasons == "") & below] = "an index whose score is below the k-th largest"
    missed = (picked > kth[:, None]).sum(axis=1) != (scores > kth[:, None]).sum(axis=1)
    reasons[(reasons == "") & missed] = "misses an index whose score is above the k-th largest"
    unordered = (picked[:, 1:] > picked[:, :-1]).any(axis=1)  # -inf beside -inf is in order (no inf - inf)
    reasons[(reasons == "") & unordered] = "not in descending order of score"
    bad_rows = np.nonzero(reasons != "")[0]
    listed = [
        {"index": [int(row)], "got": [int(i) for i in idx[row, :8]], "want": str(reasons[row])} for row in bad_rows
    ][:MAX_LISTED]
    head = f"{name}: {rows - len(bad_rows)}/{rows} {bound.unit}s matched (exact up to ties)"
    parts = [head] + [f"{bound.unit} {m['index'][0]}: {m['want']}" for m in listed[:2]]
    return Comparison(
        name,
        not len(bad_rows),
        "; ".join(parts),
        bound_ratio=float("inf") if len(bad_rows) else 0.0,
        mismatches=len(bad_rows),
        total=rows,
        first_mismatches=listed,
    )


def compare_at_most(name: str, got: Any, bound: AtMost) -> Comparison:
    """A scalar figure the grader measured or derived (never the child's own) against its limit; ``bound_ratio`` is
    figure / limit."""
    try:
        value = float(np.asarray(got).reshape(-1)[0]) if np.asarray(got).size == 1 else None
    except (TypeError, ValueError):
        value = None
    if value is None or not np.isfinite(value):
        return Comparison(name, False, f"{name}: {bound.what} not measured")
    ratio = value / bound.limit if bound.limit else (0.0 if value <= 0 else float("inf"))
    passed = value <= bound.limit
    message = f"{name}: {bound.what} {value:.4g}, {'within' if passed else 'over'} the limit of {bound.limit:.4g}"
    return Comparison(name, passed, message, bound_ratio=ratio, total=1, mismatches=0 if passed else 1)


def compare_verified(name: str, reasons: Any, bound: Verified) -> Comparison:
    """A property the grader recomputed row by row (``Expected.derive``): ``reasons`` holds "" for each row where it
    holds, else what is wrong in words; ``bound_ratio`` is 0 when every row holds, else infinity."""
    if not isinstance(reasons, (list, tuple)) or not all(isinstance(r, str) for r in reasons):
        return Comparison(name, False, f"{name}: not verified (the grader could not read the output)")
    bad = [(row, reason) for row, reason in enumerate(reasons) if reason]
    listed = [{"index": [row], "got": reason, "want": "holds"} for row, reason in bad][:MAX_LISTED]
    head = f"{name}: {len(reasons) - len(bad)}/{len(reasons)} {bound.unit}s hold"
    parts = [head] + [f"{bound.unit} {m['index'][0]}: {m['got']}" for m in listed[:2]]
    return Comparison(
        name,
        not bad,
        "; ".join(parts),
        bound_ratio=float("inf") if bad else 0.0,
        mismatches=len(bad),
        total=len(reasons),
        first_mismatches=listed,
    )


def check(name: str, got: Any, want: Any, bound: Bound | Exact | AtMost | TopK | Verified) -> Comparison:
    """The comparison a bound asks for: floats within a :class:`Bound`, discrete values :class:`Exact`, a measured
    figure :class:`AtMost` its limit, top-k indices :class:`TopK` of their scores up to ties, a recomputed property
    :class:`Verified` row by row. Every output of every challenge goes through here."""
    if isinstance(bound, Exact):
        return compare_exact(name, got, want, bound)
    if isinstance(bound, AtMost):
        return compare_at_most(name, got, bound)
    if isinstance(bound, TopK):
        return compare_topk(name, got, want, bound)
    if isinstance(bound, Verified):
        return compare_verified(name, got, bound)
    return compare(name, got, want, bound)

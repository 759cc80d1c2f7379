"""The one comparator: bounds, diagnostics, and the cases where it must refuse to pass."""

from __future__ import annotations

import numpy as np
import pytest

from plugins.compare.comparator import compare, compare_budget
from reference.contract import Bound

BOUND = Bound(atol=1e-6, rtol=1e-6, dtype="float64")


def test_within_bound_passes_with_ratio_under_one():
    """Errors inside atol + rtol*|want| pass, and the ratio says how close they came."""
    want = np.linspace(-1, 1, 50)
    got = want + 5e-7
    result = compare("O", got, want, BOUND)
    assert result.passed and 0.2 < result.bound_ratio < 0.5
    assert result.max_abs_err == pytest.approx(5e-7, rel=1e-6)


def test_mismatch_lists_indices_and_both_values():
    """A failure names how many elements missed, where, and both values."""
    want = np.zeros((2, 3))
    got = want.copy()
    got[1, 2] = 0.5
    result = compare("O", got, want, BOUND)
    assert not result.passed and result.mismatches == 1 and result.total == 6
    assert result.first_mismatches == [{"index": [1, 2], "got": 0.5, "want": 0.0}]
    assert result.bound_ratio == pytest.approx(0.5 / 1e-6)
    assert "(1, 2)" in result.message and "0.5" in result.message


@pytest.mark.parametrize("poison", [np.nan, np.inf])
def test_non_finite_output_never_passes(poison):
    """NaN must not act as a wildcard, even where the truth is NaN-free and the rest is exact."""
    want = np.ones(10)
    got = want.copy()
    got[3] = poison
    result = compare("O", got, want, Bound(atol=1e9, rtol=1e9, dtype="float64"))
    assert not result.passed
    assert result.nan + result.inf == 1 and result.nonfinite == 1


@pytest.mark.parametrize("poison", [np.nan, np.inf, -np.inf])
def test_non_finite_output_is_named_apart_from_an_error_over_the_bound(poison):
    """Severity in the words: NaN/Inf where the truth is finite says "non-finite (NaN/Inf)" first, never an error
    ratio; a finite output over the bound never says it."""
    want = np.ones(10)
    got = want.copy()
    got[3] = poison
    result = compare("O", got, want, Bound(atol=1e-9, rtol=0, dtype="float64"))
    assert result.headline.startswith("O: non-finite (NaN/Inf) where the truth is finite: ")
    assert "x the bound" not in result.headline
    got[3] = 2.0
    over = compare("O", got, want, Bound(atol=1e-9, rtol=0, dtype="float64"))
    assert "non-finite" not in over.message and over.nonfinite == 0 and "x the bound" in over.message


def test_shape_and_dtype_mismatch_are_clear_messages():
    """Wrong shape or dtype fails before any arithmetic, with a message naming both."""
    want = np.zeros((2, 3))
    assert "shape (3, 2), expected (2, 3)" in compare("O", np.zeros((3, 2)), want, BOUND).message
    assert "dtype float32, expected float64" in compare("O", np.zeros((2, 3), np.float32), want, BOUND).message
    assert "expected an array" in compare("O", None, want, BOUND).message


def test_any_float_dtype_when_bound_leaves_it_open():
    """A bound without a dtype accepts float32 and float64 alike, but not integers."""
    want = np.ones(4)
    loose = Bound(atol=1e-3, rtol=0, dtype=None)
    assert compare("L", np.ones(4, np.float32), want, loose).passed
    assert not compare("L", np.ones(4, np.int64), want, loose).passed


def test_metrics_are_plain_python_values():
    """Everything in a comparison is a builtin, so it survives xdist's execnet serialisation."""
    want = np.arange(6.0).reshape(2, 3)
    result = compare("O", want + 1, want, BOUND).to_dict()

    def builtin(value):
        if isinstance(value, dict):
            return all(builtin(v) for v in value.values())
        if isinstance(value, list):
            return all(builtin(v) for v in value)
        return value is None or type(value) in (bool, int, float, str)

    assert builtin(result)


def test_budget_ratio_and_verdict():
    """A peak over its budget fails with the ratio; under it passes."""
    over = compare_budget("peak allocation", 30 * 2**20, 20 * 2**20)
    assert not over.passed and over.bound_ratio == pytest.approx(1.5) and "over the budget" in over.message
    assert compare_budget("peak allocation", 10 * 2**20, 20 * 2**20).passed
    assert not compare_budget("peak allocation", None, 20 * 2**20).passed

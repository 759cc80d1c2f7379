"""Layer-norm backward, parametrized over submissions and the cases in reference/layer_norm_bwd.py."""

from __future__ import annotations

import pytest

from reference import layer_norm_bwd

REFERENCE = layer_norm_bwd  # the parametrizing plugin reads cases and the challenge id from it


def test_layer_norm_bwd(submission, case, run_case):
    """y, dx, dgamma and dbeta match the float64 truth within their bounds."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

"""Flash-attention backward, parametrized over submissions and the cases in reference/flash_attention_bwd.py."""

from __future__ import annotations

import pytest

from reference import flash_attention_bwd

REFERENCE = flash_attention_bwd  # the parametrizing plugin reads cases and the challenge id from it


def test_flash_attention_bwd(submission, case, run_case):
    """O, L, dQ, dK and dV match float64 autograd within their bounds (and the backward's memory budget)."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

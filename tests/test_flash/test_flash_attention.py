"""Flash-attention forward, parametrized over submissions and the cases in reference/flash_attention.py."""

from __future__ import annotations

import pytest

from reference import flash_attention

REFERENCE = flash_attention  # the parametrizing plugin reads cases and the challenge id from it


def test_flash_attention(submission, case, run_case):
    """O matches the float64 oracle within the case's bound (and the memory budget on memory cases)."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

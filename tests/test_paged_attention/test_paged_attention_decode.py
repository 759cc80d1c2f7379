"""Paged-attention decode (CUDA or Triton), parametrized over submissions and the cases in
reference/paged_attention_decode.py."""

from __future__ import annotations

import pytest

from reference import paged_attention_decode

REFERENCE = paged_attention_decode  # the parametrizing plugin reads cases and the challenge id from it


def test_paged_attention_decode(submission, case, run_case):
    """The answer runs (a CUDA answer builds); out matches the float64 gather-and-softmax truth (cases need a GPU)."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

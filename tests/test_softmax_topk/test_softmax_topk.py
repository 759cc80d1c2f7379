"""Fused softmax + top-k (CUDA), parametrized over submissions and the cases in reference/softmax_topk.py."""

from __future__ import annotations

import pytest

from reference import softmax_topk

REFERENCE = softmax_topk  # the parametrizing plugin reads cases and the challenge id from it


def test_softmax_topk(submission, case, run_case):
    """The source builds; indices match up to ties and probabilities the float64 softmax (run cases need a GPU)."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

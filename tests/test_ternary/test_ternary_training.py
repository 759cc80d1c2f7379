"""Ternary training, parametrized over submissions and the cases in reference/ternary_training.py."""

from __future__ import annotations

import pytest

from reference import ternary_training

REFERENCE = ternary_training  # the parametrizing plugin reads cases and the challenge id from it


def test_ternary_training(submission, case, run_case):
    """Each layer of the contract: quantizer, straight-through layer, coverage per weight kind, training figures."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

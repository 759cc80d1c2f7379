"""DFlash tree verification, parametrized over submissions and the cases in reference/dflash_verify.py."""

from __future__ import annotations

import pytest

from reference import dflash_verify

REFERENCE = dflash_verify  # the parametrizing plugin reads cases and the challenge id from it


def test_dflash_verify(submission, case, run_case):
    """Masks, accepted tokens and new tokens are exact, the speculative loop reproduces greedy decoding, and the speed
    case spends one target forward per verification."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

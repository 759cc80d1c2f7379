"""Batched beam search, parametrized over submissions and the cases in reference/beam_search.py."""

from __future__ import annotations

import pytest

from reference import beam_search

REFERENCE = beam_search  # the parametrizing plugin reads cases and the challenge id from it


def test_beam_search(submission, case, run_case):
    """Every item's beams (tokens exactly, scores within 1e-9) equal the spec-faithful reference's."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

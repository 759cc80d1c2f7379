"""KV cache, parametrized over submissions and the cases in reference/kv_cache.py."""

from __future__ import annotations

import pytest

from reference import kv_cache

REFERENCE = kv_cache  # the parametrizing plugin reads cases and the challenge id from it


def test_kv_cache(submission, case, run_case):
    """Prefill and decode logits match the causal recomputation from scratch (and the memory growth limit)."""
    record = run_case(submission, case)
    if not record.passed:
        pytest.fail(record.explain(), pytrace=False)

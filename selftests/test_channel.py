"""The request-time channel: service calls run in the grader and are counted there, checkpoints sample the child's
memory from outside, refusals reach the driver as ValueError, and a request over a cap or past its timeout fails.

A tiny driver (``fixtures/drivers/channel_driver.py``) plays a script from the case's params against a real sandbox.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from conftest import REPO
from plugins.isolate import exchange
from plugins.isolate.sandbox import Limits, Outcome, Program, Sandbox

DRIVER = "selftests.fixtures.drivers.channel_driver"
LIMITS = Limits(call_timeout_s=5, memory_bytes=2 << 30, device="cpu")
X = np.arange(6.0)


def double(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    if arrays["x"].size != X.size:
        raise ValueError(f"want {X.size} values")
    return {"y": 2 * arrays["x"]}


def play(script: list[list[Any]], services: dict[str, Any] | None = None, limits: Limits = LIMITS) -> Outcome:
    sandbox = Sandbox(Program(DRIVER, (("noop", ""),), None), limits, REPO)
    try:
        return sandbox.run({"x": X}, {"script": script}, {}, services=services)
    finally:
        sandbox.close()


def test_services_answer_in_the_grader_and_are_counted_per_name():
    """Three calls of one service and one of another: the answers reach the driver, the grader counts each name."""
    outcome = play(
        [["service", "double", 3], ["service", "echo", 1]], {"double": double, "echo": lambda a: {"y": a["x"]}}
    )
    assert outcome.status == "ok", outcome.message + outcome.traceback
    np.testing.assert_array_equal(outcome.outputs["y"], 7 * X)
    assert outcome.service_calls == {"double": 3, "echo": 1}


def test_refusals_raise_value_error_in_the_child():
    """A service that rejects its arguments, and a name the case does not offer: the driver sees a ValueError; the
    offered service's refused call is still counted."""
    outcome = play([["refusal", "double"]], {"double": lambda a: double({"x": a["x"][:2]})})
    assert outcome.status == "ok" and outcome.outputs["refused"][0] > 0 and outcome.service_calls == {"double": 1}
    outcome = play([["refusal", "missing"]], {})
    assert outcome.status == "ok" and outcome.outputs["refused"][0] > 0 and outcome.service_calls == {}


def test_checkpoints_sample_the_child_from_outside():
    """64 MiB held between two checkpoints shows as 64 MiB more in the grader's second sample (allocator slack
    aside), with the labels in order."""
    outcome = play([["checkpoint", "before", 1], ["hold", 64], ["checkpoint", "after", 1]])
    assert outcome.status == "ok", outcome.message + outcome.traceback
    assert [c["label"] for c in outcome.checkpoints] == ["before", "after"]
    grown = outcome.checkpoints[1]["bytes"] - outcome.checkpoints[0]["bytes"]
    assert 64 * 2**20 <= grown < 68 * 2**20, grown


def test_labels_are_cut_and_made_valid_text():
    """A label the child chose is cut to its cap and loses lone surrogates before it reaches any record."""
    outcome = play([["checkpoint", "\udcff" + "x" * 500, 1]])
    label = outcome.checkpoints[0]["label"]
    assert len(label) == exchange.MAX_LABEL_CHARS and label.encode("utf-8")


def test_a_flood_of_messages_fails_the_request(monkeypatch):
    """Past the cap on messages per request the child is killed and the request fails, named as over the cap."""
    monkeypatch.setattr(exchange, "MAX_MESSAGES", 50)
    outcome = play([["checkpoint", "flood", 51]])
    assert outcome.status == "error" and outcome.kind == "limit" and "service calls and checkpoints" in outcome.message
    assert play([["checkpoint", "fine", 50]]).status == "ok"


def test_an_oversized_call_fails_before_its_arrays_are_read(monkeypatch):
    monkeypatch.setattr(exchange, "MAX_MESSAGE_BYTES", 2**20)
    outcome = play([["bytes", 2]], {"echo": lambda a: {}})
    assert outcome.status == "error" and outcome.kind == "limit" and "per call" in outcome.message


def test_the_timeout_covers_service_calls():
    """A request whose service calls take longer than its timeout in all is timed out, each call being short."""

    def slow(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        time.sleep(0.2)
        return {"y": arrays["x"]}

    # 200 calls of 0.2 s would take 40 s; the 1 s timeout ends the request after about five of them. The bound is
    # half of the 40 s, not the 1 s: the child's start and a loaded CI machine must not decide this test.
    limits = Limits(call_timeout_s=1, memory_bytes=2 << 30, device="cpu")
    start = time.monotonic()
    outcome = play([["service", "slow", 200]], {"slow": slow}, limits)
    assert outcome.status == "timeout" and time.monotonic() - start < 20


@pytest.mark.parametrize("status", ["service", "checkpoint"])
def test_exchange_counts_before_allocating(status):
    """The cap on one call's bytes is checked from the header alone (wire.recv's accept hook)."""
    ledger = exchange.Exchange({}, lambda: 0)
    with pytest.raises(exchange.OverCap):
        ledger.accept({"status": status}, exchange.MAX_MESSAGE_BYTES + 1)
    ledger.accept({"status": "ok"}, exchange.MAX_MESSAGE_BYTES + 1)  # the final answer: the wire's own limits


def test_a_failing_grader_function_ends_the_child():
    """A service that fails in an unexpected way is the grader's error: it propagates, and the child, left waiting for
    an answer, is killed so that the next request starts a fresh one in step."""

    def broken(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise RuntimeError("a bug in the grader")

    sandbox = Sandbox(Program(DRIVER, (("noop", ""),), None), LIMITS, REPO)
    try:
        with pytest.raises(RuntimeError, match="a bug in the grader"):
            sandbox.run({"x": X}, {"script": [["service", "broken", 1]]}, {}, services={"broken": broken})
        assert sandbox.process is None
        outcome = sandbox.run({"x": X}, {"script": [["service", "double", 1]]}, {}, services={"double": double})
        assert outcome.status == "ok" and outcome.service_calls == {"double": 1}
    finally:
        sandbox.close()


def test_grader_functions_run_on_one_blas_thread():
    """Inside a service call the process's BLAS runs one thread, as the child does; the count is restored after."""
    controls = exchange._blas_controls()
    if not controls:
        pytest.skip("no OpenBLAS thread control found in this process (NumPy built against another BLAS)")
    before = [get() for get, _ in controls]
    with exchange.one_blas_thread():
        assert [get() for get, _ in controls] == [1] * len(controls)
    assert [get() for get, _ in controls] == before

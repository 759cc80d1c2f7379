"""``kernelgrade check``: one tiny call of each entry point, under a short limit, after the import.

An import that goes through says nothing about a function that never returns (an infinite loop): a grading run would
wait out ``--call-timeout`` on every case of it. So, in the same sandbox child that imported the files
(:mod:`plugins.cli.probe`), ``check`` sends the smallest core case (by input bytes) that calls each entry point, one
case covering every entry point it calls, and says what came back: an answer (not judged here: correctness is the
grading run's), an error, a crash, or no answer within :data:`TINY_CALL_LIMIT_S` (it hangs). A hang, a crash or
running out of memory makes the folder not ready, and nothing after it is tried (the sandbox had to kill the child);
an error is only shown (the grading run fails that case). Cases that train (their params set ``timeout_s``) or only
build are not tried.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

from plugins.isolate import wire
from plugins.isolate.sandbox import Sandbox
from reference.contract import Case

TINY_CALL_LIMIT_S = 10.0  # a tiny core case answers in well under a second; a hang shows within this
SEED = 0  # the inputs of a tiny call: fixed, since nothing is judged
STOPPED = ("timeout", "crash", "oom")  # the child was killed or died: later calls would only restart it


@dataclass
class TinyCall:
    """One tiny call: the case sent, the entry points it calls, and what came back (``status``: ok, error, crash,
    oom, timeout, wrong, or "not tried" with the reason in ``message``)."""

    case: str
    entries: list[str]
    status: str
    seconds: float = 0.0
    message: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan(reference: ModuleType, entries: list[str], contract: str) -> tuple[list[tuple[Case, list[str]]], list[str]]:
    """(the tiny cases to send, each with the entry points of ``entries`` it calls; the entry points no such case
    calls). Core cases of the submission's contract variant that neither train nor only build, smallest first."""
    cases = [
        c
        for c in reference.CASES
        if c.category == "core" and not c.is_speed and not c.params.get("build") and not c.params.get("timeout_s")
        and (not c.contract or c.contract == contract)
    ]  # fmt: skip
    rng = np.random.default_rng(SEED)
    size = {c.id: sum(getattr(a, "nbytes", 0) for a in reference.make_inputs(c, rng).values()) for c in cases}
    remaining, chosen = list(entries), []
    for case in sorted(cases, key=lambda c: size[c.id]):
        covers = [e for e in remaining if not case.calls or e in case.calls]
        if covers:
            chosen.append((case, covers))
            remaining = [e for e in remaining if e not in covers]
    return chosen, remaining


def call_each(sandbox: Sandbox, reference: ModuleType, entries: list[str], contract: str) -> list[TinyCall]:
    """Send :func:`plan`'s cases to ``sandbox`` (its child already imported the submission), stopping at the first
    that hangs or kills the child (:data:`STOPPED`); entry points no tiny case calls are listed as not tried."""
    chosen, untried = plan(reference, entries, contract)
    calls: list[TinyCall] = []
    for case, covers in chosen:
        if calls and calls[-1].status in STOPPED:
            calls.append(TinyCall(case.id, covers, "not tried", message="an earlier tiny call hung or crashed"))
            continue
        calls.append(_send(sandbox, reference, case, covers))
    if untried:
        calls.append(TinyCall("", untried, "not tried", message="no core case calls it without training or a GPU"))
    return calls


def _send(sandbox: Sandbox, reference: ModuleType, case: Case, covers: list[str]) -> TinyCall:
    """One case, as a grading run sends it (``plugins.isolate.plugin.send``), under the sandbox's short limit."""
    inputs = reference.make_inputs(case, np.random.default_rng(SEED))
    crossing = getattr(reference, "child_inputs", None)
    served = getattr(reference, "services", None)
    child = crossing(case, inputs) if crossing else inputs
    services = served(case, inputs) if served else None
    started = time.perf_counter()
    outcome = sandbox.run(child, dict(case.params), {}, wire.case_caps(inputs), services)
    seconds = time.perf_counter() - started
    if outcome.status == "timeout":
        message = f"no answer within {sandbox.limits.call_timeout_s:g} s: it hangs, or is far too slow for a tiny case"
        return TinyCall(case.id, covers, "timeout", seconds, message)
    return TinyCall(case.id, covers, outcome.status, seconds, outcome.message)

"""Turn what a sandbox returned into a :class:`CaseRecord`: every output through the one comparator, then budgets.

Measured figures (forwards per verification, cache bytes per token) come from the grader's own record of the request
(``Outcome.service_calls``, ``Outcome.checkpoints``) through the reference module's ``measured_figures``; an output of
the same name sent by the child is ignored.

The speed figure is recorded only for outputs that passed: a wrong answer is never timed into a grade.
"""

from __future__ import annotations

from typing import Any

from plugins.base import records as r
from plugins.base.records import Outcome
from plugins.base.wording import speed_words
from plugins.compare import paired
from plugins.compare.comparator import Comparison, check, compare_budget
from plugins.discover.submissions import Submission
from reference.challenges import reference_module
from reference.contract import AtMost, Case, Expected, Verified

_STATUS_OUTCOME = {"timeout": r.TIMEOUT, "crash": r.CRASH, "oom": r.OOM, "left_running": r.LEFT_RUNNING}


def unrunnable(submission: Submission, case: Case, index: int, message: str, outcome: str = r.ERROR) -> r.CaseRecord:
    """The record of a case that never reached a child (no code, an entry point not provided, a build that failed)."""
    return r.CaseRecord.for_case(
        submission.model,
        submission.challenge,
        case,
        index,
        outcome,
        task=submission.challenge_task,
        message=message,
        runtime=submission.interface,
        loaded=submission.describe(),
    )


def judge(
    submission: Submission,
    case: Case,
    case_index: int,
    expected: Expected,
    outcome: Outcome,
    baseline: Outcome | None = None,
) -> r.CaseRecord:
    record = r.CaseRecord.for_case(
        submission.model,
        submission.challenge,
        case,
        case_index,
        r.PASSED,
        task=submission.challenge_task,
        runtime=submission.interface,
        loaded=submission.describe(),
        traceback=outcome.traceback,
        stdout=outcome.stdout,
        stderr=outcome.stderr,
    )
    if record.beyond:  # for_case could not know this case's checks: with them, a wholly governed case is all notes
        record.beyond_checks = r.beyond_checks(submission.challenge, record.beyond, expected.values)
    measured = next((c for c in outcome.calls if c.get("measured")), None)
    if measured is not None:
        record.seconds = measured.get("seconds")
        record.peak_bytes = measured.get("peak_bytes")
    if outcome.status != "ok":
        # A broken contract (wrong output type, modified inputs) is a wrong answer, not a crash of the submission.
        record.outcome = r.WRONG if outcome.kind == "contract" else _STATUS_OUTCOME.get(outcome.status, r.ERROR)
        record.message = outcome.message
        # the grader's own counts hold for a request that failed too: a training that raised at once took 0 steps
        record.details = measured_figures(submission.challenge, case, outcome)[1]
        return record
    # A figure under AtMost or Verified is the grader's own (derived or measured below): one of that name from the
    # child is dropped, so a derivation that finds nothing to work on leaves the check missing, never the child's word.
    owned = {name for name, bound in expected.bounds.items() if isinstance(bound, (AtMost, Verified))}
    outputs = {name: value for name, value in outcome.outputs.items() if name not in owned}
    if expected.derive is not None:  # figures the grader computes itself from what the submission returned
        figures, record.details = expected.derive(outputs)
        outputs = {**outputs, **figures}
    # Figures from the grader's own record of the request; they replace any output of the same name the child sent.
    figures, details = measured_figures(submission.challenge, case, outcome)
    outputs = {**outputs, **figures}
    record.details = {**record.details, **details}
    checks = [check(name, outputs.get(name), want, expected.bounds[name]) for name, want in expected.values.items()]
    if "memory_budget_bytes" in expected.extra:
        checks.append(compare_budget("peak allocation", record.peak_bytes, expected.extra["memory_budget_bytes"]))
    record.checks = [c.to_dict() for c in checks]
    failed = [c for c in checks if not c.passed]
    if failed:
        record.outcome = r.WRONG
        record.message = _summary(failed)
        if "unmeasured" in details:  # a figure the request gave the grader no way to measure, and why
            record.message += f" ({details['unmeasured']})"
    elif case.is_speed and measured is not None and baseline is not None:
        record.speed = speed_figures(measured, baseline)
        if record.speed:  # "3.1× slower than the reference, spread 2% (median ...)"
            record.message = speed_words(record.speed)
    return record


def measured_figures(challenge: str, case: Case, outcome: Outcome) -> tuple[dict[str, Any], dict[str, Any]]:
    """What the challenge's reference module makes of the grader's own measurements of a request (calls per service,
    memory at each checkpoint: ``measured_figures(case, service_calls, checkpoints) -> (figures, details)``), never of
    anything the child computed; nothing when the module measures nothing."""
    figures = getattr(reference_module(challenge), "measured_figures", None)
    if figures is None:
        return {}, {}
    return figures(case, dict(outcome.service_calls), [dict(c) for c in outcome.checkpoints])


def _summary(failed: list[Comparison]) -> str:
    """The worst check's headline (elements listed stay in the checks), then the other outputs that failed."""
    worst = max(failed, key=lambda c: c.bound_ratio if c.bound_ratio is not None else float("inf"))
    others = [c.name for c in failed if c is not worst]
    return worst.headline + (f"; also outside: {', '.join(others)}" if others else "")


def speed_figures(measured: dict[str, Any], baseline: Outcome) -> dict[str, Any] | None:
    """The submission's timed calls against the reference baseline's, trial by trial on the same inputs: the median
    per-trial ratio with its bootstrap interval (``paired.figures``)."""
    base = next((c for c in baseline.calls if c.get("measured")), None)
    if baseline.status != "ok" or base is None or not measured.get("times"):
        return None
    return paired.figures(measured["times"], base["times"])

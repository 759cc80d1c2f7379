"""The typed record of one case of one submission: what ran, how it ended, and the figures that explain the grade;
and the :class:`Outcome` of one request to a sandbox child, which the comparator turns into a record.

Records leave a pytest worker as plain dicts (``to_dict``) inside ``user_properties``: xdist serialises reports with
execnet, which accepts builtins only.

A record is the one gate between what a submission controls and every report: :meth:`CaseRecord.sanitise` (run when a
record is made, read back, turned into a dict or explained) cuts every string to its field's limit (:data:`FIELD_CHARS`,
else :data:`TEXT_CHARS`; :data:`NESTED_CHARS` inside checks, details and the other dicts) and makes it valid UTF-8
(:func:`safe_text`), and turns every nested value into plain JSON values. A lone surrogate, which execnet cannot encode
(one in an exception message stopped a whole ``-n`` run), or a message of megabytes never reaches xdist, the journal or
a report writer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from plugins.base import inert
from reference import tasks
from reference.challenges import reference_module
from reference.contract import Case, governed_checks

RECORD_PROPERTY = "kernelgrade_record"

# Outcomes, each with a distinct meaning:
PASSED = "passed"  # ran, every output within its bound and every budget kept
WRONG = "wrong"  # ran, but an output is outside its bound, a budget was exceeded, or the contract was broken
ERROR = "error"  # raised an exception (the traceback is kept)
TIMEOUT = "timeout"  # no answer within the wall-clock limit; the process group was killed
CRASH = "crash"  # the process died: a signal such as SIGSEGV, or an exit during the call
OOM = "oom"  # out of memory: MemoryError under the address-space limit, or killed by the kernel
LEFT_RUNNING = "left_running"  # left threads or processes running after its answer; all its processes were killed
# A compiled runtime's source did not build (nvcc failed or timed out); scores 0 like an error, but says the submission
# never ran, and the compiler's first errors are the message.
BUILD = "build"
SKIPPED = "skipped"  # not run by choice (speed with --no-speed); not scored
# A speed case of a submission that failed a correctness case of the same challenge in this run: not timed, scores 0
# (its message names the failed cases; --time-failed times it anyway).
NOT_TIMED = "not_timed"
# The folder holds no source file of the challenge's language (a prompt, notes, data): nothing ran, no sandbox started.
# Every case gets this record, so case counts stay right; the summary turns the challenge into the status "no code"
# (one line in the report, not a list of failures), scored by the rubric's [no_code] setting.
NO_CODE = "no_code"
OUTCOMES = (PASSED, WRONG, ERROR, TIMEOUT, CRASH, OOM, LEFT_RUNNING, BUILD, SKIPPED, NO_CODE, NOT_TIMED)

# The longest text kept, in characters (longer text is cut, with a note saying so): a submission's exception type and
# message (the sandbox cuts them when the child's answer arrives), its traceback and printed output (their ends kept),
# and any other string of a record. A record then holds a few tens of KB at most, however long a submission's text.
TYPE_CHARS = 200
MESSAGE_CHARS = 2000
TRACEBACK_CHARS = 8000
OUTPUT_CHARS = 4000  # stdout and stderr; the sandbox keeps a tail of 2000 characters by default (Limits)
TEXT_CHARS = 1000  # model (a folder name: 255 bytes at most), case id, category, guards, ...
NESTED_CHARS = 2000  # a string inside checks, details, speed, ran_on or timing (keys: KEY_CHARS)
KEY_CHARS = 200
FIELD_CHARS = {"message": MESSAGE_CHARS, "traceback": TRACEBACK_CHARS, "stdout": OUTPUT_CHARS, "stderr": OUTPUT_CHARS}
FIELD_CHARS |= {"loaded": MESSAGE_CHARS, "nodeid": MESSAGE_CHARS}
_TAIL_FIELDS = ("traceback", "stdout", "stderr")  # their ends say the most: the last frame, the last lines printed
_SURROGATE = re.compile("[\ud800-\udfff]")


def safe_text(value: object, limit: int, tail: bool = False) -> str:
    """``value`` as text of at most ``limit`` characters, a note saying how long it was among them when it is cut (the
    end kept when ``tail``), and valid UTF-8: lone surrogates (from undecodable bytes or an exception's own text)
    become U+FFFD. Idempotent: safe text passes unchanged."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:  # the note counts against the limit, so text made safe once stays as it is
        note = f"[... {len(text)} characters, cut to {limit} ...]"
        keep = max(limit - len(note) - 1, 0)
        text = f"{note}\n{text[len(text) - keep :]}" if tail else f"{text[:keep]} {note}"
    return _SURROGATE.sub("\ufffd", text)


def plain(value: Any, limit: int = NESTED_CHARS) -> Any:
    """``value`` as plain JSON values (dict with text keys, list, str, int, float, bool, None), each string made safe
    (:func:`safe_text`); NumPy scalars and arrays become Python numbers and lists, anything else its text."""
    if value is None or type(value) in (bool, int, float):
        return value
    for kind in (bool, int, float):  # a subclass (an enum, NumPy's float64) as the builtin itself
        if isinstance(value, kind):
            return kind(value)
    if isinstance(value, str):
        return safe_text(value, limit)
    if isinstance(value, dict):
        return {safe_text(k, KEY_CHARS): plain(v, limit) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v, limit) for v in value]
    if hasattr(value, "tolist"):  # a NumPy scalar or array (execnet cannot carry them)
        return plain(value.tolist(), limit)
    return safe_text(value, limit)


@dataclass
class CaseRecord:
    model: str
    challenge: str
    case: str
    case_index: int  # position in the reference's case table, for stable ordering
    category: str
    guards: str  # the trap or property the case stands for
    outcome: str
    message: str = ""
    runtime: str = ""  # native or adapter
    loaded: str = ""  # which file each entry point came from
    checks: list[dict[str, Any]] = field(default_factory=list)  # Comparison.to_dict() per output and budget
    seconds: float | None = None  # the measured call's wall time (median for speed cases)
    peak_bytes: int | None = None
    speed: dict[str, Any] | None = None  # median_s, spread_s, baseline_median_s, ratio
    details: dict[str, Any] = field(default_factory=dict)  # shown in reports, never scored (Expected.derive)
    traceback: str = ""
    stdout: str = ""
    stderr: str = ""
    nodeid: str = ""
    # "task" (the task profile that graded it states every rule the case depends on) or "added" (it depends on a rule
    # that profile does not state: "beyond the task", shown but not scored): see reference.contract.
    # Last and defaulted, so records written before the field existed still load.
    origin: str = "task"
    # Where and how long, from the grader's side (issue 9): the xdist worker and GPU that ran the case, and the case's
    # wall time split into the grader's own reference work ("truth_s") and the rest ("case_s" in all).
    ran_on: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)
    # Task profiles (reference/tasks): the rules the case depends on, those of them the profile that graded it does not
    # state ("beyond the task": the case is shown, never scored), and that profile's name.
    rules: list[str] = field(default_factory=list)
    beyond: list[str] = field(default_factory=list)
    task: str = ""
    # When the unstated rules decide only some of the case's checks (the module's RULE_CHECKS): those checks. The case
    # is then graded on its other checks, and these are notes; empty: the whole case is beyond the task.
    beyond_checks: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sanitise()

    def sanitise(self) -> CaseRecord:
        """Cut and clean every field in place (module docstring); returns the record."""
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, str):
                limit = FIELD_CHARS.get(spec.name, TEXT_CHARS)
                setattr(self, spec.name, safe_text(value, limit, tail=spec.name in _TAIL_FIELDS))
            else:
                setattr(self, spec.name, plain(value))
        return self

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def scored(self) -> bool:
        """Whether the case counts in the grade: not when it lies wholly beyond the model's task."""
        return not self.beyond or bool(self.beyond_checks)

    @property
    def task_passed(self) -> bool:
        """Passed as the model's task sees it: passed, or wrong only in checks that unstated rules decide."""
        if self.outcome == PASSED:
            return True
        failed = [c["name"] for c in self.checks if not c.get("passed")]
        return (
            self.outcome == WRONG
            and bool(self.beyond_checks)
            and bool(failed)
            and set(failed) <= set(self.beyond_checks)
        )

    @property
    def worst_ratio(self) -> float | None:
        """The largest error-to-bound ratio among the checks (over 1 means outside the bound)."""
        ratios = [c["bound_ratio"] for c in self.checks if c.get("bound_ratio") is not None]
        return max(ratios) if ratios else None

    def explain(self) -> str:
        """A failure message for the test report: outcome, the trap, and what went wrong."""
        self.sanitise()
        lines = [f"{self.outcome}: {self.model} on {self.challenge}/{self.case} (guards: {self.guards})"]
        failed_checks = [c["message"] for c in self.checks if not c["passed"]]
        lines += failed_checks or [self.message]  # the checks say more than the one-line summary
        if self.traceback:
            lines.append(self.traceback)
        # pytest prints this to the terminal: the submission's name, message and traceback must not drive it.
        return inert.terminal("\n".join(line for line in lines if line))

    def to_dict(self) -> dict[str, Any]:
        """Plain values only, every string within its limit (what leaves a worker, and what the journal holds)."""
        return asdict(self.sanitise())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        """A record read back; fields an older version wrote and this one dropped (``table_category``) are ignored."""
        known = {spec.name for spec in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def for_case(
        cls,
        model: str,
        challenge: str,
        case: Case,
        index: int,
        outcome: str,
        *,
        task: tasks.ChallengeTask | None = None,
        **fields: Any,
    ) -> CaseRecord:
        """A record with the case's own fields (id, position, category, trap, rules) filled in, as the task profile
        ``task`` sees them (default: the default profile's): a case beyond that task names the rules it lacks, and the
        checks those rules decide when they decide only some (the module's ``RULE_CHECKS``): such a case is graded on
        its other checks, also when it never reached a child (not provided, given up, a dead worker)."""
        task = task or tasks.built_in().of(challenge)
        beyond = list(task.beyond(case))
        fields.setdefault("origin", "added" if beyond else "task")
        record = cls(model, challenge, case.id, index, case.category, case.guards, outcome, **fields)
        record.rules, record.beyond, record.task = list(case.rules), beyond, task.profile
        record.beyond_checks = beyond_checks(challenge, beyond)
        return record


@dataclass
class Outcome:
    """What one request produced: ``status`` is ok, error, timeout, crash or oom."""

    status: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    # The grader's own measurements of the request: [{"measured": True, "seconds": wall time from request sent to
    # answer received, "peak_bytes": peak memory growth of the child's process tree, less the inputs' bytes}]
    calls: list[dict[str, Any]] = field(default_factory=list)
    kind: str = ""  # for errors: exception, oom, contract
    message: str = ""
    traceback: str = ""
    stdout: str = ""
    stderr: str = ""
    # The grader's own record of the request's messages (exchange.py): calls per service, memory at each checkpoint.
    service_calls: dict[str, int] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


def beyond_checks(challenge: str, beyond: list[str], names: Iterable[str] | None = None) -> list[str]:
    """The checks of a case beyond the task that its unstated rules decide, when they decide only some of them (the
    module's ``RULE_CHECKS``): the case is then graded on the rest. Empty: not beyond, or wholly beyond. ``names``,
    the case's checks (``Expected.values``), where known: governed rules that decide all of them make it wholly
    beyond."""
    if not beyond:
        return []
    governed = governed_checks(getattr(reference_module(challenge), "RULE_CHECKS", {}), beyond)
    if governed is None:
        return []
    if names is None:
        return sorted(governed)
    names = set(names)
    return sorted(names & governed) if names - governed else []

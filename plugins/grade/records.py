"""The typed record of one case of one submission: what ran, how it ended, and the figures that explain the grade.

Records leave a pytest worker as plain dicts (``to_dict``) inside ``user_properties``: xdist serialises reports with
execnet, which accepts builtins only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from plugins.report import inert
from reference.contract import Case

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
# The folder holds no source file of the challenge's language (a prompt, notes, data): nothing ran, no sandbox started.
# Every case gets this record, so case counts stay right; the summary turns the challenge into the status "no code"
# (one line in the report, not a list of failures), scored by the rubric's [no_code] setting.
NO_CODE = "no_code"
OUTCOMES = (PASSED, WRONG, ERROR, TIMEOUT, CRASH, OOM, LEFT_RUNNING, BUILD, SKIPPED, NO_CODE)


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
    # "task" (the task states the property) or "added" (ours; only ever a robustness case): see reference.contract.
    # Last and defaulted, so records written before the field existed still load.
    origin: str = "task"
    # Where and how long, from the grader's side (issue 9): the xdist worker and GPU that ran the case, and the case's
    # wall time split into the grader's own reference work ("truth_s") and the rest ("case_s" in all).
    ran_on: dict[str, Any] = field(default_factory=dict)
    timing: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.outcome == PASSED

    @property
    def worst_ratio(self) -> float | None:
        """The largest error-to-bound ratio among the checks (over 1 means outside the bound)."""
        ratios = [c["bound_ratio"] for c in self.checks if c.get("bound_ratio") is not None]
        return max(ratios) if ratios else None

    def explain(self) -> str:
        """A failure message for the test report: outcome, the trap, and what went wrong."""
        lines = [f"{self.outcome}: {self.model} on {self.challenge}/{self.case} (guards: {self.guards})"]
        failed_checks = [c["message"] for c in self.checks if not c["passed"]]
        lines += failed_checks or [self.message]  # the checks say more than the one-line summary
        if self.traceback:
            lines.append(self.traceback)
        # pytest prints this to the terminal: the submission's name, message and traceback must not drive it.
        return inert.terminal("\n".join(line for line in lines if line))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CaseRecord:
        return cls(**data)

    @classmethod
    def for_case(cls, model: str, challenge: str, case: Case, index: int, outcome: str, **fields: Any) -> CaseRecord:
        """A record with the case's own fields (id, position, category, trap, origin) filled in."""
        fields.setdefault("origin", case.origin)
        return cls(model, challenge, case.id, index, case.category, case.guards, outcome, **fields)

"""Which correctness cases of a submission failed in this run, for the speed phase: a submission already wrong is not
timed (its speed case records "not timed: wrong in ..." and earns nothing), unless ``--time-failed`` asks for it.

Every xdist worker writes the verdict of each correctness case it runs into the run's private folder (``verdicts/``,
one folder per submission under a hash of its model and challenge, one file per case), where no sandbox child can see
it. The speed phase opens only once every correctness case of the run has finished (``schedule.py``: the controller's
barrier; without xdist, speed cases are collected last), so a speed case reads the verdicts of its submission from
every worker. A case is marked ``running`` before it starts and gets its verdict when it ends: a worker that died
during a case leaves ``running``, which counts as failed (xdist reports that case as a crash). A speed case of a
submission that already has a failed verdict is refused at once, without waiting for the phase.

What counts as failed: a scored correctness case (any category but speed, not beyond the model's task) whose outcome
is neither passed nor skipped. Cases the run did not select count for nothing either way.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

from plugins.base import records as r
from plugins.isolate import runspace

FOLDER = "verdicts"
RUNNING = "running"
NOT_TIMED_PREFIX = "not timed: wrong in "


def _folder(root: Path, model: str, challenge: str) -> Path:
    return root / FOLDER / runspace.unit_key(model, challenge)


def started(root: Path, model: str, challenge: str, index: int, case: str) -> None:
    """Before a correctness case runs: marked running (a worker that dies now leaves it so: a failure)."""
    _write(_folder(root, model, challenge) / f"{index}.json", {"case": case, "state": RUNNING})


def ended(root: Path, record: r.CaseRecord) -> None:
    """After a correctness case ran: its verdict."""
    path = _folder(root, record.model, record.challenge) / f"{record.case_index}.json"
    _write(path, {"case": record.case, "state": "failed" if failed(record) else "ok"})


def failed(record: r.CaseRecord) -> bool:
    """Whether a case's record makes its submission wrong in this run: a scored correctness case, neither passed nor
    skipped."""
    return record.category != "speed" and record.outcome != r.SKIPPED and record.scored and not record.task_passed


def wrong_in(root: Path, model: str, challenge: str, running_fails: bool = True) -> list[str]:
    """The correctness cases of a submission that failed (or never ended) in this run, in case-table order; with
    ``running_fails`` False only those that ended failed, for a look before the speed phase, while cases still run."""
    folder = _folder(root, model, challenge)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    failed = []
    for name in names:
        try:
            entry = json.loads((folder / name).read_text())
            index = int(name.removesuffix(".json"))
        except (OSError, ValueError):
            continue
        state = entry.get("state")
        if state != "ok" and (running_fails or state != RUNNING):
            failed.append((index, str(entry.get("case"))))
    return [case for _, case in sorted(failed)]


def not_timed_message(cases: list[str], shown: int = 5) -> str:
    """``not timed: wrong in a, b, c and 4 more``."""
    more = f" and {len(cases) - shown} more" if len(cases) > shown else ""
    return NOT_TIMED_PREFIX + ", ".join(cases[:shown]) + more


def _write(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(json.dumps(data))
    with contextlib.suppress(OSError):
        os.replace(temporary, path)

"""Fail fast: after two timeouts in a row, a submission's remaining cases of that challenge fail at once.

A submission that hangs (an infinite loop) used to wait out ``--call-timeout`` on every case, one after another: about
16 minutes for one challenge at the default 60 s. Once two cases of one (model, challenge) in a row end in a timeout,
each later case of it is recorded as a timeout with :data:`MESSAGE` without starting the child; ``--no-fail-fast``
runs every case as before. Any other outcome of a case that ran resets the count.

The count lives in the run's private space (:mod:`plugins.isolate.runspace`: made before any submission runs, mode
0711, never a submission's folder), one small file per (model, challenge), so xdist workers share it: the speed
phase, which may run a submission's speed cases on another worker than its correctness cases, sees the timeouts
those had. Only the grader writes it, after the child's answer (or its kill); nothing the child sends is read here.
"""

from __future__ import annotations

import os
from pathlib import Path

from plugins.base.records import TIMEOUT
from plugins.isolate import runspace

IN_A_ROW = 2  # timeouts in a row after which the remaining cases are not run
MESSAGE = "not run: the submission timed out twice in a row on this challenge (--no-fail-fast runs every case)"


class TimeoutTally:
    """Timeouts in a row per (model, challenge) of one run, in ``folder`` (shared by the run's workers)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, model: str, challenge: str) -> Path:
        return self.folder / runspace.unit_key(model, challenge)

    def count(self, model: str, challenge: str) -> int:
        """Timeouts in a row so far (0 when none, or the file cannot be read)."""
        try:
            return int(self._path(model, challenge).read_text(encoding="ascii").strip() or 0)
        except (OSError, ValueError):
            return 0

    def gave_up(self, model: str, challenge: str) -> bool:
        """Whether the remaining cases of this (model, challenge) are not to be run."""
        return self.count(model, challenge) >= IN_A_ROW

    def note(self, model: str, challenge: str, outcome: str) -> None:
        """Count the outcome of a case that ran: a timeout adds one, anything else starts over."""
        count = self.count(model, challenge) + 1 if outcome == TIMEOUT else 0
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the grader's own: no child writes here
        path = self._path(model, challenge)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(str(count), encoding="ascii")
        os.replace(tmp, path)  # a reader on another worker sees the old count or the new one, never half

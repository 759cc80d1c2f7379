"""Fail fast: a submission that timed out on the first two cases of a challenge has its other cases of that challenge
fail at once.

A submission that hangs (an infinite loop) used to wait out ``--call-timeout`` on every case, one after another: about
16 minutes for one challenge at the default 60 s. The two *probes* of a (model, challenge) are its first two selected
correctness cases in case-table order. Once both ended in a timeout, each other case of it that has not started is
recorded as a timeout with :data:`MESSAGE` without starting the child; ``--no-fail-fast`` runs every case as before.

Why the probes and not "two timeouts in a row": the order in which a submission's cases run depends on the workers
(a stolen part of its queue runs beside the rest), so "in a row" gave different verdicts to a submission that hangs
on some cases only: two adjacent hanging cases stopped the cases after them, which would have passed, in one run and
not in another. The probes are the same cases in every run; a submission that hangs on both almost surely hangs
everywhere, and one that answers either of them has every case run. (A case that started before both probes ended,
on another worker, runs as usual: for a submission that hangs, it times out all the same.)

The outcomes live in the run's private space (:mod:`plugins.isolate.runspace`: made before any submission runs, mode
0711, never a submission's folder), one small file per probe, so xdist workers share them. Only the grader writes
them, after the child's answer (or its kill); nothing the child sends is read here.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from plugins.base.records import TIMEOUT
from plugins.isolate import runspace

PROBES = 2  # the first cases of a (model, challenge), in case-table order, whose timeouts stop the rest
MESSAGE = "not run: the submission timed out on the first two cases of this challenge (--no-fail-fast runs every case)"


def probes(selected_indices: Iterable[int]) -> tuple[int, ...]:
    """The probe cases among a unit's selected correctness cases (their indices in the case table)."""
    return tuple(sorted(set(selected_indices))[:PROBES])


class ProbeOutcomes:
    """The outcomes of the probes of every (model, challenge) of one run, in ``folder`` (shared by the workers)."""

    def __init__(self, folder: Path):
        self.folder = folder

    def _path(self, model: str, challenge: str, index: int) -> Path:
        return self.folder / f"{runspace.unit_key(model, challenge)}.{index}"

    def outcome(self, model: str, challenge: str, index: int) -> str:
        """The recorded outcome of a case ("" when it has not ended, or the file cannot be read)."""
        try:
            return self._path(model, challenge, index).read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            return ""

    def gave_up(self, model: str, challenge: str, unit_probes: tuple[int, ...], index: int) -> bool:
        """Whether case ``index`` is not to be run: it is no probe, and every probe (there are two) timed out."""
        if len(unit_probes) < PROBES or index in unit_probes:
            return False
        return all(self.outcome(model, challenge, p) == TIMEOUT for p in unit_probes)

    def note(self, model: str, challenge: str, unit_probes: tuple[int, ...], index: int, outcome: str) -> None:
        """Record the outcome of a probe that ran (other cases are not recorded)."""
        if index not in unit_probes:
            return
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)  # the grader's own: no child writes here
        path = self._path(model, challenge, index)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        tmp.write_text(outcome, encoding="ascii")
        os.replace(tmp, path)  # a reader on another worker sees no outcome or the whole one, never half

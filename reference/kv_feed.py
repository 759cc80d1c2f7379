"""The KV cache's request protocol: the grader feeds the decode steps' tokens one call at a time and keeps the logits.

Every KV request runs as a conversation with the grader (``plugins/isolate/exchange.py``), over one service, ``feed``:

- the driver calls ``prefill`` (for each group of sequences: one, or two interleaved caches in the "split" case) and
  then ``decode_step`` per step and group; after every call it delivers that call's logits to ``feed`` and gets the
  next decode step's tokens in answer. No tokens of a step reach the child before the logits of the call before it
  are delivered (they are withheld from the child's inputs), so nothing can be computed ahead;
- the delivered logits are what is graded (:meth:`DecodeFeed.recorded`), not the child's final answer, so a call's
  logits must exist when it is delivered;
- on memory cases each delivery is a memory checkpoint: the grader samples the child's memory as the call arrives,
  before answering (labels ``feed 1`` .. ``feed N``), so the samples are taken at the protocol's own points, after
  each call's logits were computed, whatever the child says or skips.

A submission that calls ``feed`` itself only records other logits (wrong ones fail) or adds a checkpoint (the memory
figure then fails); one that never delivers leaves the logits NaN. Imports NumPy and the standard library only.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections.abc import Mapping
from typing import Any

import numpy as np

FEED = "feed"
Slot = tuple[int | None, int]  # (decode step, or None for prefill; group)


def groups(params: Mapping[str, Any], batch: int) -> list[slice]:
    """The caches of a request: all sequences in one, or ("split") the first two in one and the rest in a second."""
    return [slice(0, 2), slice(2, batch)] if params.get("split") else [slice(0, batch)]


def slots(params: Mapping[str, Any], batch: int) -> list[Slot]:
    """Every call whose logits are delivered, in order: each group's prefill, then each step's groups in turn."""
    count = len(groups(params, batch))
    return [(None, g) for g in range(count)] + [(s, g) for s in range(params["S"]) for g in range(count)]


def labels(params: Mapping[str, Any], batch: int) -> list[str]:
    """The memory checkpoints of a request: one per delivery, labelled by the grader."""
    return [f"{FEED} {i}" for i in range(1, len(slots(params, batch)) + 1)]


def settle() -> None:
    """Before a memory case's delivery: free young garbage and hand the allocator's free pages back (glibc), so that
    the grader's sample holds what is live. A submission that skips it only adds to its own figure."""
    gc.collect(1)  # the young generations: cheap (a full collection costs milliseconds per step)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


class DecodeFeed:
    """The grader's side of ``feed`` for one request (see the module docstring): ``inputs`` are the case's own, with
    ``steps`` (S, B) and, on speed cases, ``timed`` (B,), the tokens the child does not get up front."""

    def __init__(self, params: Mapping[str, Any], inputs: Mapping[str, np.ndarray]):
        self.samples_memory = bool(params.get("mem"))  # exchange.py samples the child's memory as each call arrives
        self.batch, self.vocab = len(inputs["lengths"]), int(params["V"])
        self.groups, self.slots = groups(params, self.batch), slots(params, self.batch)
        self.steps, self.timed = inputs["steps"], inputs.get("timed")
        self.delivered: list[np.ndarray] = []

    def __call__(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(self.delivered) == len(self.slots):
            raise ValueError("every call's logits were delivered already")
        step, group = self.slots[len(self.delivered)]
        rows = len(range(*self.groups[group].indices(self.batch)))
        logits = np.asarray(arrays.get("logits", np.zeros(0)))
        if logits.shape != (rows, self.vocab) or logits.dtype.kind not in "biuf":
            where = "prefill" if step is None else f"decode step {step}"
            raise ValueError(f"{where}: logits of shape {logits.shape} ({logits.dtype}), want ({rows}, {self.vocab})")
        self.delivered.append(logits.astype(np.float64))
        return {"tokens": self._tokens(len(self.delivered))}

    def _tokens(self, slot: int) -> np.ndarray:
        """The tokens of call ``slot``: a step's; after the last call, the speed case's timed step's; else none."""
        if slot < len(self.slots) and self.slots[slot][0] is not None:
            step, group = self.slots[slot]
            return np.ascontiguousarray(self.steps[step, self.groups[group]])
        if slot == len(self.slots) and self.timed is not None:
            return np.ascontiguousarray(self.timed)
        return np.zeros(0, dtype=np.int64)

    def recorded(self) -> dict[str, np.ndarray]:
        """The delivered logits as the graded outputs: ``prefill_logits`` (B, V), ``step_logits`` (S, B, V); NaN where
        a call's logits were never delivered."""
        prefill = np.full((self.batch, self.vocab), np.nan)
        steps = np.full((self.steps.shape[0], self.batch, self.vocab), np.nan)
        for (step, group), logits in zip(self.slots, self.delivered, strict=False):
            (prefill if step is None else steps[step])[self.groups[group]] = logits
        return {"prefill_logits": prefill, "step_logits": steps}

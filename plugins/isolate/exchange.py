"""The grader's side of the messages a sandbox child sends while it answers a request: service calls and checkpoints.

Besides its final answer, a child's driver may send (see ``child.py``, ``Run.service`` and ``Run.checkpoint``):

- ``{"status": "service", "name": N}`` with arrays: the grader runs its own function for N on them, here, and answers
  ``{"status": "answer"}`` with the function's arrays, or ``{"status": "refused", "message": ...}`` when the function
  rejects them (a ``ValueError``, ``TypeError`` or ``IndexError``) or the case offers no service N. Every call of a
  service the case offers is counted, refused or not.
- ``{"status": "checkpoint", "label": L}``: the grader samples the child tree's memory right then (from outside, see
  ``measure.py``), records ``{"label": L, "bytes": ...}`` and answers ``{"status": "answer"}``.

A service may also be an object that says more: ``samples_memory = True`` makes each of its calls a checkpoint the
grader labels itself (``"<name> <n>"``: the memory is sampled as the call arrives, before it is answered, so the
protocol's own points are sampled, not moments the child picks), and ``recorded()`` returns outputs the grader kept
from the calls' arguments, which replace the child's outputs of the same names (``reference/kv_feed.py``).

Nothing the child says is trusted: the counts and samples are the grader's, and a submission that sends messages of
its own (it can reach the driver's ``run``) only adds calls or checkpoints that its case's figures then count against
it. Per request the grader caps the number of messages (:data:`MAX_MESSAGES`), the arrays of one message
(:data:`MAX_MESSAGE_BYTES`) and of all messages together (:data:`MAX_EXCHANGED_BYTES`); a request over a cap fails
with :class:`OverCap`, checked before any array of the message is allocated.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plugins.base.records import MESSAGE_CHARS, safe_text
from plugins.isolate import wire

# What an honest driver needs stays far below each cap. Measured: beam search's 80 random calls take 1,859 model calls
# through the reference (a call per beam and step; a call per candidate would be some 10,000), DFlash's loop 142, a KV
# request one feed call per step (at most 513); one call's arrays are a few MB (a tree-masked forward's logits).
MAX_MESSAGES = 100_000
MAX_MESSAGE_BYTES = 64 * 2**20
MAX_EXCHANGED_BYTES = 4 * 2**30
MAX_LABEL_CHARS = 100
SMALL_REPLY_BYTES = 2**16  # replies under this go out in one write (header and arrays copied together)

Service = Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]
_REFUSED = (ValueError, TypeError, IndexError)  # what a grader function raises for arguments it cannot take
# (get, set) thread-count functions of the BLAS builds NumPy ships or links (OpenBLAS, with and without the 64-bit and
# scipy prefixes); see one_blas_thread.
_BLAS_THREADS = [
    (f"{prefix}_get_num_threads{suffix}", f"{prefix}_set_num_threads{suffix}")
    for prefix in ("scipy_openblas", "openblas")
    for suffix in ("64_", "")
]


class OverCap(Exception):
    """The child sent more service or checkpoint messages, or larger ones, than a request may."""


@dataclass
class Exchange:
    """One request's service calls and checkpoints: ``services`` by name, ``sample()`` the child tree's memory now."""

    services: Mapping[str, Service]
    sample: Callable[[], int]
    calls: dict[str, int] = field(default_factory=dict)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    messages: int = 0
    exchanged: int = 0

    def accept(self, header: dict[str, Any], payload: int) -> None:
        """Count a message before its arrays are read (``wire.recv``'s hook); raise OverCap past a cap."""
        if header.get("status") not in ("service", "checkpoint"):
            return  # the final answer: the wire's own limits apply
        self.messages += 1
        self.exchanged += payload
        if self.messages > MAX_MESSAGES:
            raise OverCap(f"more than {MAX_MESSAGES} service calls and checkpoints in one request (the cap)")
        if payload > MAX_MESSAGE_BYTES:
            raise OverCap(f"a service call of {payload} bytes; the cap is {MAX_MESSAGE_BYTES} bytes per call")
        if self.exchanged > MAX_EXCHANGED_BYTES:
            raise OverCap(f"service calls of more than {MAX_EXCHANGED_BYTES} bytes in one request (the cap)")

    def answer(self, header: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict]:
        """The reply to one service or checkpoint message."""
        if header["status"] == "checkpoint":
            label = safe_text(str(header.get("label", "")), MAX_LABEL_CHARS)
            self.checkpoints.append({"label": label, "bytes": int(self.sample())})
            return {"status": "answer"}, {}
        name = safe_text(str(header.get("name", "")), MAX_LABEL_CHARS)
        service = self.services.get(name)
        if service is None:
            return {"status": "refused", "message": f"no service named {name!r} in this case"}, {}
        self.calls[name] = self.calls.get(name, 0) + 1
        if getattr(service, "samples_memory", False):  # sampled before the answer lets the child go on
            self.checkpoints.append({"label": f"{name} {self.calls[name]}", "bytes": int(self.sample())})
        try:
            with one_blas_thread():
                returned = service(arrays)
        except _REFUSED as exc:
            return {"status": "refused", "message": safe_text(f"{name}: {exc}", MESSAGE_CHARS)}, {}
        self.exchanged += sum(a.nbytes for a in returned.values())
        return {"status": "answer"}, returned

    def recorded(self) -> dict[str, np.ndarray]:
        """Outputs the grader kept from the calls themselves (a service's ``recorded()``): they replace the child's."""
        kept: dict[str, np.ndarray] = {}
        for service in self.services.values():
            kept.update(getattr(service, "recorded", dict)())
        return kept


@functools.cache
def _blas_controls() -> list[tuple[Any, Any]]:
    """The thread-count controls of every BLAS library loaded in this process (Linux: found in /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "blas" in line.lower() and "/" in line})
    except OSError:
        return []
    found = []
    for path in paths:
        with contextlib.suppress(OSError):
            library = ctypes.CDLL(path)
            found += [(getattr(library, g), getattr(library, s)) for g, s in _BLAS_THREADS if hasattr(library, g)]
    return found


@contextlib.contextmanager
def one_blas_thread() -> Iterator[None]:
    """Run a grader function on one BLAS thread, as the child runs: it answers small calls one after another, and on a
    busy machine a pool's threads wait for each other's turn (measured on the 2-core machine at load 25: a DFlash case's
    24 served forwards took 411 ms with the default pool, 23-32 ms on one thread)."""
    controls = _blas_controls()
    before = [get() for get, _ in controls]
    for _, set_threads in controls:
        set_threads(1)
    try:
        yield
    finally:
        for (_, set_threads), count in zip(controls, before, strict=True):
            set_threads(count)


def converse(
    exchange: Exchange, request_fd: int, response_fd: int, deadline: float, caps: wire.Caps
) -> tuple[dict, dict]:
    """Answer the child's service and checkpoint messages until its final answer, which is returned; every message is
    read under the case's ``caps`` (``wire.recv`` refuses one over them before reading its body)."""
    while True:
        header, arrays = wire.recv(response_fd, deadline, caps, accept=exchange.accept)
        if header.get("status") not in ("service", "checkpoint"):
            return header, arrays
        reply, returned = exchange.answer(header, arrays)
        del arrays  # the call's arguments are not kept past its answer
        if sum(a.nbytes for a in returned.values()) < SMALL_REPLY_BYTES:  # one write: the child wakes once
            wire.write_all(request_fd, wire.encode(reply, returned), deadline)
        else:  # no copy of large arrays
            wire.send(request_fd, reply, returned, deadline)

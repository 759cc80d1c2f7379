"""Messages between the grader and a sandbox child: an 8-byte length, a JSON header, then raw array bytes.

No pickle in either direction: the grader must never unpickle what untrusted code produced. Arrays are restricted to
numeric dtypes and their sizes are checked against the header before anything is allocated. This module is loaded by
the child by file path (it must not occupy a module name a submission might use), so it imports only NumPy and the
standard library.
"""

from __future__ import annotations

import json
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any

import numpy as np

MAX_HEADER_BYTES = 64 * 2**20
MAX_PAYLOAD_BYTES = 8 * 2**30
_NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex: no objects, strings or structured records


class WireError(Exception):
    """The peer closed the pipe or sent something that is not a valid message."""


class Deadline(Exception):
    """The peer did not answer in time."""


def encode(header: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    """One message; arrays go out C-contiguous, in the order the header lists them."""
    contiguous = {name: np.ascontiguousarray(a) for name, a in arrays.items()}
    header = {**header, "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in contiguous.items()]}
    head = json.dumps(header, allow_nan=True).encode()
    return b"".join([struct.pack("<Q", len(head)), head, *(a.tobytes() for a in contiguous.values())])


def _wait(fd: int, writable: bool, deadline: float | None) -> None:
    if deadline is None:
        return
    remaining = deadline - time.monotonic()
    ready = (
        select.select([], [fd], [], max(remaining, 0)) if writable else select.select([fd], [], [], max(remaining, 0))
    )
    if not any(ready):
        raise Deadline()


def write_all(fd: int, data: bytes | memoryview, deadline: float | None = None) -> None:
    view = memoryview(data)
    while view:
        _wait(fd, True, deadline)
        try:
            written = os.write(fd, view[: 1 << 20])
        except BlockingIOError:
            continue
        except BrokenPipeError as exc:
            raise WireError("the peer closed the pipe") from exc
        view = view[written:]


def read_exact(fd: int, size: int, deadline: float | None = None) -> bytes:
    chunks, left = [], size
    while left:
        _wait(fd, False, deadline)
        try:
            chunk = os.read(fd, min(left, 1 << 20))
        except BlockingIOError:
            continue
        if not chunk:
            raise WireError("the peer closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def send(fd: int, header: dict[str, Any], arrays: dict[str, np.ndarray] | None = None, deadline: float | None = None):
    """One message, written straight from the arrays' memory: sending costs no copy of a contiguous array (the grader
    measures the child's memory while it answers, so the wire must not add to it)."""
    contiguous = {name: np.ascontiguousarray(a) for name, a in (arrays or {}).items()}
    header = {**header, "arrays": [[n, a.dtype.str, list(a.shape)] for n, a in contiguous.items()]}
    head = json.dumps(header, allow_nan=True).encode()
    write_all(fd, struct.pack("<Q", len(head)) + head, deadline)
    for array in contiguous.values():
        if array.size:
            write_all(fd, memoryview(array.reshape(-1)).cast("B"), deadline)


def recv(
    fd: int, deadline: float | None = None, accept: Callable[[dict[str, Any], int], None] | None = None
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One message as ``(header, arrays)``; raises WireError on anything malformed. ``accept(header, payload_bytes)``,
    when given, sees each message before any of its arrays is allocated and may raise to refuse it."""
    (size,) = struct.unpack("<Q", read_exact(fd, 8, deadline))
    if size > MAX_HEADER_BYTES:
        raise WireError(f"header of {size} bytes")
    try:
        header = json.loads(read_exact(fd, size, deadline))
        specs = [(str(n), np.dtype(d), tuple(int(s) for s in shape)) for n, d, shape in header.pop("arrays")]
    except (ValueError, TypeError, KeyError) as exc:
        raise WireError(f"malformed header: {exc}") from exc
    if any(
        dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or min(shape, default=0) < 0 for _, dtype, shape in specs
    ):
        raise WireError("non-numeric or malformed array in message")
    sizes = [dtype.itemsize * int(np.prod(shape, dtype=np.int64)) for _, dtype, shape in specs]
    if sum(sizes) > MAX_PAYLOAD_BYTES:
        raise WireError(f"payload of {sum(sizes)} bytes")
    if accept is not None:
        accept(header, sum(sizes))
    arrays = {}
    for name, dtype, shape in specs:
        arrays[name] = read_array(fd, dtype, shape, deadline)
    return header, arrays


def read_array(fd: int, dtype: np.dtype, shape: tuple[int, ...], deadline: float | None = None) -> np.ndarray:
    """Read an array's bytes straight into its own memory (one allocation, the array itself)."""
    array = np.empty(shape, dtype=dtype)
    view = memoryview(array.reshape(-1)).cast("B") if array.size else memoryview(b"")
    done = 0
    while done < len(view):
        _wait(fd, False, deadline)
        try:
            count = os.readv(fd, [view[done : done + (1 << 20)]])
        except BlockingIOError:
            continue
        if not count:
            raise WireError("the peer closed the pipe")
        done += count
    return array

"""Messages between the grader and a sandbox child: an 8-byte length, a JSON header, then raw array bytes.

No pickle in either direction: the grader must never unpickle what untrusted code produced. This module is loaded by
the child by file path (it must not occupy a module name a submission might use), so it imports only NumPy and the
standard library.

The child's messages are read under :class:`Caps`: the header's length, the number of arrays, each array's name, dtype
and shape, and their bytes all together are checked against the caps before any of the body is read or allocated.
A message that breaks a rule raises :class:`Refused` with the stream left unread: the grader then kills the child (its
pipe is out of step), so an announced 8 GiB costs neither a read nor an allocation. The caps:

- a case's answer (:func:`case_caps`): from its inputs and its float64 truth (``Expected.values``), four times their
  bytes plus 64 MiB, and four times their count plus 16 arrays; where the truth is not at hand (a warm-up call, a
  program driven outside a grading run) from the inputs alone, the same way; a header of 1 MiB;
- the child's answer to its config (:data:`HANDSHAKE`): a header of 1 MiB and no array;
- the grader's own requests, read by the child (:data:`TRUSTED`): 64 MiB of header and 8 GiB of arrays.

Every array: a name of 1 to 200 printable ASCII characters, unique in its message; a plain numeric dtype; at most 32
whole dimensions >= 0, whose extent (empty dimensions counted as 1) is within the cap.
"""

from __future__ import annotations

import json
import math
import os
import select
import struct
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

_NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex: no objects, strings or structured records
MAX_NAME_CHARS = 200  # an array's name: printable ASCII (the drivers' names are short identifiers)
MAX_DIMS = 32
# What a child's answer may hold beyond its case's own data. The header carries a status, an error's type, message and
# traceback (the child's own code cuts these to 4.5 KB) and one short line per array: 1 MiB is far over an honest one.
CHILD_HEADER_BYTES = 2**20
# A case's answer: its outputs are in practice at most the inputs' and the float64 truth's bytes together (measured for
# every case of every Python challenge with the reference's or a demo's own code: 0.95 at most). Four times that, plus
# 64 MiB for outputs the truth does not size (a token list of another length, figures the grader derives), is generous
# for an honest answer and keeps a hostile announcement in the tens of MiB.
CASE_BYTES_FACTOR = 4
CASE_BYTES_SLACK = 64 * 2**20
CASE_ARRAYS_FACTOR = 4
CASE_ARRAYS_SLACK = 16


class WireError(Exception):
    """The peer closed the pipe or sent something that is not a valid message."""


class Refused(WireError):
    """The peer's message breaks a rule or a cap: it is the peer's failure, and the rest of the stream is unread."""


class Deadline(Exception):
    """The peer did not answer in time."""


class Caps(NamedTuple):
    """The most one message may hold, checked against its header before anything of the body is read. (A named
    tuple: a dataclass needs its module in ``sys.modules``, and the child loads this one by path.)"""

    header_bytes: int
    payload_bytes: int  # all arrays together; one array never more
    arrays: int


# The grader's own requests (read by the child): the inputs of any case, the sandbox's config.
TRUSTED = Caps(header_bytes=64 * 2**20, payload_bytes=8 * 2**30, arrays=100_000)
# The child's answer to its config: "ready", or why the submission failed to import; no arrays.
HANDSHAKE = Caps(header_bytes=CHILD_HEADER_BYTES, payload_bytes=0, arrays=0)


def case_caps(inputs: dict[str, np.ndarray], truths: Any = ()) -> Caps:
    """The caps of a child's answer to one case: its inputs' and truths' bytes and counts (module docstring);
    ``truths`` are the truth's values (``Expected.values``: arrays, or None for figures the grader derives)."""
    arrays = [a for a in (*inputs.values(), *truths) if isinstance(a, np.ndarray)]
    data = sum(a.nbytes for a in arrays)
    count = len(inputs) + len(truths)
    return Caps(
        header_bytes=CHILD_HEADER_BYTES,
        payload_bytes=CASE_BYTES_FACTOR * data + CASE_BYTES_SLACK,
        arrays=CASE_ARRAYS_FACTOR * count + CASE_ARRAYS_SLACK,
    )


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
    fd: int,
    deadline: float | None = None,
    caps: Caps = TRUSTED,
    accept: Callable[[dict[str, Any], int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One message as ``(header, arrays)``. Raises :class:`Refused` for a message that is malformed or over ``caps``
    (before its body is read), WireError when the pipe closes, Deadline when ``deadline`` passes.
    ``accept(header, payload_bytes)``, when given, sees each message before any of its arrays is allocated and may
    raise to refuse it (the request-time exchange counts messages with it)."""
    (size,) = struct.unpack("<Q", read_exact(fd, 8, deadline))
    if size > caps.header_bytes:
        raise Refused(f"a header of {_size(size)}, over the cap of {_size(caps.header_bytes)}")
    header, specs = _parse_header(read_exact(fd, size, deadline), caps)
    if accept is not None:
        accept(header, sum(dtype.itemsize * math.prod(shape) for _, dtype, shape in specs))
    arrays = {}
    for name, dtype, shape in specs:
        arrays[name] = read_array(fd, dtype, shape, deadline)
    return header, arrays


def _parse_header(data: bytes, caps: Caps) -> tuple[dict[str, Any], list[tuple[str, np.dtype, tuple[int, ...]]]]:
    """The header and its array specs, every rule of the module docstring checked."""
    try:
        header = json.loads(data)
        listed = header.pop("arrays")
        count = len(listed)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        raise Refused(f"a malformed header ({type(exc).__name__})") from None
    if not isinstance(header, dict) or not isinstance(listed, list):
        raise Refused("a malformed header (not an object with a list of arrays)")
    if count > caps.arrays:
        raise Refused(f"{count} arrays, over the cap of {caps.arrays}")
    specs = [_spec(entry) for entry in listed]
    if len({name for name, _, _ in specs}) < count:
        raise Refused("two arrays of the same name")
    total = 0
    for name, dtype, shape in specs:
        # Empty dimensions aside too: NumPy refuses a shape whose other dimensions overflow, even when it holds nothing.
        if dtype.itemsize * math.prod(max(d, 1) for d in shape) > caps.payload_bytes:
            raise Refused(f"array {name}: a shape over the cap of {_size(caps.payload_bytes)}")
        total += dtype.itemsize * math.prod(shape)
        if total > caps.payload_bytes:
            raise Refused(
                f"arrays of {_size(total)} or more (up to {name}), over the cap of {_size(caps.payload_bytes)}"
            )
    return header, specs


def _spec(entry: Any) -> tuple[str, np.dtype, tuple[int, ...]]:
    """``(name, dtype, shape)`` of one array entry ``[name, dtype string, shape]``; :class:`Refused` if it breaks a
    rule: a name of printable ASCII, a plain numeric dtype (no objects, strings, records or sub-arrays), whole
    non-negative dimensions."""
    try:
        name, dtype_text, dims = entry
    except (TypeError, ValueError):
        raise Refused("a malformed array entry") from None
    if not (isinstance(name, str) and 0 < len(name) <= MAX_NAME_CHARS and name.isascii() and name.isprintable()):
        raise Refused(f"an array name that is not 1 to {MAX_NAME_CHARS} printable ASCII characters")
    try:
        dtype = np.dtype(dtype_text) if isinstance(dtype_text, str) else None
    except (TypeError, ValueError):
        dtype = None
    if dtype is None or dtype.kind not in _NUMERIC_KINDS or dtype.hasobject or dtype.shape or dtype.fields:
        raise Refused(f"array {name}: not a plain numeric dtype")
    if not isinstance(dims, list) or len(dims) > MAX_DIMS or not all(type(d) is int and d >= 0 for d in dims):
        raise Refused(f"array {name}: a shape that is not up to {MAX_DIMS} whole numbers >= 0")
    return name, dtype, tuple(dims)


def _size(count: int) -> str:
    return f"{count / 2**20:.1f} MiB" if count >= 2**20 else f"{count} bytes"


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

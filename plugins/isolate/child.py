"""The sandbox child: a fresh interpreter that loads one submission and runs the grader's requests against it.

Started by ``sandbox.py`` as ``python -B child.py REQUEST_FD RESPONSE_FD``; it never imports pytest or the grader's
plugins. Order matters:

1. limits first (core dumps off, file size, address space on CPU-only runs), before any submission code;
2. the challenge's driver (trusted, from ``reference/``) is imported, then every ``reference``/``plugins`` module is
   dropped from ``sys.modules`` and the repo from ``sys.path``, so a submission's own ``reference.py`` still imports;
3. the submission's entry modules are imported from a temporary copy of its folder, which is also the working dir;
4. requests are answered one at a time; the submission's stdout and stderr go to pipes the grader drains.

Each response says ``ok`` with outputs, or ``error`` with a kind (``exception``, ``oom``, ``contract``) and the
traceback. Before it, the driver may send ``service`` messages (arrays for a grader-owned function, such as the model
a decoding challenge calls, which runs in the grader and is counted there) and ``checkpoint`` messages (the grader
samples this tree's memory right then), each answered by the grader before the driver goes on.

Nothing is measured here: the grader times each request and samples this process tree's memory from outside, the
same way for every request, so a submission can neither change a measurement nor tell a measured call from another
(nor fake one: a message a submission sends itself is counted against it). Crashes and hangs are seen by the parent,
which kills the whole tree.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import importlib.util
import os
import resource
import signal
import sys
import traceback
import zlib
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
TRACEBACK_CHARS = 4000


def _load_wire() -> Any:
    spec = importlib.util.spec_from_file_location("_kernelgrade_wire", HERE / "wire.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _set_limits(config: dict[str, Any]) -> None:
    """Host limits. The memory cap is RLIMIT_AS on CPU runs; with a GPU it is RLIMIT_DATA (heap and private anonymous
    mappings, which is where array data lives), because the CUDA driver reserves huge virtual ranges that RLIMIT_AS
    would refuse."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (config["file_size_bytes"],) * 2)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized write then fails with an exception, not a kill
    if config["memory_bytes"]:
        limit = resource.RLIMIT_AS if config["device"] == "cpu" else resource.RLIMIT_DATA
        resource.setrlimit(limit, (config["memory_bytes"],) * 2)
    with contextlib.suppress(OSError, AttributeError):  # die with the grader, even inside a C call (Linux only)
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _import_driver(config: dict[str, Any]) -> tuple[Any, type[BaseException]]:
    """The challenge's ``drive`` function and the contract's error type, imported before any submission code."""
    sys.path.insert(0, config["repo"])
    driver = importlib.import_module(config["driver"])
    contract_error = importlib.import_module("reference.contract").ContractError
    for name in [m for m in sys.modules if m.split(".")[0] in ("reference", "plugins")]:
        del sys.modules[name]
    sys.path.remove(config["repo"])
    return driver, contract_error


def _import_entries(config: dict[str, Any], driver: Any) -> dict[str, Any]:
    """Entry points by name: from the driver itself (the trusted baseline: the function ``entries`` names for each, else
    the one of its own name) or through the challenge's runtime loader.

    The grader names the loader of the submission's runtime (``config["loader"]``, from
    ``plugins/isolate/runtimes/``): ``runtimes/<loader>.py`` beside this file (``python`` imports the submission's
    files; ``cuda`` loads what the grader built; ``triton`` hands torch CUDA tensors to Python functions). It is loaded
    by path, like the wire module, and exposes ``load(config, driver) -> {entry point: callable}``.
    """
    if config["entries_from_driver"]:
        return {name: getattr(driver, function or name) for name, function in config["entries"].items()}
    workdir = Path(config["workdir"])
    os.chdir(workdir)
    name = config["loader"]
    spec = importlib.util.spec_from_file_location(f"_kernelgrade_loader_{name}", HERE / "runtimes" / f"{name}.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    return loader.load(config, driver)


def _is_array(value: Any) -> bool:
    return isinstance(value, sys.modules["numpy"].ndarray)


def _digest(value: Any) -> int | None:
    """A checksum of an array's bytes, read in place when it is contiguous (a copy would count against its memory).

    CRC-32: it tells an honest submission that it changed its inputs (every change within 32 bits in a row; any
    other, an element moved included, but for a chance of one in 2**32). It is no defence: it runs in the child, whose
    code can skip it; what the grader judges it computes from its own copy of the inputs. It runs twice per input
    array inside every request, timed ones included: on the 2-core machine BLAKE2b took 25 ms per 16 MiB and CRC-32
    4.5 ms, so on the layer-norm speed case (two 16 MiB inputs, 23 ms of arithmetic) BLAKE2b alone took 100 ms of
    each side's time."""
    if isinstance(value, Typed):
        value = value.array
    if not _is_array(value):
        return None
    return zlib.crc32(value if value.flags.c_contiguous else value.tobytes())


def _cap_gpu_memory(fraction: float | None) -> None:
    """Cap the device memory torch may take, once torch is loaded (by the submission, never by us)."""
    torch = sys.modules.get("torch")
    if fraction and torch is not None and torch.cuda.is_available() and not getattr(_cap_gpu_memory, "done", False):
        torch.cuda.set_per_process_memory_fraction(fraction)
        _cap_gpu_memory.done = True


def _synchronize() -> None:
    """Wait for queued GPU work on every stream, so the answer is complete when it is sent and the grader's timer
    covers it (only if the submission itself loaded torch)."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


class Typed:
    """An array handed to a GPU runtime as a dtype NumPy lacks (``run.typed``): bfloat16 travels as the uint16 bit
    patterns of its values, and the loader views the device copy as ``torch.bfloat16``."""

    DTYPES = {"bfloat16": "uint16"}  # the dtype the runtime sees -> the NumPy dtype that carries its bits

    def __init__(self, array: Any, dtype: str):
        carrier = self.DTYPES.get(dtype)
        if carrier is None or not _is_array(array) or array.dtype.name != carrier:
            raise TypeError(f"typed({dtype!r}) takes a NumPy {carrier or 'uint16'} array of bit patterns")
        self.array, self.dtype = array, dtype


class ServiceError(ValueError):
    """The grader refused a service call (arguments it cannot take, or no such service in this case). A ValueError,
    as a model in this process would raise for the same arguments."""


class Channel:
    """The request's line to the grader while the driver runs: each service call or checkpoint is one message on the
    response pipe, answered on the request pipe before the driver goes on. The grader counts and caps these messages
    and takes its own measurements when they arrive; nothing said here is trusted (a submission can send them too)."""

    def __init__(self, wire: Any, request_fd: int, response_fd: int):
        self.wire, self.request_fd, self.response_fd = wire, request_fd, response_fd

    def ask(self, header: dict[str, Any], arrays: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send one message and return the arrays of the grader's answer; a refusal raises :class:`ServiceError`."""
        self.wire.write_all(self.response_fd, self.wire.encode(header, arrays or {}))  # one write: one wake-up
        answer, returned = self.wire.recv(self.request_fd)
        if answer.get("status") != "answer":
            raise ServiceError(str(answer.get("message", "the grader refused the call")))
        return returned


class Run:
    """What a driver calls the submission through: argument checks, and a device sync after every call; and the
    grader's services and checkpoints of this request (see :class:`Channel`).

    ``measure=True`` marks the call a memory or speed case is about; it changes nothing here (every call runs the same
    way, and the grader measures the whole request from outside). ``runtime`` names the submission's runtime
    ("python", "cuda", "triton"): a contract that accepts several chooses its call convention by it.
    """

    def __init__(
        self,
        entries: dict[str, Any],
        contract_error: type[BaseException],
        gpu_memory_fraction: float | None,
        channel: Channel | None = None,
        runtime: str = "python",
    ):
        self.entries, self.contract_error = entries, contract_error
        self.gpu_memory_fraction = gpu_memory_fraction
        self.channel = channel
        self.runtime = runtime

    def call(self, name: str, *args: Any, measure: bool = False) -> Any:
        """Call entry point ``name`` with ``args``; inputs must come back unchanged."""
        del measure
        _cap_gpu_memory(self.gpu_memory_fraction)
        before = [_digest(a) for a in args]
        result = self.entries[name](*args)
        _synchronize()
        changed = [i for i, (a, d) in enumerate(zip(args, before, strict=True)) if d is not None and _digest(a) != d]
        if changed:
            raise self.contract_error(f"{name} modified its input argument(s) at position {changed}")
        return result

    def typed(self, array: Any, dtype: str) -> Typed:
        """``array`` as ``dtype`` for the runtime (see :class:`Typed`): ``run.typed(bits, "bfloat16")``."""
        return Typed(array, dtype)

    def unpack(self, value: Any, count: int, what: str) -> tuple[Any, ...]:
        """Check an entry point returned a tuple of ``count`` items (the contract's ``what``)."""
        if not isinstance(value, (tuple, list)) or len(value) != count:
            raise self.contract_error(f"expected {what}, got {type(value).__name__} of length {_len(value)}")
        return tuple(value)

    def service(self, name: str, arrays: dict[str, Any]) -> dict[str, Any]:
        """Run the grader's service ``name`` on numeric NumPy ``arrays`` in the grader's process; its arrays back.
        Raises :class:`ServiceError` (a ValueError) when the grader refuses the arguments."""
        np = sys.modules["numpy"]
        sent = {key: np.asarray(value) for key, value in arrays.items()}
        for key, value in sent.items():
            if value.dtype.kind not in "biufc":
                raise ServiceError(f"service {name}: argument {key} is not numeric ({value.dtype})")
        return self._channel().ask({"status": "service", "name": str(name)}, sent)

    def checkpoint(self, label: str) -> None:
        """Let the grader sample this process tree's memory now, from outside; returns once it has."""
        self._channel().ask({"status": "checkpoint", "label": str(label)})

    def _channel(self) -> Channel:
        if self.channel is None:
            raise RuntimeError("this run has no channel to the grader")
        return self.channel


def _len(value: Any) -> int | str:
    try:
        return len(value)
    except TypeError:
        return "-"


def _to_numpy(name: str, value: Any, contract_error: type[BaseException]) -> Any:
    """Outputs leave as NumPy arrays; torch, CuPy and MLX arrays are converted here, in the child."""
    np = sys.modules["numpy"]
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu().numpy()
    elif type(value).__module__.startswith("cupy"):
        value = value.get()
    try:
        array = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is a contract failure
        raise contract_error(f"output {name} is not an array ({type(value).__name__}): {exc}") from exc
    if array.dtype.kind not in "biufc":
        raise contract_error(f"output {name} is not numeric: {type(value).__name__} of dtype {array.dtype}")
    return array


def _failure(kind: str, exc: BaseException) -> dict[str, Any]:
    text = "".join(traceback.format_exception(exc))
    return {
        "status": "error",
        "kind": kind,
        "type": type(exc).__name__,
        "message": str(exc)[:500],
        "traceback": text[-TRACEBACK_CHARS:],
    }


def _classify(exc: BaseException, contract_error: type[BaseException]) -> dict[str, Any]:
    # torch.OutOfMemoryError (device memory) derives from RuntimeError, so it is recognised by name.
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return _failure("oom", exc)
    if isinstance(exc, contract_error):
        return _failure("contract", exc)
    return _failure("exception", exc)


def serve(request_fd: int, response_fd: int) -> None:
    wire = _load_wire()
    config, _ = wire.recv(request_fd)
    _set_limits(config)
    driver, contract_error = _import_driver(config)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
    try:
        entries = _import_entries(config, driver)
    except BaseException as exc:  # noqa: BLE001 - an import that fails or exits is the submission's failure
        wire.send(response_fd, _classify(exc, contract_error) | {"phase": "import"})
        entries = None
    else:
        wire.send(response_fd, {"status": "ready"})
    while True:
        try:
            request, inputs = wire.recv(request_fd)
        except wire.WireError:
            return  # the grader is done with us
        if entries is None:
            wire.send(
                response_fd,
                {
                    "status": "error",
                    "kind": "exception",
                    "type": "ImportError",
                    "message": "the submission failed to import",
                    "traceback": "",
                },
            )
            continue
        # "cuda" is what the grader tells a GPU child (plugins.config.gpus.GPU_DEVICE); this file imports nothing of it
        fraction = config["gpu_memory_fraction"] if config["device"] == "cuda" else None
        run = Run(entries, contract_error, fraction, Channel(wire, request_fd, response_fd), config["runtime"])
        try:
            outputs = driver.drive(run, inputs, request["params"])
            arrays = {name: _to_numpy(name, value, contract_error) for name, value in outputs.items()}
        except BaseException as exc:  # noqa: BLE001 - SystemExit and friends from a submission are its failures too
            wire.send(response_fd, _classify(exc, contract_error))
            continue
        finally:
            del inputs  # freed before the next request arrives, so it does not inflate that request's baseline
        wire.send(response_fd, {"status": "ok"}, arrays)
        del outputs, arrays, run


if __name__ == "__main__":
    serve(int(sys.argv[1]), int(sys.argv[2]))

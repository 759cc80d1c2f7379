"""The cuda runtime: call a compiled submission's C functions on device buffers, in the sandbox child.

The grader built the library (``plugins/isolate/build.py``); the working folder is a copy of the build's folder and
``config["entries"]`` maps each entry point to the library in it. The contract module gives each function's C
declaration in ``C_SIGNATURES``. For each entry point this returns a callable that ``drive`` uses like a Python
function on NumPy arrays, following the declaration:

- a ``const T*`` parameter takes a NumPy array: copied to the device, and checked unchanged after the call; a
  ``const void*`` takes an array of any dtype, or a typed array (``run.typed(bits, "bfloat16")``: the bit patterns of
  a dtype NumPy lacks, uploaded as they are);
- a ``T*`` parameter takes a NumPy array holding the output's initial (poisoned) contents: copied to the device, and
  returned after the call, so rows the kernel never wrote keep their poison;
- scalars are passed as given; a ``cudaStream_t`` is supplied here (the current torch stream), never by ``drive``.

Every buffer sits between two guard regions of random bytes, compared after the call: a write out of bounds by up to
:data:`GUARD_BYTES` is reported as a broken contract (outcome ``wrong``). A non-zero return raises (outcome
``error``). A CUDA fault (an illegal address, a launch failure) leaves the context unusable, so the process reports it
on stderr and exits with :data:`CUDA_FAULT_EXIT`: the grader records a ``crash`` and starts the next case in a fresh
process with a healthy context. ``<name>:timed`` times the last call again on the device (:func:`time_launches`).

Loaded by ``child.py`` by path after the limits are set; device buffers come from torch (its caching allocator and
the memory cap the child sets).
"""

from __future__ import annotations

import ctypes
import os
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

GUARD_BYTES = 64 * 1024  # before and after every buffer; a multiple of 256, so the data stays aligned
FLUSH_BYTES = 256 * 2**20  # written between timed trials: several times any L2 (60 MB on the H200)
WARMUP, TRIALS = 3, 20
CUDA_FAULT_EXIT = 3  # exit status of a child whose CUDA context faulted (the message is on stderr)
FAULT_PREFIX = "kernelgrade-cuda: "

# C parameter types the loader passes: (ctypes type, role, NumPy dtype of the buffer for pointers).
_PARAM_TYPES: dict[str, tuple[Any, str, Any]] = {
    "const float*": (ctypes.c_void_p, "in", np.float32),
    "float*": (ctypes.c_void_p, "out", np.float32),
    "const int*": (ctypes.c_void_p, "in", np.int32),
    "int*": (ctypes.c_void_p, "out", np.int32),
    "const int64_t*": (ctypes.c_void_p, "in", np.int64),
    "int64_t*": (ctypes.c_void_p, "out", np.int64),
    "int": (ctypes.c_int, "scalar", None),
    "int64_t": (ctypes.c_int64, "scalar", None),
    "float": (ctypes.c_float, "scalar", None),
    "const void*": (ctypes.c_void_p, "in", None),  # any dtype: the contract passes its dtype as another argument
    "void*": (ctypes.c_void_p, "out", None),
    "cudaStream_t": (ctypes.c_void_p, "stream", None),
}


def parse_signature(declaration: str) -> tuple[str, list[tuple[str, str]]]:
    """``"int f(const float* x, int n, cudaStream_t s)"`` -> ``("f", [("const float*", "x"), ("int", "n"), ...])``."""
    match = re.fullmatch(r"\s*int\s+(\w+)\s*\((.*)\)\s*;?\s*", declaration, re.DOTALL)
    if match is None:
        raise ValueError(f"not a C declaration returning int: {declaration!r}")
    params = []
    for part in match[2].split(","):
        kind, name = re.fullmatch(r"\s*(.*?)\s*(\w+)\s*", part).groups()
        kind = re.sub(r"\s*\*", "*", " ".join(kind.split()))
        if kind not in _PARAM_TYPES:
            raise ValueError(f"unsupported C parameter type {kind!r} in {declaration!r}")
        params.append((kind, name))
    return match[1], params


def load(config: dict[str, Any], driver: Any) -> dict[str, Callable[..., Any]]:
    """``{entry point: DeviceFunction, "<entry point>:timed": its timer}`` for every library the grader built."""
    import torch  # the submission's library needs a CUDA context; torch provides it and the device buffers

    if not torch.cuda.is_available():
        raise RuntimeError("the cuda runtime needs a GPU visible to torch in the sandbox")
    torch.cuda.init()
    entries: dict[str, Callable[..., Any]] = {}
    for name, library in config["entries"].items():
        # The working folder is this sandbox's copy of the build's folder, so the cached library stays untouched.
        symbol_name, params = parse_signature(driver.C_SIGNATURES[name])
        cdll = ctypes.CDLL(str(Path(config["workdir"]) / library))
        function = DeviceFunction(name, getattr(cdll, symbol_name), params, torch, driver)
        entries[name] = function
        entries[f"{name}:timed"] = function.timed
    return entries


class Guarded:
    """One device buffer between two guard regions of random bytes; ``view`` is the buffer the kernel gets. ``array``
    is a NumPy array or a typed one (``child.Typed``: its bit patterns uploaded, its tensor of the typed dtype)."""

    def __init__(self, torch: Any, array: Any, role: str):
        typed_as = getattr(array, "dtype", None) if not isinstance(array, np.ndarray) else None
        array = array.array if typed_as is not None else array
        self.torch, self.role, self.shape, self.dtype = torch, role, array.shape, array.dtype
        self.tensor_dtype = getattr(torch, typed_as or array.dtype.name)
        nbytes = array.nbytes
        self.raw = torch.randint(0, 256, (2 * GUARD_BYTES + nbytes,), dtype=torch.uint8, device="cuda")
        self.guards = (self.raw[:GUARD_BYTES].clone(), self.raw[GUARD_BYTES + nbytes :].clone())
        self.view = self.raw[GUARD_BYTES : GUARD_BYTES + nbytes]
        with warnings.catch_warnings():  # arrays read from the wire are read-only; torch only reads this one
            warnings.simplefilter("ignore", UserWarning)
            host = torch.from_numpy(np.ascontiguousarray(array).reshape(-1).view(np.uint8))
        self.view.copy_(host)
        self.original = self.view.clone() if role == "in" else None

    @property
    def pointer(self) -> int:
        return self.view.data_ptr()

    def typed(self) -> Any:
        """The buffer as a torch tensor of its own shape and dtype (a typed array's: bfloat16), sharing the memory."""
        return self.view.view(self.tensor_dtype).view(self.shape)

    def damage(self, name: str) -> str | None:
        """What the call broke: a guard region (a write out of bounds) or an input it must only read."""
        end = GUARD_BYTES + self.view.numel()
        regions = (
            (self.raw[:GUARD_BYTES], self.guards[0], "before the start"),
            (self.raw[end:], self.guards[1], "past the end"),
        )
        for region, saved, where in regions:
            changed = int(self.torch.count_nonzero(region != saved).item())
            if changed:
                return f"wrote out of bounds: {changed} guard byte(s) {where} of {name} changed"
        if self.original is not None and not self.torch.equal(self.view, self.original):
            return f"modified its input {name} (declared const)"
        return None

    def host(self) -> np.ndarray:
        return self.view.cpu().numpy().view(self.dtype).reshape(self.shape)


class DeviceFunction:
    """A C function of the built library, called on guarded device copies of NumPy arguments (see the docstring)."""

    def __init__(self, name: str, cfunc: Any, params: list[tuple[str, str]], torch: Any, driver: Any):
        self.name, self.cfunc, self.params, self.torch, self.driver = name, cfunc, params, torch, driver
        cfunc.argtypes = [_PARAM_TYPES[kind][0] for kind, _ in params]
        cfunc.restype = ctypes.c_int
        self._last: tuple[tuple[Any, ...], dict[tuple[int, str], Guarded], list[Any]] | None = None

    def __call__(self, *args: Any) -> tuple[np.ndarray, ...]:
        buffers, cargs = self._upload(args)
        self._launch(cargs)
        self._settle()
        for (_, param), buffer in buffers.items():
            problem = buffer.damage(param)
            if problem:
                raise self.driver.ContractError(f"{self.name} {problem}")
        self._last = (args, buffers, cargs)  # a call that kept the contract; timed() reuses its device buffers
        return tuple(buffer.host() for buffer in buffers.values() if buffer.role == "out")

    def timed(self) -> dict[str, list[float]]:
        """Seconds per trial of the submission, of the contract module's baselines (``speed_baselines``) and of a
        device-to-device copy of the largest input (the bandwidth behind the read-once floor), all on the device
        buffers of the last call (no second upload, and nothing for ``drive`` to pass again)."""
        if self._last is None:
            raise RuntimeError(f"{self.name}:timed needs a call of {self.name} first")
        args, buffers, cargs = self._last
        typed = iter(b.typed() for b in buffers.values())
        device_args = [next(typed) if role in ("in", "out") else a for a, role in zip(args, self._roles(), strict=True)]
        launches: dict[str, Callable[[], Any]] = {"submission": lambda: self._launch(cargs)}
        baselines = getattr(self.driver, "speed_baselines", None)
        if baselines is not None:
            launches |= baselines(self.torch, "cuda", *device_args)
        source = max((b.view for b in buffers.values() if b.role == "in"), key=lambda v: v.numel())
        target = self.torch.empty_like(source)
        launches["copy"] = lambda: target.copy_(source)
        return time_launches(self.torch, launches, self._settle)

    def _roles(self) -> list[str]:
        return [_PARAM_TYPES[kind][1] for kind, _ in self.params if _PARAM_TYPES[kind][1] != "stream"]

    def _upload(self, args: tuple[Any, ...]) -> tuple[dict[tuple[int, str], Guarded], list[Any]]:
        """Guarded device copies of the array arguments, and the C argument list (the stream filled in here)."""
        given = iter(args)
        buffers: dict[tuple[int, str], Guarded] = {}
        cargs: list[Any] = []
        for position, (kind, param) in enumerate(self.params):
            _, role, dtype = _PARAM_TYPES[kind]
            if role == "stream":
                cargs.append(self.torch.cuda.current_stream().cuda_stream)
                continue
            value = next(given)
            if role == "scalar":
                cargs.append(value)
                continue
            if dtype is None:  # void*: any array, or a typed one
                if not isinstance(value, np.ndarray) and not is_typed(value):
                    raise TypeError(f"{self.name}: {param} must be a NumPy array")
            elif not isinstance(value, np.ndarray) or value.dtype != dtype:
                raise TypeError(f"{self.name}: {param} must be a NumPy {np.dtype(dtype).name} array")
            buffers[position, param] = Guarded(self.torch, value, role)
            cargs.append(buffers[position, param].pointer)
        self.torch.cuda.synchronize()  # uploads done before the kernel, whatever stream it uses
        return buffers, cargs

    def _launch(self, cargs: list[Any]) -> None:
        code = self.cfunc(*cargs)
        if code != 0:
            self._settle()  # a fault behind the return code must end the process, not pass as an error
            raise RuntimeError(refusal(self.name, code))

    def _settle(self) -> None:
        settle(self.torch, self.name)


def refusal(name: str, code: int) -> str:
    """The error of a launch that returned non-zero on a device that was still usable after it (``settle`` ends the
    process on a fault). Worded without the driver's words for a fault (``sandbox._DEVICE_FAULT``): this child goes on
    to the next case. Worded with them, every case a submission refuses cost a restart of its child (measured on the
    H100 host: 6 restarts of 5.2 to 6.0 s for one top-k submission that refuses K over 32)."""
    return (
        f"{name} returned {code} instead of 0: it did not do the work (an argument it does not support, such as this "
        f"K, or a CUDA call of its own that failed; the device was still usable after it)"
    )


def settle(torch: Any, name: str) -> None:
    """Wait for the device; a CUDA error there poisons the context, so report it and end the process."""
    try:
        torch.cuda.synchronize()
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError or AcceleratorError, both fatal here
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        os.write(2, f"\n{FAULT_PREFIX}{name}: {reason}\n".encode())
        os._exit(CUDA_FAULT_EXIT)


def is_typed(value: Any) -> bool:
    """A ``child.Typed`` (this module is loaded by path and cannot import the child's class): an array and a dtype."""
    return isinstance(getattr(value, "array", None), np.ndarray) and isinstance(getattr(value, "dtype", None), str)


def flush_bytes(torch: Any) -> int:
    """Bytes written between trials so that no input is left in L2: twice the device's L2 where torch says its size
    (a 50 MB L2 gets 100 MB, written in a fraction of the time of the old fixed 256 MB), else :data:`FLUSH_BYTES`."""
    size = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "L2_cache_size", 0)
    return 2 * int(size) if size else FLUSH_BYTES


def time_launches(torch: Any, launches: dict[str, Callable[[], Any]], settle: Callable[[], None]) -> dict[str, Any]:
    """Kernel-style timing in paired trials: each launch warmed up (a Triton kernel compiles at its first), then
    :data:`TRIALS` trials, each timing every launch once in an order that rotates from trial to trial (trial i of
    every launch saw the same state of the device), each launch after writing the flush buffer and synchronising;
    CUDA events around it, the device synchronised before the end event so that work on any stream is counted. A
    baseline that fails is left out (``settle`` then checks the device); the submission's failure is raised. Also
    ``wall_*``: this child's own account of where its wall time went (warm-up, and within it the first calls' excess
    over the later ones, ``compile``; flushes, trials), for the record."""
    clock, started = _wall(), time.perf_counter()
    for label, launch in list(launches.items()):
        try:
            calls = []
            for _ in range(WARMUP):
                began = time.perf_counter()
                launch()
                torch.cuda.synchronize()
                calls.append(time.perf_counter() - began)
        except Exception:  # noqa: BLE001 - a baseline that fails to run is left out of the figures, not fatal
            if label == "submission":
                raise
            settle()
            del launches[label]
            continue
        # A JIT kernel (Triton, the driver's PTX) compiles or loads from its cache at its first call: the first call's
        # excess over the later warm-up calls is that work, near 0 for a launch with nothing to compile.
        clock["compile"] += max(0.0, calls[0] - sum(calls[1:]) / max(1, len(calls) - 1))
    clock["warmup"] = time.perf_counter() - started
    flush = torch.empty(flush_bytes(torch), dtype=torch.uint8, device="cuda")
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    labels = list(launches)
    times: dict[str, list[float]] = {label: [] for label in labels}
    for trial in range(TRIALS):
        for label in labels[trial % len(labels) :] + labels[: trial % len(labels)]:
            began = time.perf_counter()
            flush.fill_(trial & 0xFF)
            torch.cuda.synchronize()
            clock["flush"] += time.perf_counter() - began
            start.record()
            launches[label]()
            torch.cuda.synchronize()
            end.record()
            end.synchronize()
            times[label].append(start.elapsed_time(end) / 1e3)
    clock["trials"] = time.perf_counter() - started - clock["warmup"]
    return times | {f"wall_{name}": [seconds] for name, seconds in clock.items()}


def _wall() -> dict[str, float]:
    return {"warmup": 0.0, "compile": 0.0, "flush": 0.0, "trials": 0.0}

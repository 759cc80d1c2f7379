"""The triton runtime: call a submission's Python function (Triton kernels, or torch) on torch CUDA tensors, in the
sandbox child.

The submission's files are imported as the Python runtime imports them (``python.py`` beside this file). For each entry
point this returns a callable that ``drive`` uses like a Python function on NumPy arrays:

- every NumPy array argument (or typed array, ``run.typed(bits, "bfloat16")``) is copied to the device between two
  guard regions of random bytes, exactly as the CUDA runtime copies a ``const T*`` argument (``cuda.py``:
  :class:`Guarded`), and the function gets a torch tensor of the array's shape and dtype (typed: ``torch.bfloat16``).
  After the call every guard and every input is compared: a write out of bounds (up to the guard's size) or into an
  input is a broken contract;
- other arguments (scales, flags) are passed as given;
- the result, a tensor or a tuple of tensors, comes back as NumPy arrays (bfloat16, which NumPy lacks, as float32:
  every bfloat16 value is a float32 value).

A CUDA fault leaves the context unusable: the process reports it and exits as the CUDA runtime does, and the next case
starts in a fresh process. ``<name>:timed`` times the last call again on the device, beside the contract's
``speed_baselines`` and a device copy, with the CUDA runtime's paired trials (:func:`cuda.time_launches`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent


def _sibling(name: str) -> Any:
    """Another loader of this folder, loaded by path as the child loads this one (the child has no package)."""
    spec = importlib.util.spec_from_file_location(f"_kernelgrade_loader_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load(config: dict[str, Any], driver: Any) -> dict[str, Callable[..., Any]]:
    """``{entry point: TensorFunction, "<entry point>:timed": its timer}`` from the submission's Python files."""
    import torch  # the runtime's tensors; torch is imported here, before the submission, for the device check

    if not torch.cuda.is_available():
        raise RuntimeError("the triton runtime needs a GPU visible to torch in the sandbox")
    torch.cuda.init()
    cuda = _sibling("cuda")
    entries: dict[str, Callable[..., Any]] = {}
    for name, function in _sibling("python").load(config, driver).items():
        wrapped = TensorFunction(name, function, torch, driver, cuda)
        entries[name] = wrapped
        entries[f"{name}:timed"] = wrapped.timed
    return entries


class TensorFunction:
    """A submission's function called on guarded device copies of NumPy arguments (see the module docstring)."""

    def __init__(self, name: str, function: Callable[..., Any], torch: Any, driver: Any, cuda: Any):
        self.name, self.function, self.torch, self.driver, self.cuda = name, function, torch, driver, cuda
        self._last: tuple[list[Any], list[Any]] | None = None

    def __call__(self, *args: Any) -> Any:
        buffers = [self.cuda.Guarded(self.torch, a, "in") if self._is_array(a) else None for a in args]
        device_args = [b.typed() if b is not None else a for a, b in zip(args, buffers, strict=True)]
        self.torch.cuda.synchronize()  # uploads done before the submission's kernels, whatever stream they use
        result = self.function(*device_args)
        self._settle()
        for position, buffer in enumerate(buffers):
            problem = buffer.damage(f"argument {position}") if buffer is not None else None
            if problem:
                raise self.driver.ContractError(f"{self.name} {problem}")
        self._last = (device_args, [b for b in buffers if b is not None])
        return self._to_host(result)

    def timed(self) -> dict[str, list[float]]:
        """Seconds per trial of the submission's last call, of the contract's ``speed_baselines`` on the same device
        tensors, and of a device copy of the largest input (the bandwidth behind the read-once floor)."""
        if self._last is None:
            raise RuntimeError(f"{self.name}:timed needs a call of {self.name} first")
        device_args, buffers = self._last
        launches: dict[str, Callable[[], Any]] = {"submission": lambda: self.function(*device_args)}
        baselines = getattr(self.driver, "speed_baselines", None)
        if baselines is not None:
            launches |= baselines(self.torch, "triton", *device_args)
        source = max((b.view for b in buffers), key=lambda v: v.numel())
        target = self.torch.empty_like(source)
        launches["copy"] = lambda: target.copy_(source)
        return self.cuda.time_launches(self.torch, launches, self._settle)

    def _is_array(self, value: Any) -> bool:
        return isinstance(value, np.ndarray) or self.cuda.is_typed(value)

    def _settle(self) -> None:
        """Wait for the device; a CUDA error ends the process as in the CUDA runtime (``cuda.DeviceFunction``)."""
        self.cuda.settle(self.torch, self.name)

    def _to_host(self, value: Any) -> Any:
        """Tensors to NumPy (bfloat16 as float32); a tuple or list item by item; anything else as it is (the driver's
        unpack and the child's output check then say what is wrong with it)."""
        if isinstance(value, (tuple, list)):
            return type(value)(self._to_host(v) for v in value)
        if isinstance(value, self.torch.Tensor):
            value = value.detach()
            if value.dtype == self.torch.bfloat16:
                value = value.float()
            return value.cpu().numpy()
        return value

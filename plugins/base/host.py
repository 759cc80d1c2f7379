"""Facts about the host the grader runs on, asked without creating a CUDA context, and a quiet subprocess helper."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity: a scheduler's allocation, not the whole host)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@functools.cache
def gpu_count() -> int:
    """GPUs visible to nvidia-smi; asking the driver this way creates no CUDA context in the grader. Asked once per
    process: nvidia-smi takes up to a second or two on a host without the driver's persistence mode, and the
    controller asks several times before its workers start."""
    listing = run_quietly(["nvidia-smi", "-L"]) if shutil.which("nvidia-smi") else ""
    return sum(line.startswith("GPU ") for line in listing.splitlines())


def visible_gpus() -> list[str]:
    """The GPUs this run may hand out: those in the grader's own ``CUDA_VISIBLE_DEVICES`` when it is set (a scheduler's
    allocation, say ``2,3``; set but empty, none), else every GPU nvidia-smi lists."""
    given = os.environ.get("CUDA_VISIBLE_DEVICES")
    if given is not None:  # set but empty hides every GPU, as it does for CUDA itself
        return [g.strip() for g in given.split(",") if g.strip()]
    return [str(i) for i in range(gpu_count())]


def run_quietly(command: list[str]) -> str:
    """A command's stdout, or "" if it is missing, fails or hangs (for optional facts such as the GPU's name)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""

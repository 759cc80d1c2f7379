"""The GPU hand-out: which device a run uses, and which GPU each xdist worker's children get.

The controller keeps a pool of the visible GPUs and hands each worker the least-used one (``pytest_configure_node``),
which deals GPUs round-robin in worker order and gives a replacement worker the GPU its predecessor freed
(``pytest_testnodedown``); ``worker_id % n_gpus`` would double-book after a restart.
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.base.host import visible_gpus

GPU_POOL_KEY = pytest.StashKey[dict[str, int]]()
# The --device value of a GPU run: torch's name for the device, which a GPU child is also told (config["device"]).
GPU_DEVICE = "cuda"


def resolve_device(choice: str) -> str:
    if choice == "auto":
        return GPU_DEVICE if visible_gpus() else "cpu"
    if choice == GPU_DEVICE and not visible_gpus():
        raise pytest.UsageError(
            "--device cuda: no GPU is visible (nvidia-smi -L lists none, or CUDA_VISIBLE_DEVICES hides them)"
        )
    return choice


def open_pool(config: pytest.Config) -> None:
    """Controller of a GPU run: every visible GPU, none handed out yet."""
    config.stash[GPU_POOL_KEY] = {gpu: 0 for gpu in visible_gpus()}


def hand_out(node: Any) -> None:
    """Give a starting worker the least-used GPU (ties to the lowest number), if the run has a pool."""
    pool = node.config.stash.get(GPU_POOL_KEY, {})
    if pool:
        gpu = min(pool, key=lambda g: (pool[g], int(g)))
        pool[gpu] += 1
        node.workerinput["kernelgrade_gpu"] = gpu


def take_back(node: Any) -> None:
    """A finished or crashed worker's GPU goes back to the pool."""
    pool = node.config.stash.get(GPU_POOL_KEY, {})
    gpu = node.workerinput.get("kernelgrade_gpu")
    if gpu in pool:
        pool[gpu] -= 1

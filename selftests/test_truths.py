"""The run's shared truth store (plugins/isolate/truths.py): a truth is computed once per run and read by the rest; one
too large or unpicklable is computed by each process, side by side."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from plugins.isolate import truths
from plugins.isolate.truths import TruthStore


def test_a_truth_is_computed_once_and_read_by_the_others(tmp_path: Path) -> None:
    """Four workers (separate stores on one folder, as xdist workers are) ask at once: one computes, three wait and
    read the same values; their wait is counted as waiting, the computing one's is not."""
    calls = []

    def compute() -> dict[str, np.ndarray]:
        calls.append(1)
        time.sleep(0.2)
        return {"out": np.arange(5.0)}

    stores = [TruthStore(tmp_path) for _ in range(4)]
    results: list[dict[str, np.ndarray]] = [{}] * 4

    def ask(i: int) -> None:
        results[i] = stores[i].get(("kv", "c0", 0), compute)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1
    assert all(np.array_equal(r["out"], np.arange(5.0)) for r in results)
    assert sorted(s.waited > 0.1 for s in stores) == [False, True, True, True]
    assert TruthStore(tmp_path).get(("kv", "c1", 0), lambda: 7) == 7  # another key is another truth


def test_large_or_unpicklable_truths_are_computed_in_each_process_without_the_lock(tmp_path: Path, monkeypatch) -> None:
    """Past MAX_SHARED_BYTES (or when pickling fails) the first computation marks the truth local; later ones compute
    it again, at the same time as each other: three computations meet at a barrier, which they could not pass if each
    waited for the one before (as they did under the lock)."""
    monkeypatch.setattr(truths, "MAX_SHARED_BYTES", 100)
    store = TruthStore(tmp_path)
    assert store.get(("topk", "big", 0), lambda: np.zeros(1000)).shape == (1000,)
    assert not list(tmp_path.glob("*.pkl")) and len(list(tmp_path.glob("*.local"))) == 1
    together = threading.Barrier(3, timeout=10)
    met: list[bool] = []

    def compute() -> np.ndarray:
        try:
            together.wait()
            met.append(True)
        except threading.BrokenBarrierError:
            met.append(False)
        return np.zeros(1000)

    threads = [threading.Thread(target=TruthStore(tmp_path).get, args=(("topk", "big", 0), compute)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert met == [True, True, True]
    assert TruthStore(tmp_path).get(("beam", "closure", 0), lambda: lambda: 1)() == 1  # unpicklable: still served
    assert len(list(tmp_path.glob("*.local"))) == 2


def test_without_a_folder_every_call_computes(tmp_path: Path) -> None:
    store = TruthStore(None)
    assert [store.get(("kv", "c0", 0), lambda: 1), store.get(("kv", "c0", 0), lambda: 2)] == [1, 2]

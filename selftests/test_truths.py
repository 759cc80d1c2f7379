"""The run's shared truth store (plugins/isolate/truths.py): a truth is computed once per run and read by the rest; one
too large or unpicklable is computed by each process, side by side."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import pickle
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from plugins.isolate import truths
from plugins.isolate.truths import TruthStore
from reference.challenges import reference_module
from reference.contract import Bound, Expected


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
    assert not list(tmp_path.glob("*.npz")) and len(list(tmp_path.glob("*.local"))) == 1
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


class _Payload:
    """Unpickling this makes the folder ``ran``: proof that reading a truth ran code."""

    def __init__(self, folder: Path):
        self.folder = folder

    def __reduce__(self):
        return (os.mkdir, (str(self.folder / "ran"),))


def test_a_planted_pickle_never_runs_and_the_truth_is_computed(tmp_path: Path) -> None:
    """Files planted under a truth's name (a pickle with a payload; an .npz whose array holds one; a valid truth that
    others may write, or a link to one) are never loaded: the truth is computed and the file replaced."""
    key = ("flash_attention", "c0", 0)
    name = hashlib.sha256(repr(key).encode()).hexdigest()[:32]
    store = TruthStore(tmp_path / "truths")
    blob = pickle.dumps(_Payload(tmp_path))
    for suffix in (".pkl", ".npz"):
        (tmp_path / "truths" / f"{name}{suffix}").write_bytes(blob)
    assert np.array_equal(store.get(key, lambda: {"out": np.arange(3.0)})["out"], np.arange(3.0))
    assert not (tmp_path / "ran").exists()
    with open(tmp_path / "truths" / f"{name}.npz", "wb") as handle:  # an object array: pickled inside the .npz
        np.savez(handle, meta=np.frombuffer(b'{"array": "a0"}', np.uint8), a0=np.array([_Payload(tmp_path)]))
    assert truths.read(tmp_path / "truths" / f"{name}.npz") is None
    assert TruthStore(tmp_path / "truths").get(key, lambda: 5) == 5
    assert not (tmp_path / "ran").exists()
    assert truths.read(tmp_path / "truths" / f"{name}.npz") == (5,)  # replaced by the computed truth
    (tmp_path / "truths" / f"{name}.npz").chmod(0o666)  # writable by others: not the grader's own any more
    assert truths.read(tmp_path / "truths" / f"{name}.npz") is None
    os.symlink(tmp_path / "truths" / f"{name}.npz", tmp_path / "link.npz")
    assert truths.read(tmp_path / "link.npz") is None


# Beam search is not here: its truth carries the rescoring closure, computed in each process.
SHARED = ["flash_attention", "kv_cache", "layer_norm_bwd", "softmax_topk", "dflash_verify"]


@pytest.mark.parametrize("challenge", SHARED)
def test_truths_come_back_as_they_were_computed(tmp_path: Path, challenge: str) -> None:
    """A real case's truth (arrays, numbers, the contract's records) is written as data and read back equal, types
    and dtypes included."""
    reference = reference_module(challenge)
    case = next(c for c in reference.CASES if not c.is_speed)
    expected = reference.expected(case, reference.make_inputs(case, np.random.default_rng(0)))
    TruthStore(tmp_path).get((challenge, case.id, 0), lambda: expected)
    assert list(tmp_path.glob("*.npz")), "this truth was not shared"
    assert _same(TruthStore(tmp_path).get((challenge, case.id, 0), lambda: None), expected)


def test_a_truth_with_a_derive_closure_is_computed_in_each_process(tmp_path: Path) -> None:
    """An Expected whose derive is a closure is never written; each process computes it and its closure works."""
    made = Expected({"y": np.ones(2)}, {"y": Bound(0.0, 0.0, None)}, derive=lambda outputs: ({"n": len(outputs)}, {}))
    first = TruthStore(tmp_path).get(("t", "c", 0), lambda: made)
    again = TruthStore(tmp_path).get(("t", "c", 0), lambda: made)
    assert first.derive({"a": 1}) == again.derive({"a": 1}) == ({"n": 1}, {})
    assert not list(tmp_path.glob("*.npz")) and len(list(tmp_path.glob("*.local"))) == 1


def _same(got: object, want: object) -> bool:
    if type(got) is not type(want):
        return False
    if isinstance(want, np.ndarray):
        return got.dtype == want.dtype and got.shape == want.shape and np.array_equal(got, want, equal_nan=True)
    if isinstance(want, dict):
        return list(got) == list(want) and all(_same(got[k], want[k]) for k in want)
    if isinstance(want, (list, tuple)):
        return len(got) == len(want) and all(_same(a, b) for a, b in zip(got, want, strict=True))
    if dataclasses.is_dataclass(want):
        return all(_same(getattr(got, f.name), getattr(want, f.name)) for f in dataclasses.fields(want))
    return got == want or (got != got and want != want)  # NaN equals NaN here


def test_prepare_fills_the_store_once_and_keeps_nothing_it_cannot_share(tmp_path: Path, monkeypatch) -> None:
    """``prepare`` (a speed case's later trials, computed while its worker waits for the phase): a truth the store can
    share is computed once, and a later ``get`` reads it without computing; one it cannot share (too large) says False
    and is not computed again by ``prepare``; without a folder nothing is computed."""
    calls: list[str] = []

    def compute(name: str, size: int):
        return lambda: calls.append(name) or np.arange(float(size))

    store = TruthStore(tmp_path)
    assert store.prepare(("kv", "speed", 5), compute("shared", 5)) and calls == ["shared"]
    assert store.prepare(("kv", "speed", 5), compute("again", 5)) and calls == ["shared"]
    assert np.array_equal(TruthStore(tmp_path).get(("kv", "speed", 5), compute("read", 5)), np.arange(5.0))
    assert calls == ["shared"]
    monkeypatch.setattr(truths, "MAX_SHARED_BYTES", 100)
    assert not store.prepare(("kv", "speed", 6), compute("large", 1000)) and calls == ["shared", "large"]
    assert not store.prepare(("kv", "speed", 6), compute("large again", 1000)) and calls == ["shared", "large"]
    assert not TruthStore(None).prepare(("kv", "speed", 7), compute("nowhere", 5)) and len(calls) == 2

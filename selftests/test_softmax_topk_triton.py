"""The grader's Triton softmax + top-k (reference/softmax_topk_triton.py), run on the CPU by Triton's interpreter.

triton.jit reads TRITON_INTERPRET when it decorates a kernel, that is when the module is imported; another test in
this process may already have imported it compiled for a GPU, so the kernels run in a child process started with
TRITON_INTERPRET=1. The child saves its outputs; the float64 truth and every assertion stay in this process.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
# The interpreter takes 40 s here for a kernel the GPU runs compile and time on every grading run: -m slow runs it.
pytestmark = pytest.mark.slow

CHILD = """
import sys
import numpy as np, torch, triton, triton.language as tl
sys.path.insert(0, sys.argv[1])

@triton.jit
def _probe(OUT):
    tl.store(OUT + tl.arange(0, 4), tl.arange(0, 4))

try:  # can the interpreter run at all? (a failure of our kernels is not a reason to skip)
    probe = torch.zeros(4, dtype=torch.int32)
    _probe[(1,)](probe)
    assert probe.tolist() == [0, 1, 2, 3]
except Exception as exc:
    print(f"interpreter unavailable: {exc!r}")
    sys.exit(3)

from reference.softmax_topk_triton import launch_kernels, softmax_topk
inputs = np.load(sys.argv[2])
out = {}
for name in inputs.files:
    x, k = torch.from_numpy(inputs[name]), int(name.split("-k")[-1])
    index, prob, status = launch_kernels(x, k)
    out[name + "/kernel_index"], out[name + "/kernel_prob"], out[name + "/status"] = index, prob, status
    out[name + "/index"], out[name + "/prob"] = softmax_topk(x, k)
np.savez(sys.argv[3], **{key: value.numpy() for key, value in out.items()})
"""


def _cases() -> dict[str, np.ndarray]:
    """Small float32 rows; the id ends in -k<k>. Sizes are odd on purpose (see each comment)."""
    rng = np.random.default_rng(20261130)
    half_inf = rng.standard_normal((3, 2000)).astype(np.float32)
    half_inf[:, 1::2] = -np.inf  # every other entry -inf; 1000 finite entries remain per row
    return {
        "randn-r7-v1000-k8": rng.standard_normal((7, 1000)).astype(np.float32),  # one partial chunk
        "randn-r3-v1023-k50": rng.standard_normal((3, 1023)).astype(np.float32),  # odd V, unaligned rows
        "randn-r2-v5000-k256": rng.standard_normal((2, 5000)).astype(np.float32),  # 5 chunks, threshold rises
        "randn-r7-v1023-k1": rng.standard_normal((7, 1023)).astype(np.float32),  # the argmax kernel
        "x100-r3-v3001-k50": (100 * rng.standard_normal((3, 3001))).astype(np.float32),  # most probs underflow
        "all-equal-r2-v3000-k8": np.zeros((2, 3000), np.float32),  # ties everywhere: lowest indices win
        "all-equal-r2-v1000-k1": np.zeros((2, 1000), np.float32),  # argmax ties across lanes
        "three-values-r3-v3000-k50": rng.integers(0, 3, (3, 3000)).astype(np.float32),  # ~1000-way ties at the cut
        "half-inf-r3-v2000-k50": half_inf,
        "ascending-r1-v6000-k8": np.arange(6000, dtype=np.float32)[None],  # every chunk beats the last
        "k-equals-v-r2-v1000-k1000": rng.standard_normal((2, 1000)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Inputs and the child's outputs; skips when Triton or its interpreter is unavailable."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed, so its CPU interpreter cannot run the kernels")
    folder = tmp_path_factory.mktemp("softmax_topk_triton")
    cases = _cases()
    np.savez(folder / "in.npz", **cases)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    args = [sys.executable, "-c", CHILD, str(REPO), str(folder / "in.npz"), str(folder / "out.npz")]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600, check=False)
    if done.returncode == 3:
        pytest.skip(f"Triton's CPU interpreter cannot run here: {done.stdout.strip()}")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with np.load(folder / "out.npz") as out:
        return cases, dict(out)


def _assert_top_k(x: np.ndarray, k: int, index: np.ndarray, prob: np.ndarray) -> None:
    """A valid top-k set (any tie order), float64-accurate probabilities, descending."""
    assert index.shape == prob.shape == (x.shape[0], k) and index.dtype == np.int64 and prob.dtype == np.float32
    assert ((index >= 0) & (index < x.shape[1])).all()
    assert all(len(set(row)) == k for row in index.tolist()), "repeated index in a row"
    x64 = x.astype(np.float64)
    truth = np.exp(x64 - x64.max(1, keepdims=True))
    truth /= truth.sum(1, keepdims=True)
    kth = -np.sort(-truth, axis=1)[:, :k]
    got = np.take_along_axis(truth, index, 1)
    np.testing.assert_array_equal(got, kth)  # same multiset of probabilities: only exact ties may swap indices
    np.testing.assert_allclose(prob, got, rtol=2e-6, atol=1e-37)
    assert (np.diff(prob, axis=1) <= 0).all()


@pytest.mark.parametrize("name", list(_cases()))
def test_kernel_alone_is_exact(interpreted, name):
    """The kernel itself (no torch fallback) returns the top k with float64-accurate probabilities."""
    cases, out = interpreted
    k = int(name.split("-k")[-1])
    assert out[f"{name}/status"].tolist() == [0] * cases[name].shape[0], "the kernel gave up a row"
    _assert_top_k(cases[name], k, out[f"{name}/kernel_index"], out[f"{name}/kernel_prob"])


@pytest.mark.parametrize("name", ["all-equal-r2-v3000-k8", "all-equal-r2-v1000-k1", "three-values-r3-v3000-k50"])
def test_ties_go_to_the_lowest_index(interpreted, name):
    """Among equal logits the kernel takes the lowest indices, in index order."""
    cases, out = interpreted
    x, index = cases[name], out[f"{name}/kernel_index"]
    for row, picked in zip(x, index, strict=True):
        order = np.lexsort((np.arange(x.shape[1]), -row))  # value descending, then index ascending
        assert picked.tolist() == order[: index.shape[1]].tolist()


def test_fallback_covers_rows_with_fewer_than_k_finite_entries(tmp_path):
    """A row with 2 finite logits and k = 8 is flagged and redone by torch: distinct, valid indices."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[1])\n"
        "from reference.softmax_topk_triton import launch_kernels, softmax_topk\n"
        "x = torch.full((2, 300), float('-inf')); x[0, 5] = 1.0; x[0, 9] = 2.0; x[1] = torch.arange(300.0)\n"
        "print(launch_kernels(x, 8)[2].tolist()); i, p = softmax_topk(x, 8)\n"
        "print(sorted(set(i[0].tolist())) == sorted(i[0].tolist()), i[0, :2].tolist(), round(float(p[0, :2].sum()), 6))"
    )
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    done = subprocess.run([sys.executable, "-c", code, str(REPO)], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["[1, 0]", "True [9, 5] 1.0"]

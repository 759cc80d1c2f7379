"""Fused softmax + top-k (CUDA): the tie rule, the float64 reference, discovery and builds of CUDA sources, and the
demos' verdicts. Builds need nvcc (else skipped); the run verdicts need a GPU (else skipped, as in CI)."""

from __future__ import annotations

import shutil
import zlib

import numpy as np
import pytest

from conftest import FIXTURES, REPO
from plugins.base.host import gpu_count
from plugins.compare.comparator import check, compare_topk
from plugins.discover.entry_points import resolve_cuda
from plugins.isolate.build import build, nvcc_path
from reference import softmax_topk as topk
from reference.contract import TopK

TESTS = "tests/test_softmax_topk"
SEED = "20261130"
DEMOS = REPO / "submissions"
needs_nvcc = pytest.mark.skipif(nvcc_path() is None, reason="needs nvcc")
needs_gpu = pytest.mark.skipif(not gpu_count(), reason="needs a GPU (the CUDA run cases are skipped without one)")
RUN_CASES = {c.id for c in topk.CASES if c.category not in ("speed",) and not c.params.get("build")}


def topk_verdict(scores: list[list[float]], indices: list[list[int]]) -> str:
    comparison = compare_topk("indices", np.array(indices, dtype=np.int32), np.array(scores), TopK())
    return "pass" if comparison.passed else comparison.message.split("; ", 1)[1]


def test_tie_rule_accepts_any_tied_index_and_nothing_else():
    """With scores [5, 3, 3, 3, 1] and k = 2: index 0 first, then any of the three tied 3s; every other row fails."""
    scores = [[5.0, 3.0, 3.0, 3.0, 1.0]]
    for tied in (1, 2, 3):
        assert topk_verdict(scores, [[0, tied]]) == "pass"
    assert topk_verdict(scores, [[1, 2]]) == "row 0: misses an index whose score is above the k-th largest"
    assert topk_verdict(scores, [[1, 0]]) == "row 0: not in descending order of score"
    assert topk_verdict(scores, [[0, 4]]) == "row 0: an index whose score is below the k-th largest"
    assert topk_verdict(scores, [[0, 0]]) == "row 0: repeated index"
    assert topk_verdict(scores, [[0, 5]]) == "row 0: index out of range"


def test_tie_rule_with_minus_inf_and_all_equal_rows():
    """Fewer finite scores than k: any -inf indices complete the row; an all-equal row takes any distinct indices."""
    inf = float("inf")
    assert topk_verdict([[-inf, 2.0, -inf, 1.0]], [[1, 3, 2]]) == "pass"
    assert topk_verdict([[-inf, 2.0, -inf, 1.0]], [[1, 2, 3]]) == "row 0: not in descending order of score"
    assert topk_verdict([[0.5] * 6, [0.5] * 6], [[5, 0, 3], [1, 2, 4]]) == "pass"


def numpy_answer(x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A float32 softmax + top-k in NumPy: what a correct kernel returns, up to rounding."""
    idx = np.argsort(-x, axis=1, kind="stable")[:, :k].astype(np.int32)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return idx, (np.take_along_axis(e, idx, axis=1) / e.sum(axis=1, keepdims=True)).astype(np.float32)


def checks(case_id: str, answer=numpy_answer) -> dict[str, str]:
    """The failing checks' messages for ``answer`` on one case's inputs (the grader's comparisons, no sandbox)."""
    case = next(c for c in topk.CASES if c.id == case_id)
    inputs = topk.make_inputs(case, np.random.default_rng([1, zlib.crc32(case_id.encode())]))
    want = topk.expected(case, inputs)
    indices, probs = answer(inputs["logits"], case.params["k"])
    got = {"indices": indices, "probs": probs, "mass": probs.astype(np.float64).sum(axis=1)}
    return {n: c.message for n in want.values if not (c := check(n, got[n], want.values[n], want.bounds[n])).passed}


@pytest.mark.parametrize("case_id", sorted(RUN_CASES))
def test_float32_answer_passes_every_case(case_id):
    """A direct float32 softmax + top-k is within every bound: the float64 reference and its tolerances agree."""
    assert checks(case_id) == {}


def test_reference_probabilities_are_stable_and_exact():
    """The float64 top-k probabilities: no overflow at x100, 1/V on equal rows, zero for -inf entries."""
    x = np.array([[1000.0, 999.0, -np.inf, 0.0]], dtype=np.float32)
    p = topk.topk_probs(x, 3)
    want = np.exp([0.0, -1.0, -1000.0]) / (1 + np.exp(-1.0) + np.exp(-1000.0))
    np.testing.assert_allclose(p[0], want, rtol=1e-15)
    assert np.all(topk.topk_probs(np.zeros((2, 8), np.float32), 8) == 1 / 8)
    assert topk.topk_probs(np.array([[0.0, -np.inf]], np.float32), 2)[0, 1] == 0.0


def test_common_bugs_fail_their_checks():
    """Rows swapped (blocks mixing rows), probabilities renormalised over the top k, softmax without the max."""
    swapped = checks("r7-v50257-k50", lambda x, k: numpy_answer(x[::-1], k))
    assert swapped["indices"].startswith("indices: 1/7 rows matched")  # the middle row stays in place

    def renormalised(x, k):  # the softmax of the k logits alone: sums to 1, not to the top-k mass
        idx, p = numpy_answer(x, k)
        return idx, p / p.sum(axis=1, keepdims=True)

    assert set(checks("r7-v50257-k50", renormalised)) == {"probs", "mass"}

    def no_max(x, k):
        with np.errstate(over="ignore", invalid="ignore"):
            idx = numpy_answer(x, k)[0]
            e = np.exp(x)
            return idx, (np.take_along_axis(e, idx, axis=1) / e.sum(axis=1, keepdims=True)).astype(np.float32)

    assert "NaN" in checks("r7-v50257-k8-x100", no_max)["probs"]


def test_cuda_discovery(tmp_path):
    """adapter.cu wins; else the .cu that defines the extern "C" function; a folder without .cu has no CUDA source."""
    names = ("softmax_topk", "fuse")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "kernel.cu").write_text("template <int K> void launch();\n")
    (tmp_path / "a" / "test_kernel.cu").write_text('extern "C" int softmax_topk(int a, int b) { return 0; }\n')
    (tmp_path / "a" / "impl.cu").write_text('extern "C" {\nint softmax_topk(const float* x, int (*f)(int)) {\n}\n}\n')
    found = resolve_cuda(tmp_path / "a", ("softmax_topk",), names)
    assert found.chosen == {"softmax_topk": "impl.cu"} and found.others["softmax_topk"] == ("test_kernel.cu",)
    (tmp_path / "a" / "adapter.cu").write_text('#include "kernel.cu"\n')
    assert resolve_cuda(tmp_path / "a", ("softmax_topk",), names).via_adapter
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "README.md").write_text("# notes\n")
    empty = resolve_cuda(tmp_path / "b", ("softmax_topk",), names)
    assert empty.missing == ("softmax_topk",) and empty.problems == {".": "no CUDA source (.cu file)"}


@needs_nvcc
def test_build_is_cached_by_source(tmp_path):
    """The first build compiles, the second is a cache hit on the same library; an edited source builds anew."""
    folder = tmp_path / "src"
    shutil.copytree(DEMOS / "demo-tiled" / "softmax_topk", folder)
    first = build(folder, "softmax_topk.cu", ("softmax_topk",), cache=tmp_path / "cache")
    again = build(folder, "softmax_topk.cu", ("softmax_topk",), cache=tmp_path / "cache")
    assert first.ok and not first.cached and again.ok and again.cached and again.library == first.library
    with open(folder / "softmax_topk.cu", "a") as handle:
        handle.write("// edited\n")
    assert build(folder, "softmax_topk.cu", ("softmax_topk",), cache=tmp_path / "cache").key != first.key


@needs_nvcc
def test_build_failures_say_why(tmp_path):
    """A compile error shows nvcc's first errors; Markdown saved as .cu is named as such; a missing export is named."""
    nobuild = build(DEMOS / "demo-topk-nobuild" / "softmax_topk", "softmax_topk.cu", ("softmax_topk",), tmp_path)
    assert not nobuild.ok and "softmax_topk.cu(141): error: too few arguments in function call" in nobuild.message
    (tmp_path / "md").mkdir()
    (tmp_path / "md" / "softmax_topk.cu").write_text(
        "# Fused softmax + top-k\n\n```cuda\n__global__ void f() {}\n```\n"
    )
    markdown = build(tmp_path / "md", "softmax_topk.cu", ("softmax_topk",), tmp_path / "cache")
    assert not markdown.ok and markdown.message.startswith("softmax_topk.cu is not CUDA source: it reads as a Markdown")
    (tmp_path / "cpp").mkdir()
    (tmp_path / "cpp" / "k.cu").write_text("int softmax_topk(const float* x) { return 0; }\n")  # C++ linkage
    unexported = build(tmp_path / "cpp", "k.cu", ("softmax_topk",), tmp_path / "cache")
    assert not unexported.ok and 'exports no softmax_topk: the contract function needs C linkage (extern "C")' in (
        unexported.message
    )


@pytest.mark.grading_run
@needs_nvcc
def test_without_a_gpu_only_the_build_is_graded(grade):
    """--device=cpu (CI): each demo's build case is graded, nobuild's with its compiler errors; run cases skip."""
    run = grade("--device=cpu", "--seed", SEED, tests=TESTS)
    everything = run.records()
    records = {key: r for key, r in everything.items() if r["outcome"] != "skipped"}
    assert {case for (_, _, case) in records} == {"build"}
    skipped = {key: r for key, r in everything.items() if r["outcome"] == "skipped"}  # recorded with the reason
    assert skipped and all(
        r["message"].startswith("no GPU: this CUDA case runs only on a GPU") for r in skipped.values()
    )
    outcomes = {model: r["outcome"] for (model, _, _), r in records.items()}
    assert outcomes["demo-tiled"] == outcomes["demo-topk-k32"] == "passed"
    assert (
        outcomes["demo-topk-nobuild"] == "build"
        and "too few arguments" in records[("demo-topk-nobuild", "softmax_topk", "build")]["message"]
    )
    assert "no GPU: this CUDA case runs only on a GPU" in run.output
    grades = {m: d["challenges"]["softmax_topk"] for m, d in run.summary["models"].items()}
    # A kernel that builds is "built", never a letter: buggy kernels that compile must not read as A+ without a GPU.
    assert {m for m, g in grades.items() if g["letter"] == "built"} == set(outcomes) - {"demo-topk-nobuild"}
    assert grades["demo-topk-nobuild"]["letter"] == "F"
    assert any(note.startswith("build only: no GPU") for note in grades["demo-tiled"]["notes"])
    assert run.summary["models"]["demo-topk-mixrows"]["overall"] == "—"  # nothing gradable here: no overall letter
    assert "| demo-topk-mixrows " in (run.reports / "grades.md").read_text()


def failed(run, model: str) -> dict[str, dict]:
    return {case: r for (m, _, case), r in run.records().items() if m == model and r["outcome"] != "passed"}


@pytest.mark.grading_run
@needs_gpu
def test_demo_verdicts_on_the_gpu(grade):
    """The correct demo passes every case; each buggy demo fails the cases that catch its bug, and only those."""
    run = grade("--seed", SEED, "--no-speed", tests=TESTS)
    assert "INTERNALERROR" not in run.output
    assert failed(run, "demo-tiled") == {}, run.output[-3000:]
    assert set(failed(run, "demo-topk-mixrows")) == {"r4096-v1000-k1", "r4096-v1023-k50"}
    assert "rows matched" in failed(run, "demo-topk-mixrows")["r4096-v1023-k50"]["message"]
    assert set(failed(run, "demo-topk-unmerged")) == RUN_CASES
    oob = failed(run, "demo-topk-oob")
    assert set(oob) == RUN_CASES and all("guard byte(s) past the end" in r["message"] for r in oob.values())
    assert {r["outcome"] for r in failed(run, "demo-topk-nobuild").values()} == {"build"}
    limited = failed(run, "demo-topk-k32")
    assert set(limited) == {c.id for c in topk.CASES if c.id in RUN_CASES and c.params["k"] > 32}
    assert all(r["outcome"] == "error" and "returned 1 instead of 0" in r["message"] for r in limited.values())


@pytest.mark.grading_run
@needs_gpu
def test_cuda_fault_is_a_crash_and_the_next_case_runs(grade, tmp_path):
    """An illegal address (k = 50) is a crash of that case only; the cases after it pass in a fresh process."""
    folder = tmp_path / "bad-cuda-fault" / "softmax_topk"
    shutil.copytree(FIXTURES / "bad-cuda-fault" / "softmax_topk", folder)
    shutil.copy(REPO / "submissions" / "demo-tiled" / "softmax_topk" / "softmax_topk.cu", folder / "demo_kernel.cu")
    run = grade("--submissions-dir=" + str(tmp_path), "--model", "bad-cuda-fault", "--no-speed", tests=TESTS)
    crashed = failed(run, "bad-cuda-fault")
    assert set(crashed) == {c.id for c in topk.CASES if c.id in RUN_CASES and c.params["k"] == 50}
    assert all(r["outcome"] == "crash" and r["message"].startswith("CUDA fault:") for r in crashed.values())
    passed = {case for (_, _, case), r in run.records().items() if r["outcome"] == "passed"}
    assert {"r7-v151936-k8", "r7-v50257-k256"} <= passed  # each right after a crash, in case-table order

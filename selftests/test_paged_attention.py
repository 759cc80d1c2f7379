"""Paged-attention decode: the contract's truth and bound against NumPy models of correct kernels and of the classic
bugs, the grader's Triton kernel and the Triton demos under Triton's CPU interpreter, and nvcc builds of the CUDA
demos. CPU only: no case here needs a GPU (the graded run does).

Correct models (float32 throughout; flash-style rounding of the weights before P V; an output returned in the input
dtype) must pass every correctness case; each bug model must fail the cases that exist to catch it, by far more than
the bound (NaN, or over 10x).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import zlib
from functools import cache

import numpy as np
import pytest

from conftest import REPO
from plugins.compare.comparator import Comparison, check
from plugins.isolate.build import build, nvcc_path
from reference import paged_attention_decode as pa
from reference.contract import Case

RUN_CASES = [c for c in pa.CASES if not c.is_speed and not c.params.get("build")]
TILE = 16  # the flash-style model's tokens per step
WARPS = 4  # the race model's warps (as in the CUDA demo)


@cache
def truth(case_id: str) -> tuple[dict[str, np.ndarray], object]:
    """Inputs and Expected of a case at a fixed seed per case."""
    case = next(c for c in pa.CASES if c.id == case_id)
    inputs = pa.make_inputs(case, np.random.default_rng([1, zlib.crc32(case_id.encode())]))
    return inputs, pa.expected(case, inputs)


def softmax_v(s: np.ndarray, v: np.ndarray, bug: str, dtype: str) -> np.ndarray:
    """One head's output from its float32 scores and values, as a kernel of kind ``bug`` computes it."""
    if s.size == 0:  # every token dropped: 0 / 0, as a kernel's empty loop gives
        return np.full(v.shape[1], np.nan, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if bug == "no-max":
            e = np.exp(s)
            return (e @ v) / e.sum()
        if bug == "flash":  # tiles with a running max; the weights rounded to the input dtype before P V
            tile_max = np.maximum.accumulate(np.maximum.reduceat(s, np.arange(0, s.size, TILE)))
            running = np.repeat(tile_max, TILE)[: s.size]
            rescale = np.exp(running - tile_max[-1])
            e = np.exp(s - running)
            return ((pa.round_to(e, dtype) * rescale) @ v) / (e * rescale).sum()
        e = np.exp(s - s.max())
        if bug == "sum-in-dtype":  # the denominator accumulated in the input dtype, one token at a time
            total = np.float32(0)
            for term in e:
                total = pa.round_to(np.asarray([total + term], np.float32), dtype)[0]
            return (e @ v) / total
        return (e @ v) / e.sum()


def model(case: Case, x: dict[str, np.ndarray], bug: str = "") -> np.ndarray:
    """out (B, H, D) of a NumPy model of a kernel: "" float32, "flash", or one of the bugs named in the tests."""
    if bug == "race":
        return race(case, x)
    p = case.params
    dtype, bs, kv = p["dtype"], p["block_size"], p["num_kv_heads"]
    q = pa.as_float32(x["q"], dtype)
    B, H, D = q.shape
    out = np.empty((B, H, D), np.float32)
    for b, length in enumerate(x["context_lens"].tolist()):
        n = {"drop-partial": length - length % bs, "past-one": length + 1}.get(bug, length)
        count = -(-n // bs)
        table = x["block_tables"][b, :count]
        if bug == "contiguous":
            table = (table[0] + np.arange(count)) % x["k_cache"].shape[0]
        keys = pa.as_float32(x["k_cache"][table].reshape(-1, kv, D), dtype)
        values = pa.as_float32(x["v_cache"][table].reshape(-1, kv, D), dtype)
        for h in range(H):
            j = h % kv if bug == "gqa-head" else h // (H // kv)
            s = (keys[:n, j] @ q[b, h]) * np.float32(p["scale"])
            if bug == "zero-times-poison":  # the whole last block's values, weights 0 past the context
                s = np.concatenate([s, np.full(keys.shape[0] - n, -np.inf, np.float32)])
                with np.errstate(invalid="ignore"):
                    out[b, h] = softmax_v(s, values[:, j], "", dtype)
                continue
            out[b, h] = softmax_v(s, values[:n, j], bug, dtype)
    return out


def race(case: Case, x: dict[str, np.ndarray]) -> np.ndarray:
    """The CUDA demo's missing barrier: warp 3's partial (m, l, acc) is read before it is written, so the merge gets
    the one left in shared memory by the block before, here the previous head's."""
    p = case.params
    dtype, kv = p["dtype"], p["num_kv_heads"]
    q = pa.as_float32(x["q"], dtype)
    B, H, D = q.shape
    out = np.empty((B, H, D), np.float32)
    for b, length in enumerate(x["context_lens"].tolist()):
        keys = pa.context_of(x["k_cache"], x["block_tables"][b], length)
        values = pa.context_of(x["v_cache"], x["block_tables"][b], length)
        parts = []
        for h in range(H):
            k, v = (pa.as_float32(a[:, h // (H // kv)], dtype) for a in (keys, values))
            s = (k @ q[b, h]) * np.float32(p["scale"])
            parts.append([_partial(s[w::WARPS], v[w::WARPS]) for w in range(WARPS)])
        for h in range(H):
            merged = parts[h][: WARPS - 1] + [parts[(h - 1) % H][WARPS - 1]]
            top = max(m for m, _, _ in merged)
            weights = [np.exp(m - top) if m > -np.inf else 0.0 for m, _, _ in merged]
            num = sum(c * acc for c, (_, _, acc) in zip(weights, merged, strict=True))
            out[b, h] = num / sum(c * total for c, (_, total, _) in zip(weights, merged, strict=True))
    return out


def _partial(s: np.ndarray, v: np.ndarray) -> tuple[float, float, np.ndarray]:
    if s.size == 0:
        return -np.inf, 0.0, np.zeros(v.shape[1], np.float32)
    e = np.exp(s - s.max())
    return float(s.max()), float(e.sum()), e @ v


def verdict(case: Case, bug: str = "", as_dtype: bool = False) -> Comparison:
    x, want = truth(case.id)
    got = model(case, x, bug)
    if as_dtype:  # a Python answer that returns q's dtype: rounded once
        got = pa.round_to(got, case.params["dtype"])
    return check("out", got, want.values["out"], want.bounds["out"])


@pytest.mark.parametrize("case", RUN_CASES, ids=lambda c: c.id)
@pytest.mark.parametrize("kind", ["", "flash"], ids=["float32", "flash"])
@pytest.mark.parametrize("as_dtype", [False, True], ids=["float32-out", "dtype-out"])
def test_correct_kernels_pass(case, kind, as_dtype):
    """Float32 accumulation, flash-style rounding of P, and either returned in q's dtype: all within the bound."""
    comparison = verdict(case, kind, as_dtype)
    assert comparison.passed, comparison.message


# Each bug and the cases that must catch it (far beyond the bound); ``spared`` must not (the bug is harmless there).
CATCHES = {
    "contiguous": ({"b4-h8-kv8-d128-bs16-n512-f16", "b4-h32-kv8-d128-bs16-n1000-bf16"}, set()),
    "drop-partial": (
        {"b3-h8-kv2-d128-bs16-n1-f16", "b7-h8-kv8-d64-bs16-n47-f16", "b6-h16-kv2-d128-bs32-n65-bf16"}, set()
    ),
    "gqa-head": (
        {"b4-h32-kv8-d128-bs16-n1000-f16", "b3-h32-kv4-d128-bs16-n1200-bf16"}, {"b4-h8-kv8-d128-bs16-n512-f16"}
    ),
    "no-max": ({"b3-h8-kv8-d128-bs16-n2000-f16", "b2-h32-kv8-d128-bs16-n1500-bf16"}, {"b4-h8-kv8-d128-bs16-n512-f16"}),
    "past-one": ({c.id for c in RUN_CASES}, set()),
    "zero-times-poison": ({"b7-h8-kv8-d64-bs16-n47-f16"}, {"b3-h8-kv8-d128-bs16-n250-f16"}),
    # The model swaps warp 3's partial only: its cases give warp 3 tokens (on the device any warp may read stale).
    "race": ({"b4-h8-kv8-d128-bs16-n512-f16", "b4-h32-kv8-d128-bs16-n1000-f16"}, set()),
    "sum-in-dtype": ({"b1-h8-kv8-d64-bs32-n32768-bf16"}, set()),
}  # fmt: skip


@pytest.mark.parametrize("bug", list(CATCHES))
def test_each_bug_fails_far_beyond_the_bound(bug):
    """The bug's catching cases fail with NaN or an error over 10x the bound; its spared cases pass."""
    catching, spared = CATCHES[bug]
    for case in (c for c in RUN_CASES if c.id in catching | spared):
        comparison = verdict(case, bug)
        if case.id in spared:
            assert comparison.passed, (bug, case.id, comparison.message)
        else:
            assert comparison.nan or comparison.bound_ratio > 10, (bug, case.id, comparison.message)


def test_a_read_one_slot_past_the_context_changes_the_output_far_beyond_the_bound():
    """Finite poison (the "big" case): one extra slot read moves outputs by more than 100x the bound, no NaN."""
    comparison = verdict(next(c for c in RUN_CASES if c.params["poison"] == "big"), "past-one")
    assert comparison.nan == 0 and comparison.bound_ratio > 100, comparison.message


def test_poison_and_layout():
    """Blocks are shuffled (not in table order); every slot past a context and every unused table entry is poison."""
    case = next(c for c in RUN_CASES if c.id == "b7-h8-kv8-d64-bs16-n47-f16")
    x, _ = truth(case.id)
    bs, tables, lens = case.params["block_size"], x["block_tables"], x["context_lens"]
    used = [tables[b, : -(-n // bs)] for b, n in enumerate(lens.tolist())]
    flat = np.concatenate(used)
    assert len(set(flat.tolist())) == flat.size and not np.array_equal(flat, np.sort(flat))
    for b, n in enumerate(lens.tolist()):
        assert np.isnan(x["k_cache"][tables[b, -(-n // bs) :]]).all()  # unused entries: poison blocks
        last = x["v_cache"][tables[b, (n - 1) // bs]]
        assert np.isnan(last[(n - 1) % bs + 1 :]).all() and not np.isnan(last[: (n - 1) % bs + 1]).any()


def test_bfloat16_rounding_and_read_bytes():
    """Round to nearest even at the bfloat16 boundary; the floor's bytes follow the case params alone."""
    x = np.array([1.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8, -2.5, np.nan], np.float32)
    assert pa.as_float32(pa.to_bfloat16_bits(x), "bfloat16")[:4].tolist() == [1.0, 1.0, 1.0 + 2**-6, -2.5]
    speed = next(c for c in pa.CASES if c.id == "b8-h32-kv8-d128-bs16-n4096-f16-speed")
    assert pa.read_bytes(speed.params) == 8 * 4096 * 8 * 128 * 2 * 2


INTERPRETED = """
import importlib.util, sys
import numpy as np, torch, triton, triton.language as tl
repo, cases_file, out_file = sys.argv[1:4]
sys.path.insert(0, repo)

@triton.jit
def _probe(OUT, N):
    total = 0
    for i in range(tl.program_id(0), tl.load(N), 1):  # bounds from the program id and a load, as the kernels have
        total += i
    tl.store(OUT, total)

try:  # can this Triton's interpreter run such a loop at all? (a failure of our kernels is not a reason to skip)
    probe, n = torch.zeros(1, dtype=torch.int32), torch.full((1,), 4, dtype=torch.int32)
    _probe[(1,)](probe, n)
    assert probe.item() == 6
except Exception as exc:
    print(f"interpreter unavailable: Triton {triton.__version__}, NumPy {np.__version__}: {exc!r}")
    sys.exit(3)

from reference import paged_attention_decode_triton as ref

def load(name):
    path = f"{repo}/submissions/{name}/paged_attention_decode/paged_attention_decode.py"
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.paged_attention_decode

answers = {"reference": ref.paged_attention_decode, "reference-split": lambda *a: ref.paged_attention_decode(*a, 64)}
answers |= {name: load(name) for name in sys.argv[4:]}
data = np.load(cases_file)
out = {}
for cid in sorted({key.split("/")[0] for key in data.files}):
    x = {key.split("/")[1]: data[key] for key in data.files if key.startswith(cid + "/")}
    bf16 = x["q"].dtype == np.uint16  # bfloat16 bit patterns
    typed = lambda a: torch.from_numpy(a.view(np.int16)).view(torch.bfloat16) if bf16 else torch.from_numpy(a)
    args = (*(typed(x[k]) for k in ("q", "k_cache", "v_cache")), torch.from_numpy(x["block_tables"]),
            torch.from_numpy(x["context_lens"]), float(x["scale"]))
    for name, answer in answers.items():
        out[f"{cid}/{name}"] = answer(*args).float().numpy()
np.savez(out_file, **out)
"""
# Small cases built like the hidden ones (the interpreter is slow): a partial block and one of length 1, bfloat16 with
# 32-token blocks, finite poison, scores x40.
SMALL = (
    pa.paged_case("edge", "partial blocks, GQA 4", [47, 16, 1, 33], 8, 2, 64, 16),
    pa.paged_case("edge", "bfloat16, 32-token blocks", [65, 32, 3], 8, 8, 128, 32, "bfloat16"),
    pa.paged_case("edge", "finite poison", [17, 64, 40], 8, 8, 64, 16, poison="big"),
    pa.paged_case("precision", "scores x40", [300, 5], 4, 4, 64, 16, q_std=40.0),
)
TRITON_DEMOS = {  # demo -> the small cases it must fail
    "demo-triton": set(),
    "demo-paged-contiguous": {c.id for c in SMALL},  # every one has a sequence of several blocks
    "demo-paged-drop-partial": {SMALL[0].id, SMALL[1].id, SMALL[2].id, SMALL[3].id},
    "demo-paged-gqa-head": {SMALL[0].id},
    "demo-paged-no-max": {SMALL[3].id},
}


@pytest.fixture(scope="module")
def interpreted(tmp_path_factory) -> tuple[dict[str, object], dict[str, np.ndarray]]:
    """Expected per small case, and the outputs of the reference (one partition and several) and the Triton demos
    run by TRITON_INTERPRET=1 in a child (triton.jit reads it at import); skips without Triton."""
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed, so its CPU interpreter cannot run the kernels")
    folder = tmp_path_factory.mktemp("paged_attention")
    arrays, expected = {}, {}
    for case in SMALL:
        x = pa.make_inputs(case, np.random.default_rng(5))
        expected[case.id] = pa.expected(case, x)
        arrays |= {f"{case.id}/{k}": v for k, v in x.items()} | {f"{case.id}/scale": np.asarray(case.params["scale"])}
    np.savez(folder / "in.npz", **arrays)
    args = [sys.executable, "-c", INTERPRETED, str(REPO), str(folder / "in.npz"), str(folder / "out.npz")]
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([*args, *TRITON_DEMOS], env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode == 3:  # Triton 3.6's interpreter under NumPy 2.4 cannot take a loop bound from a program id
        pytest.skip(done.stdout.strip()[-300:])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with np.load(folder / "out.npz") as out:
        return expected, dict(out)


@pytest.mark.parametrize("case", SMALL, ids=lambda c: c.id)
@pytest.mark.parametrize("answer", ["reference", "reference-split", *TRITON_DEMOS])
def test_triton_kernels_under_the_interpreter(interpreted, case, answer):
    """The grader's kernel (with its split-K merge) and demo-triton pass; each bug demo fails its cases."""
    expected, out = interpreted
    want = expected[case.id]
    comparison = check("out", out[f"{case.id}/{answer}"], want.values["out"], want.bounds["out"])
    must_fail = case.id in TRITON_DEMOS.get(answer, set())
    assert comparison.passed != must_fail, comparison.message
    if must_fail:
        assert comparison.nan or comparison.bound_ratio > 10, comparison.message


@pytest.mark.skipif(nvcc_path() is None, reason="needs nvcc")
@pytest.mark.parametrize("demo", ["demo-tiled", "demo-paged-race"])
def test_cuda_demos_build(demo, tmp_path):
    """The CUDA demos compile with the grader's nvcc flags and export the C entry point."""
    folder = REPO / "submissions" / demo / "paged_attention_decode"
    result = build(folder, "paged_attention_decode.cu", ("paged_attention_decode",), cache=tmp_path)
    assert result.ok, result.message

"""Adapters (docs/adapters.md): each worked example is a real fixture, graded like the native correct demo, and the
report shows native or adapter (N lines) per submission; the doc's code blocks are the fixtures' code.

One grading run covers every fixture model beside ``demo-tiled`` on a few cases of each challenge (``--no-speed``):
an adapter-driven submission must get the same letter, the same points and the same passed cases as the native demo.
Without a GPU the CUDA shim is only built, like the demo's native CUDA source (``built``). A second, smaller run
grades the same fixtures with their adapters removed: each deviation must then fail, so no example is one that would
have passed anyway (lists for tuples aside, which need no adapter).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import REPO, ROSTER_SEED, run_grader
from plugins.discover.submissions import adapter_code_lines
from plugins.isolate import runtimes

ADAPTERS = Path(__file__).resolve().parent / "fixtures" / "adapters"
# The own-model KV example: graded beside demo-kv-own under its own profile (scaffold), not beside demo-tiled.
OWN_MODEL = Path(__file__).resolve().parent / "fixtures" / "adapters_own"
OWN_NATIVE = "demo-kv-own"
DOC = REPO / "docs" / "adapters.md"
NATIVE = "demo-tiled"
PACKAGES = (
    "tests/test_beam_search",
    "tests/test_kvcache",
    "tests/test_layernorm",
    "tests/test_dflash",
    "tests/test_flash",
    "tests/test_softmax_topk",
)
# A few cases per challenge, each one a trap of its own (the ids match test ids as substrings, so e.g. the f32 case
# also selects its -keep robustness twin): ties and EOS in beam search; 32 steps, padding and two live caches in the
# KV cache; constant rows, a 1e4 mean offset and float32 in layer norm; random trees and the speculative loop in
# DFlash; uneven tiles, an odd head dim and overflow-scale scores in flash attention; the CUDA build.
CASES = " or ".join(
    (
        "greedy-k1-a0", "ties-lexicographic", "eos-logprob-counted",
        "b2-p20-s32-h4-d64-l2", "b4-p7.30.1.16-s6-h4-d64-l2-w37", "b4-p11.6.9.14-s6-h4-d64-l2-split",
        "b2-t50-d768-eps1e-5-const", "b2-t32-d1024-eps1e-12-off1e4-std1e-4", "b2-t64-d1023-eps1e-5-f32",
        "random-trees-24", "loop-share0.5", "repeated-siblings",
        "b1-h2-n300-d64-t97-causal", "b2-h2-n200-d59-t64-causal", "b1-h2-n256-d64-t64-causal-s300",
        "build",
    )
)  # fmt: skip
NATIVE_WITHOUT_ADAPTER = {"list-return"}  # lists for tuples: accepted as they are
# The doc promises "a small file": the largest worked example (the CUDA shim) has 20 code lines, so a count of 25 or
# more means an example outgrew that promise or the line counter took comments and docstrings in.
ADAPTER_MOST_LINES = 25


def fixture_folders() -> list[tuple[str, str]]:
    """(case model, challenge) of every worked example."""
    return sorted((d.parent.name, d.name) for d in ADAPTERS.glob("*/*") if d.is_dir())


@pytest.fixture(scope="module")
def graded(tmp_path_factory: pytest.TempPathFactory):
    """The fixture models and demo-tiled's folders for the same challenges, graded in one run."""
    tree = tmp_path_factory.mktemp("adapters") / "submissions"
    shutil.copytree(ADAPTERS, tree)
    for _, challenge in fixture_folders():
        if not (tree / NATIVE / challenge).exists():
            shutil.copytree(REPO / "submissions" / NATIVE / challenge, tree / NATIVE / challenge)
    args = (f"--submissions-dir={tree}", "--no-speed", "--seed", ROSTER_SEED, "-k", CASES)
    return run_grader(tree.parent, *args, *(str(REPO / p) for p in PACKAGES[1:]), tests=PACKAGES[0])


@pytest.fixture(scope="module")
def without_adapters(tmp_path_factory: pytest.TempPathFactory):
    """The same fixtures with their adapters removed, graded on one cheap case per challenge."""
    tree = tmp_path_factory.mktemp("no-adapters") / "submissions"
    shutil.copytree(ADAPTERS, tree, ignore=shutil.ignore_patterns("adapter.py", "adapter.cu"))
    cases = " or ".join(("greedy-k1-a0", "b1-p16-s8-h4-d64-l2", "b4-t8-d512-eps1e-5", "chain-all", "n40-d64", "build"))
    args = (f"--submissions-dir={tree}", "--no-speed", "--seed", ROSTER_SEED, "-k", cases)
    return run_grader(tree.parent, *args, *(str(REPO / p) for p in PACKAGES[1:]), tests=PACKAGES[0])


def _outcomes(run, model: str, challenge: str) -> dict[str, str]:
    return {case: rec["outcome"] for (m, c, case), rec in run.records().items() if (m, c) == (model, challenge)}


@pytest.mark.grading_run
@pytest.mark.parametrize(("model", "challenge"), fixture_folders())
def test_adapter_is_graded_like_the_native_demo(graded, model, challenge):
    """Same letter, same points, same case outcomes as demo-tiled on the same cases: no deduction for an adapter."""
    if challenge == "softmax_topk" and not shutil.which("nvcc"):
        pytest.skip("no nvcc: neither the shim nor the native CUDA source can be built here")
    grades = graded.summary["models"]
    mine, native = grades[model]["challenges"][challenge], grades[NATIVE]["challenges"][challenge]
    assert (mine["letter"], mine["points"]) == (native["letter"], native["points"]), graded.output[-3000:]
    outcomes = _outcomes(graded, model, challenge)
    assert outcomes == _outcomes(graded, NATIVE, challenge) and outcomes, (outcomes, mine["failed"])
    if challenge == "softmax_topk":  # -k selects its build case only: a compiled source reads "built", GPU or not
        assert outcomes == {"build": "passed"} and mine["letter"] == "built"
    else:
        assert set(outcomes.values()) == {"passed"} and mine["letter"] == "A+"


@pytest.mark.grading_run
def test_interface_column_and_compliance_section(graded):
    """Each submission is native or adapter (N lines), N the adapter's code lines, in results.json and grades.md."""
    header = {(s["model"], s["challenge"]): s for s in graded.summary["submissions"]}
    text = (graded.reports / "grades.md").read_text()
    assert "## Interface compliance" in text and "| interface" in text
    section = text.split("## Interface compliance", 1)[1]
    for model, challenge in fixture_folders():
        sub = header[model, challenge]
        folder = ADAPTERS / model / challenge
        runtime = runtimes.runtime(sub["language"])  # the runtime discovery gave it, by the files it holds
        assert runtime.name == ("cuda" if challenge == "softmax_topk" else "python")
        if model in NATIVE_WITHOUT_ADAPTER:
            assert (sub["runtime"], sub["adapter_lines"]) == ("native", None)
            continue
        lines = adapter_code_lines(folder, runtime)
        assert (sub["runtime"], sub["adapter_lines"]) == ("adapter", lines) and 0 < lines < ADAPTER_MOST_LINES
        assert re.search(rf"\| {re.escape(model)} +\|.*\| adapter \({lines} lines\) +\|", text), model
        row = next(line for line in section.splitlines() if line.startswith(f"| {model} "))
        assert f"1: {challenge} ({lines} lines)" in row and re.search(rf"\| {lines} +\|$", row), row
    assert re.search(rf"\| {NATIVE} +\| {len(set(c for _, c in fixture_folders()))}: ", section)


@pytest.mark.grading_run
@pytest.mark.parametrize(("model", "challenge"), fixture_folders())
def test_each_deviation_fails_without_its_adapter(without_adapters, model, challenge):
    """The fixtures need their adapters: without one, every selected case fails (lists for tuples still pass)."""
    if challenge == "softmax_topk" and not shutil.which("nvcc"):
        pytest.skip("no nvcc: the CUDA shim's fixture cannot be built here, with or without its adapter")
    outcomes = _outcomes(without_adapters, model, challenge)
    if model in NATIVE_WITHOUT_ADAPTER:
        assert outcomes and set(outcomes.values()) == {"passed"}, outcomes
    else:
        assert outcomes and "passed" not in outcomes.values(), outcomes


def test_adapter_line_count_skips_comments_docstrings_and_blanks(tmp_path):
    """Only code lines count: comments, docstrings and blank lines do not; a statement over two lines counts two."""
    (tmp_path / "adapter.py").write_text(
        '"""Module docstring\nover two lines."""\n\n# a comment\nimport impl  # trailing comment\n\n\n'
        'def f(x):\n    """Docstring."""\n    return impl.g(x,\n                  1)\n'
    )
    assert adapter_code_lines(tmp_path, runtimes.PYTHON) == 4
    (tmp_path / "adapter.cu").write_text('// c\n#include "k.cu"\n/* a\n   b */\nextern "C" int f() {\n  return 0;\n}\n')
    assert adapter_code_lines(tmp_path, runtimes.CUDA) == 4
    assert adapter_code_lines(tmp_path / "absent", runtimes.PYTHON) is None


def doc_blocks() -> list[tuple[str, str, str]]:
    """(language, code, fixture path or "") for each fenced block of docs/adapters.md. A block belongs to the file
    named ``File `path`:`` in the text just before it; a block right after another belongs to the same file."""
    blocks, current = [], ""
    pieces = re.split(r"^```([\w+]*)\n(.*?)^```\n", DOC.read_text(), flags=re.DOTALL | re.MULTILINE)
    for i in range(0, len(pieces) - 1, 3):
        before, language, code = pieces[i], pieces[i + 1], pieces[i + 2]
        named = re.findall(r"File\s+`(selftests/fixtures/adapters/[^`]+)`:\s*$", before)
        current = named[-1] if named else (current if not before.strip() else "")
        blocks.append((language, code, current))
    return blocks


def test_doc_code_blocks_are_the_fixtures_code():
    """Every code block the doc ties to a fixture file is in that file; each adapter is shown whole."""
    blocks = doc_blocks()
    tied = [(code, path) for _, code, path in blocks if path]
    # Not vacuous: every worked example has code the doc ties to one of its files (the parse found them all).
    tied_examples = {Path(path).relative_to(ADAPTERS.relative_to(REPO)).parts[:2] for _, path in tied}
    assert tied_examples == set(fixture_folders()), [path for _, path in tied]
    for code, path in tied:
        assert code in (REPO / path).read_text(), f"docs/adapters.md drifted from {path}:\n{code}"
    shown_whole = {path for code, path in tied if code == (REPO / path).read_text()}
    adapters = {p.relative_to(REPO).as_posix() for p in ADAPTERS.glob("*/*/adapter.*")}
    assert adapters and adapters <= shown_whole, adapters - shown_whole
    for model, challenge in fixture_folders():  # every worked example is named by the doc
        assert f"selftests/fixtures/adapters/{model}/{challenge}/" in DOC.read_text()


@pytest.mark.grading_run
def test_own_model_kv_adapter_is_graded_like_its_native_demo(tmp_path):
    """The class-based model behind an own-model KV adapter gets demo-kv-own's letter, points and case outcomes on
    the same cases (its kernelgrade-task.toml picks scaffold, whose KV contract is own-model), in under 25 lines."""
    tree = tmp_path / "submissions"
    shutil.copytree(OWN_MODEL, tree)
    shutil.copytree(REPO / "submissions" / OWN_NATIVE, tree / OWN_NATIVE)
    cases = "own-b1-p16-s8 or own-b4-p7.30.1.16-s6-w9 or own-b2-p97.5-s8-same"
    run = run_grader(tmp_path, f"--submissions-dir={tree}", "--no-speed", "--seed", ROSTER_SEED, "-k", cases,
                     tests="tests/test_kvcache")  # fmt: skip
    grades = run.summary["models"]
    mine, native = grades["own-model"]["challenges"]["kv_cache"], grades[OWN_NATIVE]["challenges"]["kv_cache"]
    assert (mine["letter"], mine["points"]) == (native["letter"], native["points"]), run.output[-3000:]
    outcomes = _outcomes(run, "own-model", "kv_cache")
    assert outcomes == _outcomes(run, OWN_NATIVE, "kv_cache") and set(outcomes.values()) == {"passed"}, outcomes
    assert len(outcomes) == 3 and mine["letter"] == "A+"
    lines = adapter_code_lines(OWN_MODEL / "own-model" / "kv_cache", runtimes.PYTHON)
    sub = next(s for s in run.summary["submissions"] if s["model"] == "own-model")
    assert (sub["runtime"], sub["adapter_lines"]) == ("adapter", lines) and 0 < lines < ADAPTER_MOST_LINES


def test_own_model_doc_blocks_are_the_fixture_code():
    """Example h's code blocks are in their fixture files, its adapter shown whole."""
    text = DOC.read_text()
    section = text.split("### h. ", 1)[1].split("\n## ", 1)[0]
    pieces = re.split(r"File\s+`(selftests/fixtures/adapters_own/[^`]+)`:\s*```python\n(.*?)^```", section,
                      flags=re.DOTALL | re.MULTILINE)  # fmt: skip
    tied = list(zip(pieces[1::3], pieces[2::3], strict=True))
    assert [Path(p).name for p, _ in tied] == ["gpt.py", "adapter.py"]
    for path, code in tied:
        assert code in (REPO / path).read_text(), f"docs/adapters.md drifted from {path}"
    assert tied[1][1] == (REPO / tied[1][0]).read_text()  # the adapter, whole

"""A public model-comparison repository graded in place: Python, CUDA (``fuse``) and MLX folders beside session logs,
Markdown, data files and the models' own tests, none of which the grader collects, imports or runs.

The tree is ``<repo>/<model>/<folder>/`` as such repos lay it out. The model's own test scripts and ``conftest.py``
files would write a marker file (an absolute path outside the sandbox, so only the grader's own process could write
it) and then exit or raise: a marker that exists means one of them ran. One of the test scripts also defines the
entry point (by importing it), so discovery must prefer the real module over it.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import REPO, ROSTER_SEED, run_grader

pytestmark = pytest.mark.grading_run

MODEL = "kimi-k2"
HAS_MLX = importlib.util.find_spec("mlx") is not None
HAS_NVCC = shutil.which("nvcc") is not None
# Uneven tiles (with the float32 twins the id also selects), the CUDA build, one quantizer case of the MLX trainer.
CASES = "b1-h2-n300-d64-t97-causal or build or q-64x384-g128"
TESTS = ("tests/test_flash", "tests/test_softmax_topk", "tests/test_ternary")


def _trap(markers: Path, name: str, how: str) -> str:
    """Source of a file that must never run: it leaves a marker, then fails the way the model's own tests would."""
    return f"from pathlib import Path\nPath({str(markers / name)!r}).write_text('ran')\n{how}\n"


def build_repo(root: Path, markers: Path) -> Path:
    """``root/repo``: one model's folders for flash attention (Python), fuse (CUDA) and ternary training (MLX)."""
    repo = root / "repo"
    model = repo / MODEL
    demo = REPO / "submissions"
    shutil.copytree(demo / "demo-tiled" / "flash_attention", model / "flash_attention")
    (model / "flash_attention" / "flash_attention.py").rename(model / "flash_attention" / "attention.py")
    shutil.copytree(demo / "demo-tiled" / "softmax_topk", model / "fuse")
    (model / "fuse" / "softmax_topk.cu").rename(model / "fuse" / "topk.cu")
    shutil.copytree(demo / "demo-ternary-mlx" / "ternary_training", model / "ternary_training")
    (repo / "README.md").write_text("# LLM kernel shootout\n\n| model | flash | fuse |\n| --- | --- | --- |\n")
    (repo / "leaderboard.json").write_text('{"kimi-k2": {"flash": "pass"}}\n')
    (repo / "conftest.py").write_text(_trap(markers, "repo-conftest", "raise RuntimeError('repo conftest imported')"))
    (model / "session.log").write_text("$ python test_attention.py\nTraceback (most recent call last):\n")
    (model / "CHAT.md").write_text("# Session\n\n**user:** write flash attention\n\n```python\nprint('hi')\n```\n")
    flash = model / "flash_attention"
    (flash / "test_attention.py").write_text(
        _trap(markers, "flash-test", "from attention import flash_attention_fwd\nimport sys\nsys.exit(1)")
    )
    (flash / "conftest.py").write_text(_trap(markers, "flash-conftest", "raise RuntimeError('conftest imported')"))
    np.save(flash / "inputs.npy", np.arange(12.0).reshape(3, 4))
    (flash / "weights.bin").write_bytes(bytes(range(256)) * 8192)  # 2 MiB of data beside the code
    (flash / "NOTES.md").write_text("Tiles of 64; see session.log.\n")
    (model / "fuse" / "test_topk.py").write_text(_trap(markers, "fuse-test", "import sys\nsys.exit(1)"))
    (model / "fuse" / "bench.json").write_text('{"ms": 1.2}\n')
    ternary = model / "ternary_training"
    (ternary / "test_ternary.py").write_text(_trap(markers, "ternary-test", "raise SystemExit(1)"))
    (ternary / "CHAT.md").write_text("Trained with MLX on a laptop.\n")
    return repo


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory):
    """(the graded run, the markers folder): the repo graded with ``--submissions-dir`` pointing at it."""
    root = tmp_path_factory.mktemp("foreign")
    markers = root / "markers"
    markers.mkdir()
    repo = build_repo(root, markers)
    args = (f"--submissions-dir={repo}", "--no-speed", "--seed", ROSTER_SEED, "-k", CASES)
    run = run_grader(root, *args, *(str(REPO / t) for t in TESTS[1:]), tests=TESTS[0])
    return run, markers


def test_folders_found_under_our_ids(foreign):
    """flash_attention, fuse and ternary_training are found as our three challenges; the real module beats the test."""
    run, _ = foreign
    found = {(s["model"], s["challenge"]): s for s in run.summary["submissions"]}
    assert set(found) == {(MODEL, "flash_attention"), (MODEL, "softmax_topk"), (MODEL, "ternary_training")}
    assert Path(found[MODEL, "softmax_topk"]["folder"]).name == "fuse"
    assert found[MODEL, "flash_attention"]["loaded"] == (
        "native: flash_attention_fwd from attention.py (also in test_attention.py)"
    )
    assert found[MODEL, "softmax_topk"]["loaded"] == "native: softmax_topk from topk.cu"


def test_none_of_the_models_own_tests_ran(foreign):
    """No test script, conftest or repo-level conftest of the model was imported or run, in any process."""
    run, markers = foreign
    assert list(markers.iterdir()) == [], run.output[-3000:]
    assert "conftest imported" not in run.output


def test_python_and_mlx_folders_get_their_grades(foreign):
    """Flash passes its cases (A+); MLX passes where installed, else skips with the optional extra named."""
    run, _ = foreign
    assert run.returncode == 0, run.output[-3000:]
    grades = run.summary["models"][MODEL]["challenges"]
    outcomes = {case: rec["outcome"] for (m, c, case), rec in run.records().items() if c == "flash_attention"}
    assert len(outcomes) == 3 and set(outcomes.values()) == {"passed"}, outcomes
    assert grades["flash_attention"]["letter"] == "A+"
    if HAS_MLX:
        assert run.records()[MODEL, "ternary_training", "q-64x384-g128"]["outcome"] == "passed"
    else:  # the documented status: skipped with the optional extra named, never scored
        assert grades["ternary_training"]["letter"] == "skipped here" and "requirements-mlx.txt" in run.output
        assert any("requirements-mlx.txt" in note for note in grades["ternary_training"]["notes"])


@pytest.mark.skipif(not HAS_NVCC, reason="no nvcc: the CUDA fuse folder cannot be built here")
def test_cuda_folder_is_built(foreign):
    """The CUDA ``fuse`` folder builds and reads ``built`` (no GPU needed for the build case)."""
    run, _ = foreign
    assert run.summary["models"][MODEL]["challenges"]["softmax_topk"]["letter"] == "built", run.output[-3000:]
    assert run.records()[MODEL, "softmax_topk", "build"]["outcome"] == "passed"


def test_clone_holding_submissions_is_graded_the_same(tmp_path):
    """A clone whose submissions sit under ``submissions/`` is accepted as the same tree (one flash case)."""
    markers = tmp_path / "markers"
    markers.mkdir()
    clone = tmp_path / "clone"
    clone.mkdir()
    build_repo(tmp_path, markers).rename(clone / "submissions")
    (clone / "README.md").write_text("# A clone with its submissions one level down\n")
    run = run_grader(tmp_path, f"--submissions-dir={clone}", "--no-speed", "-k", "b1-h2-n40-d64-t64-causal")
    assert run.returncode == 0, run.output[-3000:]
    records = run.records()
    assert records[MODEL, "flash_attention", "b1-h2-n40-d64-t64-causal"]["outcome"] == "passed"
    assert Path(run.summary["submissions"][0]["folder"]).is_relative_to(clone / "submissions")
    assert list(markers.iterdir()) == []

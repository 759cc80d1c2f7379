"""Hostile submissions against the sandbox layer: each attack of ``fixtures/adversarial`` gets its own verdict, and a
correct control model graded in the same run keeps its grade.

The attacks are graded in three real grading runs (``tests/test_flash`` only, a few cases each, see ``SELECTED``): one
sequential run without speed holds most of them; one under ``-n 2`` holds the attack on the grader's process; one
with speed holds the attacks on timing. Special files (a FIFO, links, sparse files) and the rubric copy that some
attacks aim at are made here, in the temporary copy of the roster: git keeps none of them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, GradingRun, run_grader
from plugins.base.host import gpu_count
from reference import softmax_topk as topk
from reference.challenges import reference_module

pytestmark = pytest.mark.grading_run
needs_gpu = pytest.mark.skipif(not gpu_count(), reason="needs a GPU (run on the H200 device machine)")

ADVERSARIAL = Path(__file__).resolve().parent / "fixtures" / "adversarial"
MEMORY_CASE = "b1-h1-n4096-d64-t128-causal-mem"
BWD_MEMORY_CASE = MEMORY_CASE
# The memory case, a core case and an edge case with N = 300 (where self-sigkill strikes): enough for every verdict.
SELECTED = "n4096 or n256-d64-t64-causal or n300-d64-t97-causal"
MEMORY_CHEATS = ["forge-main-clock", "reset-tracemalloc-peak", "reset-rss-peak", "forked-nxn", "stack-sniffer"]
CONTAINED = [
    *MEMORY_CHEATS,
    "cache-nxn",
    "rubric-rewriter",
    "rival-overwriter",
    "setsid-reports",
    "kill-grader",
    "sigint-grader",
    "self-sigkill",
    "stdout-flood",
    "rival-killer",
    "fifo-data",
    "symlink-zero",
    "symlink-escape",
    "sparse-file",
]


def build_roster(root: Path, models: list[str]) -> tuple[Path, Path]:
    """A submissions folder with the given attacks and ``control`` (demo-tiled's flash attention), special files
    made in place; and a copy of the rubric for ``--rubric`` (what rubric-rewriter and symlink-escape aim at)."""
    submissions, rubric = root / "submissions", root / "rubric.toml"
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "plugins" / "grade" / "rubric.toml", rubric)
    for model in models:
        shutil.copytree(ADVERSARIAL / model, submissions / model)
    for challenge in ("flash_attention", "flash_attention_bwd"):
        shutil.copytree(REPO / "submissions" / "demo-tiled" / challenge, submissions / "control" / challenge)
    special = {
        "fifo-data": lambda f: os.mkfifo(f / "data.fifo"),
        "symlink-zero": lambda f: (f / "weights.bin").symlink_to("/dev/zero"),
        "symlink-escape": lambda f: (f / "rubric.toml").symlink_to(rubric),
        "sparse-file": _sparse_files,
    }
    for model, make in special.items():
        if model in models:
            make(submissions / model / "flash_attention")
    return submissions, rubric


def _sparse_files(folder: Path) -> None:
    with open(folder / "big.bin", "wb") as handle:
        handle.truncate(2**30)
    with open(folder / "mid.bin", "wb") as handle:
        handle.seek(48 * 2**20 - 5)
        handle.write(b"data!")


@pytest.fixture(scope="module")
def contained(tmp_path_factory: pytest.TempPathFactory) -> tuple[GradingRun, Path, Path]:
    root = tmp_path_factory.mktemp("adversarial")
    submissions, rubric = build_roster(root, CONTAINED)
    run = run_grader(root, "--no-speed", f"--submissions-dir={submissions}", f"--rubric={rubric}", "-k", SELECTED)
    return run, submissions, rubric


def outcomes(run: GradingRun, model: str) -> dict[str, str]:
    return {case: rec["outcome"] for (m, _, case), rec in run.records().items() if m == model}


def test_control_keeps_its_grade(contained):
    """The correct control passes every selected case and keeps A+ beside every attack."""
    run, _, _ = contained
    assert (run.reports / "results.json").exists(), run.output[-3000:]
    assert set(outcomes(run, "control").values()) == {"passed"}, outcomes(run, "control")
    assert run.letters()["control"] == {"flash_attention": "A+", "flash_attention_bwd": "A+"}


@pytest.mark.parametrize("model", [*MEMORY_CHEATS, "cache-nxn", "rubric-rewriter", "sigint-grader", "symlink-escape"])
def test_memory_cheats_are_measured_from_outside(contained, model):
    """Forged clocks and counters, reset peaks, forked work, stack sniffing and an N x N cache: the memory case fails
    on the grader's own measurement; every other case passes."""
    run, _, _ = contained
    challenge = "flash_attention_bwd" if model == "cache-nxn" else "flash_attention"
    record = run.records()[(model, challenge, MEMORY_CASE)]
    budget = next(c for c in record["checks"] if c["name"] == "peak allocation")
    assert record["outcome"] == "wrong" and budget["bound_ratio"] > 2, record["message"]
    assert {o for case, o in outcomes(run, model).items() if case != MEMORY_CASE} == {"passed"}


def test_writes_outside_the_folder_change_nothing(contained):
    """The rubric (through the grader's option or a link in the folder) and the rival's source stay as they were."""
    run, submissions, rubric = contained
    assert rubric.read_bytes() == (REPO / "plugins" / "grade" / "rubric.toml").read_bytes()
    assert "sabotaged" not in (submissions / "control" / "flash_attention" / "flash_attention.py").read_text()
    assert run.letters()["rubric-rewriter"]["flash_attention"] != "A+"


def test_nothing_outlives_the_run(contained):
    """The setsid grandchild that waits to rewrite grades.md after the run is gone with its sandbox."""
    run, _, _ = contained
    time.sleep(3)  # it would write 1.5 s after grades.md appears
    assert "FORGED" not in (run.reports / "grades.md").read_text()


def test_signals_do_not_reach_the_grader(contained):
    """SIGKILL and SIGINT sent to the child's parent end nothing: every model has every selected case recorded, and a
    sandbox that hunts its siblings finds none."""
    run, _, _ = contained
    per_challenge: dict[str, int] = {}
    for model, challenge, _ in run.records():
        per_challenge[challenge] = per_challenge.get(challenge, 0) + (model == "control")
    cases = {m: len(outcomes(run, m)) for m in CONTAINED}
    assert cases == {
        m: per_challenge["flash_attention_bwd" if m == "cache-nxn" else "flash_attention"] for m in CONTAINED
    }
    assert set(outcomes(run, "kill-grader").values()) == set(outcomes(run, "rival-killer").values()) == {"passed"}


def test_self_kill_is_a_crash_not_oom(contained):
    """A submission that SIGKILLs itself crashed; the kernel counted no out-of-memory kill."""
    run, _, _ = contained
    record = run.records()[("self-sigkill", "flash_attention", "b1-h2-n300-d64-t97-causal")]
    assert record["outcome"] == "crash" and "SIGKILL" in record["message"], record["message"]


def test_stdout_flood_keeps_a_tail(contained):
    """300 MiB printed at import: the record keeps a short tail and says how much was cut; the cases pass."""
    run, _, _ = contained
    record = next(r for (m, _, _), r in run.records().items() if m == "stdout-flood" and r["stdout"])
    assert "bytes cut" in record["stdout"] and len(record["stdout"]) < 5000
    assert set(outcomes(run, "stdout-flood").values()) == {"passed"}


def test_special_files_are_left_out_with_a_note(contained):
    """A FIFO, a link to /dev/zero, a link out of the folder and an oversized sparse file are left out of the copy,
    each named in results.json; the submissions are graded as usual."""
    run, _, _ = contained
    notes = run.summary["sandbox"]["copy_notes"]
    assert "a FIFO" in notes["fifo-data/flash_attention"][0]
    assert "/dev/zero" in notes["symlink-zero/flash_attention"][0]
    assert "outside the submission's folder" in notes["symlink-escape/flash_attention"][0]
    assert len(notes["sparse-file/flash_attention"]) == 1 and "big.bin" in notes["sparse-file/flash_attention"][0]
    for model in ("fifo-data", "symlink-zero", "sparse-file"):
        assert set(outcomes(run, model).values()) == {"passed"}, model


def test_grader_killer_under_xdist(tmp_path):
    """Under -n 2 the attack on the worker process changes nothing: the control's every case runs and keeps A+."""
    submissions, _ = build_roster(tmp_path, ["kill-grader"])
    run = run_grader(tmp_path, "-n", "2", "--no-speed", f"--submissions-dir={submissions}", "-k", SELECTED)
    control = [rec["outcome"] for (model, _, _), rec in run.records().items() if model == "control"]
    selected = [c for ref in ("flash_attention", "flash_attention_bwd") for c in reference_module(ref).CASES]
    selected = [c for c in selected if not c.is_speed and any(k in c.id for k in SELECTED.split(" or "))]
    assert set(control) == {"passed"} and len(control) == len(selected), run.output[-2000:]
    assert run.letters()["control"]["flash_attention"] == "A+"


@pytest.mark.exclusive  # compares two speed ratios
def test_timing_attacks(tmp_path):
    """A memoiser gains nothing from fresh inputs (it is as slow as the control, same algorithm), and a submission
    holding the old machine-wide speed lock no longer stops the speed cases."""
    submissions, _ = build_roster(tmp_path, ["memoiser", "speed-lock-grabber"])
    # The forward's speed case only, two timed trials: it is at the task's scale (seconds per request).
    selected = "(causal-speed and not bwd) or n256-d64-t64-causal"
    run = run_grader(
        tmp_path, f"--submissions-dir={submissions}", "--speed-repeats", "2", "--speed-max-trials", "2", "-k", selected
    )
    speed = {m: r["speed"] for (m, c, case), r in run.records().items() if c == "flash_attention" and r["speed"]}
    assert set(speed) == {"memoiser", "speed-lock-grabber", "control"}, run.output[-2000:]
    assert speed["memoiser"]["ratio"] > 0.5 * speed["control"]["ratio"], speed


def test_killed_run_leaves_nothing_behind(tmp_path, monkeypatch):
    """A grading run killed by SIGKILL leaves its run folder; the next run's start removes it, and a finished run
    leaves none of its own."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    submissions, _ = build_roster(tmp_path / "roster", [])
    command = [sys.executable, "-m", "pytest", "-c", str(REPO / "pytest.ini"), "--rootdir", str(REPO), "-p",
               "no:cacheprovider", f"--reports-dir={tmp_path / 'r1'}", f"--submissions-dir={submissions}", "--no-speed",
               str(REPO / "tests" / "test_flash")]  # fmt: skip
    killed = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not list((tmp_path / "tmp").glob("kernelgrade-run-*/sandboxes/*")) and time.monotonic() < deadline:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert list((tmp_path / "tmp").glob("kernelgrade-run-*")), "the killed run made no run folder"
    run = run_grader(tmp_path, "--no-speed", f"--submissions-dir={submissions}", "-k", "n40-d64")
    assert json.loads((run.reports / "results.json").read_text())["cases"]
    assert not list((tmp_path / "tmp").glob("kernelgrade-run-*"))


CUDA_ATTACKS = ["cuda-other-stream", "cuda-oob-read", "cuda-trap"]
CUDA_RUN_CASES = {c.id for c in topk.CASES if not c.params.get("build") and not c.is_speed}
# The GPT-2-vocabulary speed case (4096 rows): long enough that work left on another stream would show.
CUDA_SPEED = next(c.id for c in topk.CASES if c.is_speed and c.params["rows"] == 4096)


@needs_gpu
def test_cuda_attacks_are_caught_and_contained(tmp_path):
    """Work on another stream is waited for and timed in full; an out-of-bounds read gives wrong answers; a trap
    crashes the cases that run it and no other; the next submission (victim: the correct demo) passes everything."""
    submissions = tmp_path / "submissions"
    demo = REPO / "submissions" / "demo-tiled" / "softmax_topk"
    for model in CUDA_ATTACKS:
        shutil.copytree(ADVERSARIAL / model, submissions / model)
        shutil.copy(demo / "softmax_topk.cu", submissions / model / "softmax_topk" / "demo_kernel.cu")
    shutil.copytree(demo, submissions / "victim" / "softmax_topk")
    selected = f"not speed or {CUDA_SPEED}"
    run = run_grader(
        tmp_path, f"--submissions-dir={submissions}", "-n", "4", "-k", selected, tests="tests/test_softmax_topk"
    )
    verdicts = {m: outcomes(run, m) for m in [*CUDA_ATTACKS, "victim"]}
    assert set(verdicts["victim"].values()) == {"passed"}, run.output[-3000:]
    assert set(verdicts["cuda-other-stream"].values()) == {"passed"}
    speed = {m: run.records()[(m, "softmax_topk", CUDA_SPEED)]["speed"] for m in ("cuda-other-stream", "victim")}
    assert 0.5 < speed["cuda-other-stream"]["median_s"] / speed["victim"]["median_s"] < 2, speed
    # A one-row case reads a single stray float past the row: when that value is small the answer is still right, so
    # only cases of several rows (read at a shifted stride, hence mixed) must all be wrong.
    mixed = {c.id for c in topk.CASES if c.id in CUDA_RUN_CASES and c.params["rows"] > 1}
    assert "passed" not in {verdicts["cuda-oob-read"][c] for c in mixed}
    trapped = {c for c in CUDA_RUN_CASES if verdicts["cuda-trap"][c] == "crash"}
    assert trapped == {c.id for c in topk.CASES if c.id in CUDA_RUN_CASES and c.params["k"] == 8}
    assert {verdicts["cuda-trap"][c] for c in CUDA_RUN_CASES - trapped} == {"passed"}

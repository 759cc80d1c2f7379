"""The Slurm example on a real Slurm: ``docs/examples/slurm_submit.sh`` queues the shards as a job array and the merge
behind them, and the merged grades equal a one-shot run's.

Needs a Slurm whose controller answers (``bash setup.sh slurm`` sets up a single node where apt is usable); skipped,
saying why, where there is none. Slow: two shards and a one-shot run of a few flash-attention cases, about a minute
on the 2-core machine: ``python -m pytest selftests/test_slurm.py -m slow``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, ROSTER_SEED, GradingRun, run_grader

# The demos split on these (tile size 1, a single token) within seconds; no spaces: GRADE_ARGS is split on them.
CASES = "(n33)or(n1-d64)"
SHARDS = 2
WAIT_S = 600

pytestmark = [pytest.mark.slow, pytest.mark.grading_run]


def slurm_missing() -> str:
    """Why no real Slurm can take the jobs here ("" when one can)."""
    if shutil.which("sbatch") is None or shutil.which("squeue") is None:
        return "no sbatch: Slurm is not installed (bash setup.sh slurm sets up a single node where apt is usable)"
    state = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=30, check=False)
    if state.returncode != 0 or not re.search(r"idle|mixed|allocated", state.stdout):
        return f"no Slurm node is up (sinfo: {(state.stdout + state.stderr).strip()[:200]})"
    return ""


def wait_for(jobs: list[str]) -> None:
    """Until Slurm lists none of the jobs any more (ended, however they ended)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        listed = subprocess.run(["squeue", "-h", "-j", ",".join(jobs)], capture_output=True, text=True, check=False)
        if not listed.stdout.strip():
            return
        time.sleep(2)
    subprocess.run(["scancel", *jobs], check=False)
    raise AssertionError(f"jobs {jobs} still queued or running after {WAIT_S} s")


def grades(run: GradingRun) -> dict[str, dict[str, tuple[str, float]]]:
    models = run.summary["models"].items()
    return {m: {c: (g["letter"], g["points"]) for c, g in d["challenges"].items()} for m, d in models}


def test_sharded_run_on_slurm_merges_to_the_one_shot_grades(tmp_path: Path):
    """The example's shards and merge, submitted to Slurm with resources from the environment, give the grades,
    points and case outcomes of one unsharded run with the same seed."""
    if reason := slurm_missing():
        pytest.skip(reason)
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",  # the jobs' python is this one
        "SHARDS": str(SHARDS),
        "CPUS_PER_SHARD": "1",
        "GPUS_PER_SHARD": "0",
        "SEED": ROSTER_SEED,
        "SHARDS_DIR": str(tmp_path / "shards"),
        "REPORTS": str(tmp_path / "merged"),
        "LOGS": str(tmp_path / "logs"),
        "GRADE_ARGS": f"--no-speed -k {CASES} -p no:cacheprovider tests/test_flash",
    }
    submitted = subprocess.run(["bash", "docs/examples/slurm_submit.sh"], cwd=REPO, env=env, capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    jobs = re.findall(r"job (\d+)", submitted.stdout.splitlines()[-1])
    assert len(jobs) == 2, submitted.stdout
    whole = run_grader(tmp_path, "--no-speed", "--seed", ROSTER_SEED, "-k", CASES)  # meanwhile, beside the shards
    wait_for(jobs)
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "logs").glob("*.log")))
    merged = GradingRun(0, logs, tmp_path / "merged")
    assert (tmp_path / "merged" / "results.json").is_file(), logs
    assert grades(merged) == grades(whole) and grades(whole), (grades(merged), grades(whole))
    outcomes = {key: r["outcome"] for key, r in merged.records().items()}
    assert outcomes == {key: r["outcome"] for key, r in whole.records().items()}
    shards = merged.summary["shards"]
    assert len(shards) == SHARDS, shards

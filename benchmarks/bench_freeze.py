"""What fair timing costs the speed phase: the same grading run with the freezing of idle children on and off.

    python benchmarks/bench_freeze.py                        # -n 2, the bundled roster, each mode twice
    python benchmarks/bench_freeze.py -n 16 --repeat 3       # the GPU host
    python benchmarks/bench_freeze.py -k flash --pytest-args="--speed-repeats 2"

Each run is ``python -m pytest -n N --seed S`` on the repo's tests and submissions (speed on), reports to a temporary
folder, with ``KERNELGRADE_FREEZE`` set to ``on`` or ``off`` (runs alternate, off first; plugins/isolate/fairness.py
reads it). Left-running checks, disk caps and pinning stay on in both modes: only the freezing of the run's other
children while a case is timed, and of each side of a timed pair while the other runs, is switched. The speed phase's
wall time comes from results.json: from the first speed case's start (``timing.began_at``) to the last one's end
(``began_at + case_s``). Printed, never asserted: per run the speed phase's wall, the run's wall, the speed cases run
and the sum of their case times; then the median of each mode and their difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SEED = "20261130"


def grade(workers: int, freeze: str, selection: str, extra: list[str]) -> dict[str, Any]:
    """One grading run with freezing ``freeze`` ("on" or "off"): its wall time and speed-phase figures."""
    with tempfile.TemporaryDirectory() as reports:
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--seed={SEED}", "-n", str(workers)]
        command += [f"--reports-dir={reports}", *(["-k", selection] if selection else []), *extra]
        env = {**os.environ, "KERNELGRADE_FREEZE": freeze}
        start = time.perf_counter()
        done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        try:
            cases = json.loads((Path(reports) / "results.json").read_text())["cases"]
        except (OSError, ValueError, KeyError):
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            raise SystemExit(f"the run with freezing {freeze} wrote no results.json (exit {done.returncode})") from None
    return {"freeze": freeze, "wall_s": wall} | speed_phase(cases)


def speed_phase(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The speed phase of a run from its case records: its wall time, its cases, their summed case times."""
    timed = [c for c in cases if c.get("category") == "speed" and c.get("timing", {}).get("began_at")]
    if not timed:
        return {"speed_wall_s": 0.0, "speed_cases": 0, "speed_case_s": 0.0}
    starts = [c["timing"]["began_at"] for c in timed]
    ends = [c["timing"]["began_at"] + c["timing"]["case_s"] for c in timed]
    return {
        "speed_wall_s": max(ends) - min(starts),
        "speed_cases": len(timed),
        "speed_case_s": sum(c["timing"]["case_s"] for c in timed),
        "left_running": sum(c.get("outcome") == "left_running" for c in cases),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--workers", type=int, default=2, help="xdist workers (default: 2)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per mode, alternating (default: 2)")
    parser.add_argument("-k", dest="selection", default="", help="pytest -k expression for every run")
    parser.add_argument("--pytest-args", default="", help="more pytest arguments, quoted as one string")
    args = parser.parse_args()
    runs = []
    for index in range(args.repeat):
        for freeze in ("off", "on"):
            run = grade(args.workers, freeze, args.selection, shlex.split(args.pytest_args))
            runs.append(run)
            print(
                f"run {index + 1} freezing {freeze:3}: speed phase {run['speed_wall_s']:7.1f} s "
                f"({run['speed_cases']} speed cases, {run['speed_case_s']:.1f} case-s), run {run['wall_s']:.1f} s, "
                f"{run.get('left_running', 0)} left_running",
                flush=True,
            )
    medians = {
        mode: statistics.median(r["speed_wall_s"] for r in runs if r["freeze"] == mode) for mode in ("off", "on")
    }
    change = medians["on"] - medians["off"]
    print(
        f"speed phase at -n {args.workers}, median of {args.repeat}: freezing off {medians['off']:.1f} s, "
        f"on {medians['on']:.1f} s ({change:+.1f} s, {change / medians['off'] * 100 if medians['off'] else 0:+.0f}%)"
    )


if __name__ == "__main__":
    main()

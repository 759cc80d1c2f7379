"""Figures for the grader itself: wall time of the default grading run, and the sandbox's overhead per call.

    python benchmarks/bench_grader.py            # both figures
    python benchmarks/bench_grader.py --calls 500 --skip-run

Prints figures only; it asserts nothing (timings are not pass/fail tests). Goals from the issue: the default run within
60 s on a 2-core machine, and a median overhead per call within 20 ms.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugins.isolate.sandbox import Limits, Program, Sandbox  # noqa: E402
from reference import flash_attention  # noqa: E402

TRIVIAL = "def flash_attention_fwd(Q, K, V, tile_size, causal=True):\n    return V\n"


def grading_run_seconds() -> tuple[float, int]:
    """Wall time of the README's grading command (``python -m pytest -n auto``), reports to a temporary folder."""
    with tempfile.TemporaryDirectory() as reports:
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-n", "auto", "-q", f"--reports-dir={reports}"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - start
    print(done.stdout.strip().splitlines()[-1])
    return elapsed, done.returncode


def sandbox_overhead(calls: int) -> dict[str, float]:
    """Round trip of one request to a warm child running a trivial entry point: what the sandbox costs per call.

    The grader times requests itself (from outside the child), so there is no in-child time to subtract: with an entry
    point that does nothing, the round trip is the overhead (pipes, input digests, measurement sampling)."""
    case = next(c for c in flash_attention.CASES if c.params["N"] == 1)
    inputs = flash_attention.make_inputs(case, np.random.default_rng(0))
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "impl.py").write_text(TRIVIAL)
        program = Program("reference.flash_attention", (("flash_attention_fwd", "impl.py"),), Path(folder))
        sandbox = Sandbox(program, Limits(call_timeout_s=30, memory_bytes=4 << 30, device="cpu"), REPO)
        start = time.perf_counter()
        sandbox.run(inputs, dict(case.params), {})  # spawn + import + first call
        first = time.perf_counter() - start
        round_trips = []
        for _ in range(calls):
            start = time.perf_counter()
            sandbox.run(inputs, dict(case.params), {})
            round_trips.append(time.perf_counter() - start)
        sandbox.close()
    return {
        "first_call_s": first,
        "median_overhead_ms": 1e3 * statistics.median(round_trips),
        "p90_overhead_ms": 1e3 * statistics.quantiles(round_trips, n=10)[-1],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200, help="requests timed for the overhead figure")
    parser.add_argument("--skip-run", action="store_true", help="only the sandbox overhead")
    args = parser.parse_args()
    figures = sandbox_overhead(args.calls)
    print(
        f"sandbox: first call (spawn + import) {figures['first_call_s'] * 1e3:.0f} ms; "
        f"median round trip per call {figures['median_overhead_ms']:.2f} ms "
        f"(p90 {figures['p90_overhead_ms']:.2f} ms) over {args.calls} calls"
    )
    if not args.skip_run:
        seconds, code = grading_run_seconds()
        print(
            f"default grading run (python -m pytest -n auto): {seconds:.1f} s wall, exit code {code} "
            "(1 is expected: the demo roster holds failing submissions)"
        )


if __name__ == "__main__":
    main()

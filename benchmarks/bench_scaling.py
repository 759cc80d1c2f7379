"""How the grading run scales: with xdist workers on one host, with the number of models, and what the grader itself
costs against the submissions' time.

    python benchmarks/bench_scaling.py                          # every figure, sizes fitted to this machine
    python benchmarks/bench_scaling.py --workers 1,2,4,8,16 --copies 8 --growth 1,2,4,8,16 --speed-runs
    python benchmarks/bench_scaling.py --workers 1,2 --growth 1,2 --out figures.json

The roster is ``--copies`` copies of the demo roster's correct model (``demo-tiled``, every challenge) plus one of each
buggy demo, written to a temporary submissions folder, so every challenge is present and failures cost what they cost.
Each run is ``python -m pytest -n N --seed S --no-speed`` on it (reports to a temporary folder); figures come from the
wall clock and from the case records in results.json (``timing.case_s``: a case's wall time in its worker;
``timing.truth_s``: the grader's own reference work inside it; ``timing.began_at``: when it started, for the timeline
of start-up, cases and end). Every run after the first starts from the first run's results.json, as a user's second
run starts from the first (the scheduler orders units by those case times); ``--cold`` leaves that out, and
``--warm-from FILE`` starts every run from a kept results.json instead (worker counts measured in separate calls).
Before the measured runs, one untimed run of one copy warms the machine's caches (``--no-warmup`` skips it).

Printed, never asserted (timings are not pass/fail tests):

1. per worker count: wall time, parallel efficiency ``T(1) / (N * T(N))``, and the worst per-case slowdown against
   ``-n 1`` (median of the cases too: a case's time under load over its time alone);
2. ``--speed-agreement`` (also ``--speed-runs``): the credited speed ratio (the median of per-trial ratios) of every
   speed case in a run with one worker, one with the most workers and a second with the most workers, as a table,
   then the median and largest relative difference over the cases between the first and each other run and between
   the last two, beside the median difference the runs' own trial noise would give (from each case's interval) and how
   many cases lie within two combined errors (``--speed-bundled``: the repository's own roster; ``--agreement-of
   A.json B.json ...``: the same table from kept results.json files, no run);
3. per number of copies of the whole roster: wall time, time per model and its growth;
4. the split of one run: collection (discovery and test collection), the grader's reference work, the submissions'
   time (sandbox start, calls, judging) and report writing.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugins.base.host import host_cores  # noqa: E402 (the repository root goes on the path first)
from plugins.report import files  # noqa: E402

SEED = "20261130"
CORRECT = "demo-tiled"


@dataclass
class Runs:
    """What every grading run of this benchmark shares (set once from the command line)."""

    extra: list[str] = field(default_factory=list)  # --pytest-args, added to every run
    warm: bool = True  # later runs start from the first run's results.json (not --cold)
    keep: Path | None = None  # --keep-results: each run's results.json is copied here, numbered
    first_results: str | None = None  # the first run's results.json text
    kept: int = 0


RUNS = Runs()


def build_roster(target: Path, copies: int, buggy: bool) -> int:
    """``copies`` copies of the correct model, plus each other demo once when ``buggy``; returns the model count."""
    source = REPO / "submissions"
    for i in range(1, copies + 1):
        shutil.copytree(source / CORRECT, target / f"{CORRECT}-copy{i}", symlinks=True)
    models = copies
    if buggy:
        for model in sorted(p.name for p in source.iterdir() if p.is_dir() and p.name != CORRECT):
            if model in {"demo-slow", "demo-prompt-only"}:
                continue  # slow on purpose (its cost is its own) / nothing to run
            shutil.copytree(source / model, target / model, symlinks=True)
            models += 1
    return models


def grade(submissions: Path, workers: int, speed: bool) -> dict[str, Any]:
    """One grading run; its wall time and results.json. Unless ``--cold``, every run after the first finds the first
    one's results.json in its reports folder, as a user's second run finds the first: the scheduler then sends the
    longest units first by those times (see plugins/isolate/schedule.py)."""
    with tempfile.TemporaryDirectory() as reports:
        if RUNS.first_results is not None:
            (Path(reports) / "results.json").write_text(RUNS.first_results)
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--seed={SEED}"]
        command += [f"--submissions-dir={submissions}", f"--reports-dir={reports}", "-n", str(workers)]
        command += ([] if speed else ["--no-speed"]) + RUNS.extra
        start, started_at = time.perf_counter(), time.time()
        with ResourceSampler() as resources:
            done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - start
        try:
            summary = json.loads((Path(reports) / "results.json").read_text())
        except (OSError, ValueError):
            print(done.stdout[-3000:], done.stderr[-3000:], sep="\n")
            raise SystemExit(f"run with -n {workers} wrote no results.json (exit {done.returncode})") from None
        if RUNS.warm and RUNS.first_results is None:
            RUNS.first_results = (Path(reports) / "results.json").read_text()
        if RUNS.keep is not None:
            RUNS.kept += 1
            shutil.copy(Path(reports) / "results.json", RUNS.keep / f"run{RUNS.kept}-n{workers}.json")
        report_s = report_writing_seconds(summary)
    timeline = run_timeline(summary, started_at, wall, workers)
    return {"wall_s": wall, "summary": summary, "exit": done.returncode, "report_s": report_s, "timeline": timeline} | (
        resources.figures()
    )


def warm_up(workers: int) -> None:
    """One untimed run of one copy before the measured ones, so that CUDA builds, kernel and page caches are as warm
    for the first measured run as for the rest: on a freshly started H200 host, ``-n 1`` measured first took 245 s and
    ``-n 2`` measured later 100 s (its child starts and reference work alone took 24 s and 13 s less)."""
    saved = RUNS.first_results, RUNS.keep
    RUNS.keep = None
    with tempfile.TemporaryDirectory() as folder:
        build_roster(Path(folder), 1, buggy=False)
        run = grade(Path(folder), workers, speed=False)
    RUNS.first_results, RUNS.keep = saved  # the measured runs order their units by their own first run
    print(f"warm-up: one copy of {CORRECT} at -n {workers}, {run['wall_s']:.1f} s (not measured)", flush=True)


def run_timeline(summary: dict[str, Any], started_at: float, wall: float, workers: int) -> dict[str, Any]:
    """Where a run's wall time went, from the cases' wall-clock starts (``timing.began_at``): start-up until the first
    case (workers starting, collection), the span of the cases, and the end after the last case (teardown, reports).
    Busy is the share of the ``workers``' seconds in the span that went to cases; the rest is idle (a worker waiting
    for work, done while others still run: the tail, or given nothing at all)."""
    spans: dict[str, list[float]] = {}
    for case in summary["cases"]:
        timing, worker = case.get("timing") or {}, (case.get("ran_on") or {}).get("worker", "?")
        if "began_at" in timing:
            spans.setdefault(worker, []).append(timing["began_at"] - started_at)
            spans[worker].append(timing["began_at"] - started_at + timing.get("case_s", 0.0))
    if not spans:
        return {}
    first = min(min(s) for s in spans.values())
    last = max(max(s) for s in spans.values())
    times = {key: timing.get("case_s", 0.0) for key, timing in case_times(summary).items()}
    busy = sum(times.values())
    ends = [max(s) for s in spans.values()]
    longest = max(times, key=times.__getitem__)
    # No order of these cases on these workers ends sooner than its longest case (a case is never split), nor sooner
    # than the work spread evenly: with this run's start-up and end, that is the floor the scheduler works against.
    even = busy / workers
    return {
        "startup_s": first,
        "cases_s": last - first,
        "end_s": wall - last,
        "busy": busy / max(workers * (last - first), 1e-9),
        "tail_s": last - statistics.median(ends),  # from the median worker's last case to the run's last case
        "longest_case": "/".join(longest),
        "longest_case_s": times[longest],
        "even_s": even,
        "floor_s": first + max(times[longest], even) + wall - last,
    }


class ResourceSampler:
    """The host's memory in use (peak) and load (mean of the 1-minute average) while a run goes, sampled each second."""

    def __enter__(self) -> ResourceSampler:
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _sample(self) -> None:
        while not self.stop.wait(1.0):
            try:
                info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
                used = (int(info["MemTotal"].split()[0]) - int(info["MemAvailable"].split()[0])) / 2**20
                self.samples.append((used, os.getloadavg()[0]))
            except (OSError, KeyError, ValueError):
                return

    def figures(self) -> dict[str, float]:
        if not self.samples:
            return {"peak_mem_gib": float("nan"), "mean_load": float("nan")}
        return {
            "peak_mem_gib": max(s[0] for s in self.samples),
            "mean_load": statistics.mean(s[1] for s in self.samples),
        }


def report_writing_seconds(summary: dict[str, Any]) -> float:
    """Writing grades.md, results.json, badges and pictures again from the summary, timed (pytest-html's own page is
    not included)."""
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        files.write_reports(summary, Path(folder), [])
        return time.perf_counter() - start


def collection_seconds(submissions: Path) -> float:
    with tempfile.TemporaryDirectory() as reports:
        command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
        command += [f"--submissions-dir={submissions}", f"--reports-dir={reports}"]
        start = time.perf_counter()
        subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
        return time.perf_counter() - start


def case_times(summary: dict[str, Any]) -> dict[tuple[str, str, str], dict[str, float]]:
    return {(c["model"], c["challenge"], c["case"]): c.get("timing") or {} for c in summary["cases"]}


def own_time(timing: dict[str, float]) -> float:
    """A case's time less the grader's own reference work, its waits (for a truth, a speed slot or the phase) and the
    start of sandbox children (spawn, imports: the first case of each unit)."""
    parts = ("truth_s", "wait_s", "start_s")
    return timing.get("case_s", 0.0) - sum(timing.get(p, 0.0) for p in parts)


def _timing_text(timing: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in timing.items())


def speed_ratios(summary: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    out = {}
    for c in summary["cases"]:
        ratio = (c.get("speed") or {}).get("ratio")
        if isinstance(ratio, (int, float)) and ratio > 0:
            out[(c["model"], c["challenge"], c["case"])] = float(ratio)
    return out


def speed_errors(summary: dict[str, Any]) -> dict[tuple[str, str, str], float]:
    """Each timed case's relative standard error, read off its bootstrap interval: the half-width over the ratio,
    divided by the normal quantile of the interval's confidence (an interval of ±10% at 95% is an error of 5.1%)."""
    out = {}
    for c in summary["cases"]:
        speed = c.get("speed") or {}
        ratio, low, high = speed.get("ratio"), speed.get("ratio_low"), speed.get("ratio_high")
        if all(isinstance(x, (int, float)) for x in (ratio, low, high)) and ratio > 0:
            z = statistics.NormalDist().inv_cdf(0.5 + float(speed.get("confidence", 0.95)) / 2)
            out[(c["model"], c["challenge"], c["case"])] = (high - low) / (2 * z * ratio)
    return out


def gpus_used(summary: dict[str, Any]) -> dict[str, int]:
    used: dict[str, int] = {}
    for c in summary["cases"]:
        gpu = (c.get("ran_on") or {}).get("gpu")
        used[str(gpu)] = used.get(str(gpu), 0) + 1
    return used


def scaling_table(submissions: Path, workers: list[int]) -> dict[str, Any]:
    """Each row is printed as soon as its run ends: a benchmark cut short by a time limit still shows what it ran."""
    base = grade(submissions, workers[0], speed=False)
    alone = case_times(base["summary"])
    print(f"\n1. workers (roster: {len(base['summary']['models'])} models, {len(alone)} cases, --no-speed)")
    print(
        "   slowdown: a case's own time (its wall time in the worker less the grader's reference work, waits and "
        "the start of sandbox children) over the same case's with the first worker count; cases under 50 ms there "
        "are left out (noise). Child starts: their sum over the run, and the slowest"
    )
    print(
        f"{'-n':>4} {'wall s':>8} {'efficiency':>10} {'median slowdown':>16} {'p95':>6} {'worst':>7} "
        f"{'peak GiB':>9} {'load':>5} {'starts s':>9} {'slowest':>8}  worst case"
    )
    table = []
    for n in workers:
        run = base if n == workers[0] else grade(submissions, n, speed=False)
        efficiency = base["wall_s"] * workers[0] / (n * run["wall_s"])
        slow = []
        for key, timing in case_times(run["summary"]).items():
            before = own_time(alone.get(key, {}))
            if before > 0.05 and own_time(timing) > 0:
                slow.append((own_time(timing) / before, "/".join(key), timing, alone[key]))
        starts = [t.get("start_s", 0.0) for t in case_times(run["summary"]).values()] or [0.0]
        slow.sort(key=lambda s: s[0])
        median = statistics.median(s[0] for s in slow) if slow else float("nan")
        p95 = slow[int(0.95 * (len(slow) - 1))][0] if slow else float("nan")
        worst = slow[-1] if slow else (float("nan"), "", {}, {})
        print(
            f"{n:>4} {run['wall_s']:>8.1f} {efficiency:>9.0%} {median:>15.2f}x {p95:>5.2f}x {worst[0]:>6.2f}x "
            f"{run['peak_mem_gib']:>9.1f} {run['mean_load']:>5.1f} {sum(starts):>9.1f} {max(starts):>8.2f}  {worst[1]}",
            flush=True,
        )
        line = run["timeline"]
        if line:
            print(
                f"{'':>6}timeline: start-up {line['startup_s']:.1f} s, cases {line['cases_s']:.1f} s (workers busy "
                f"{line['busy']:.0%}; tail after the median worker's end {line['tail_s']:.1f} s), "
                f"end {line['end_s']:.1f} s",
                flush=True,
            )
            print(
                f"{'':>6}floor: {line['floor_s']:.1f} s = start-up + end + the longer of its longest case "
                f"({line['longest_case']}, {line['longest_case_s']:.1f} s as it ran) and its work spread "
                f"evenly over the workers ({line['even_s']:.1f} s)",
                flush=True,
            )
        for ratio, name, mine, theirs in slow[-3:] if n != workers[0] else []:
            print(f"{'':>6}{ratio:5.2f}x {name}: {_timing_text(mine)} (against {_timing_text(theirs)})")
        table.append(
            {
                "workers": n,
                "wall_s": run["wall_s"],
                "efficiency": efficiency,
                "median_slowdown": median,
                "p95_slowdown": p95,
                "worst_slowdown": worst[0],
                "worst_case": worst[1],
                "peak_mem_gib": run["peak_mem_gib"],
                "mean_load": run["mean_load"],
                "starts_s": sum(starts),
                "gpus": gpus_used(run["summary"]),
                "timeline": run["timeline"],
            }
        )
    if any(len(row["gpus"]) > 1 for row in table):
        print("cases per GPU:", {row["workers"]: row["gpus"] for row in table})
    return {"scaling": table, "split": split(base, submissions)}


def split(run: dict[str, Any], submissions: Path) -> dict[str, float]:
    times = case_times(run["summary"])
    truth = sum(t.get("truth_s", 0.0) for t in times.values())
    cases = sum(t.get("case_s", 0.0) - t.get("wait_s", 0.0) for t in times.values())
    collect = collection_seconds(submissions)
    print("\n4. where the time of the first run went (seconds of work, summed over workers)")
    print(f"   collection (discovery, test collection, start-up): {collect:8.1f}")
    print(f"   grader's reference work (inputs, float64 truths):  {truth:8.1f}")
    print(f"   submissions (sandbox start, calls, judging):       {cases - truth:8.1f}")
    print(f"   report writing (grades.md, results.json, badges):  {run['report_s']:8.1f}")
    share = (truth + collect + run["report_s"]) / max(cases + collect + run["report_s"], 1e-9)
    print(f"   grader's own share: {share:.0%}", flush=True)
    return {"collection_s": collect, "truth_s": truth, "submissions_s": cases - truth, "report_s": run["report_s"]}


SPEED_PEERS = ("demo-slow",)  # flash forward speed at another ratio than the correct model's


def speed_agreement(copies: int, low: int, high: int, bundled: bool) -> dict[str, Any]:
    """Three speed runs of one roster (``-n low``, ``-n high``, ``-n high`` again) and how their credited ratios agree
    (:func:`agreement`). The roster: ``copies`` of the correct model and the slow demo, or with ``bundled`` the
    repository's own submissions folder as it is."""
    with tempfile.TemporaryDirectory() as folder:
        roster = REPO / "submissions" if bundled else Path(folder)
        if not bundled:
            build_roster(roster, copies, buggy=False)
            for model in SPEED_PEERS:
                shutil.copytree(REPO / "submissions" / model, roster / model, symlinks=True)
        runs = [grade(roster, n, speed=True) for n in (low, high, high)]
    labels = [f"-n {low}", f"-n {high}", f"-n {high} again"]
    walls = ", ".join(f"{r['wall_s']:.0f} s" for r in runs)
    print(f"\n2. speed agreement (walls: {walls})")
    return agreement([speed_ratios(r["summary"]) for r in runs], labels, [speed_errors(r["summary"]) for r in runs])


def agreement(
    ratios: list[dict[tuple[str, str, str], float]],
    labels: list[str],
    errors: list[dict[tuple[str, str, str], float]] | None = None,
) -> dict[str, Any]:
    """The credited ratio of every speed case in each run (a table, one row per case timed in the first run), then,
    for the first run against each other and for the last two, the median and the largest relative difference
    ``|b / a - 1|`` over the cases timed in both. Printed, never asserted.

    With ``errors`` (:func:`speed_errors`, one per run), what the runs' own trial noise accounts for: the median
    difference two runs would show from that noise alone (``noise``: the median of 0.674 times the combined error,
    0.674 being the median of a normal's absolute value in standard deviations), and how many cases differ by less
    than twice their combined error. A pair whose median is near its noise disagrees because each case stopped
    timing at its interval target or budget, not because of the worker count."""
    keys = sorted(ratios[0])
    width = max([len("/".join(k)) for k in keys] + [4])
    print(f"   {'case':{width}s} " + " ".join(f"{label:>14s}" for label in labels))
    for key in keys:
        row = " ".join(f"{r[key]:14.3f}" if key in r else f"{'—':>14s}" for r in ratios)
        print(f"   {'/'.join(key):{width}s} {row}")
    pairs = [(0, b) for b in range(1, len(ratios))] + ([(len(ratios) - 2, len(ratios) - 1)] if len(ratios) > 2 else [])
    out: dict[str, Any] = {"ratios": {"/".join(k): [r.get(k) for r in ratios] for k in keys}, "pairs": {}}
    noise_header = f" {'noise':>7s} {'within 2 errors':>16s}" if errors else ""
    print(f"\n   {'runs':40s} {'cases':>6s} {'median diff':>12s} {'largest diff':>13s}{noise_header}")
    for a, b in pairs:
        both = sorted(ratios[a].keys() & ratios[b].keys())
        diffs = [abs(ratios[b][k] / ratios[a][k] - 1) for k in both]
        label = f"{labels[a]} vs {labels[b]}"
        median, largest = (statistics.median(diffs), max(diffs)) if diffs else (None, None)
        out["pairs"][label] = {"cases": len(diffs), "median": median, "largest": largest}
        text = f"{median:12.1%} {largest:13.1%}" if diffs else f"{'—':>12s} {'—':>13s}"
        if errors:
            known = [(d, k) for d, k in zip(diffs, both, strict=True) if k in errors[a] and k in errors[b]]
            combined = {k: (errors[a][k] ** 2 + errors[b][k] ** 2) ** 0.5 for _, k in known}
            noise = 0.674 * statistics.median(combined.values()) if combined else None
            within = sum(d <= 2 * combined[k] for d, k in known)
            out["pairs"][label] |= {"noise": noise, "within_noise": within, "with_errors": len(known)}
            text += f" {noise:7.1%} {f'{within} of {len(known)}':>16s}" if combined else f" {'—':>7s} {'—':>16s}"
        print(f"   {label:40s} {len(diffs):6d} {text}")
    return out


def agreement_of_files(paths: list[str]) -> dict[str, Any]:
    """:func:`agreement` of kept runs' results.json files (``--keep-results``, or runs made on another machine)."""
    summaries = [json.loads(Path(p).read_text()) for p in paths]
    print(f"\nspeed agreement of {len(paths)} kept runs")
    labels = [Path(p).name for p in paths]
    return agreement([speed_ratios(s) for s in summaries], labels, [speed_errors(s) for s in summaries])


def growth(workers: int, copies: list[int]) -> list[dict[str, Any]]:
    print(f"\n3. growth with the number of models (-n {workers}, copies of {CORRECT}, --no-speed)")
    print(f"{'models':>7} {'wall s':>8} {'s per model':>12} {'grader share':>13}")
    rows = []
    for k in copies:
        with tempfile.TemporaryDirectory() as folder:
            build_roster(Path(folder), k, buggy=False)
            run = grade(Path(folder), workers, speed=False)
        times = case_times(run["summary"]).values()
        truth, cases = sum(t.get("truth_s", 0.0) for t in times), sum(t.get("case_s", 0.0) for t in times)
        print(f"{k:>7} {run['wall_s']:>8.1f} {run['wall_s'] / k:>12.1f} {truth / max(cases, 1e-9):>12.0%}", flush=True)
        rows.append({"models": k, "wall_s": run["wall_s"], "truth_s": truth, "case_s": cases})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = host_cores()
    default_workers = ",".join(str(n) for n in (1, 2, 4, 8, 16) if n <= cores)
    parser.add_argument("--workers", default=default_workers, help="worker counts (default: powers of 2 to the cores)")
    parser.add_argument("--copies", type=int, default=8, help="copies of the correct model in the scaling roster")
    parser.add_argument("--no-buggy", action="store_true", help="leave the buggy demos out of the scaling roster")
    parser.add_argument("--growth", default="", help="model counts for the growth table, e.g. 1,2,4,8,16")
    parser.add_argument(
        "--speed-agreement",
        "--speed-runs",
        dest="speed_runs",
        action="store_true",
        help="three speed runs (-n low, -n high, -n high again): how every speed case's credited ratio agrees",
    )
    parser.add_argument("--speed-bundled", action="store_true", help="the speed runs grade ./submissions as it is")
    parser.add_argument("--agreement-of", nargs="+", metavar="RESULTS", help="speed agreement of kept results.json")
    parser.add_argument("--speed-copies", type=int, default=1, help="copies of the correct model in the speed roster")
    parser.add_argument("--speed-workers", default="", help="the two worker counts compared, e.g. 1,16")
    parser.add_argument("--cold", action="store_true", help="no run starts from the first run's case times")
    parser.add_argument("--no-warmup", action="store_true", help="skip the untimed run of one copy before measuring")
    parser.add_argument("--warm-from", metavar="FILE", help="every run starts from this results.json (a kept run's)")
    parser.add_argument("--out", help="also write every figure as JSON to this file")
    parser.add_argument("--keep-results", metavar="DIR", help="copy each run's results.json into this folder")
    parser.add_argument(
        "--pytest-args", default="", help="added to every grading run; write it with '=': --pytest-args=--device=cpu"
    )
    args = parser.parse_args()
    RUNS.extra, RUNS.warm = shlex.split(args.pytest_args), not args.cold
    RUNS.keep = Path(args.keep_results) if args.keep_results else None
    if args.warm_from:  # e.g. a kept -n 1 run: later worker counts measured in another call order units as it did
        RUNS.first_results = Path(args.warm_from).read_text()
    workers = [int(n) for n in args.workers.split(",") if n]
    figures: dict[str, Any] = {"cores": cores}
    if args.agreement_of:  # no run: the table of runs already made
        figures["speed"] = agreement_of_files(args.agreement_of)
        return

    def save() -> None:  # after every part: a run cut short by a time limit keeps what it measured
        if args.out:
            Path(args.out).write_text(json.dumps(figures, indent=1, default=str))

    if not args.no_warmup and (workers or args.speed_runs or args.growth):
        warm_up(max(workers or [1]))
    if workers and args.copies:
        with tempfile.TemporaryDirectory() as folder:
            models = build_roster(Path(folder), args.copies, buggy=not args.no_buggy)
            print(f"roster: {models} models; host: {cores} cores", flush=True)
            figures |= scaling_table(Path(folder), workers)
        save()
    if args.speed_runs:
        low, high = (int(n) for n in (args.speed_workers or f"{workers[0]},{workers[-1]}").split(","))
        figures["speed"] = speed_agreement(args.speed_copies, low, high, args.speed_bundled)
        save()
    if args.growth:
        figures["growth"] = growth(workers[-1], [int(k) for k in args.growth.split(",")])
        save()


if __name__ == "__main__":
    main()

"""``--shard=I/N`` and ``python -m plugins.report.merge``: three shards merged give the reports of one run.

One unsharded run and shards 1/3, 2/3 and 3/3 of the same roster (flash attention, fixed seed, ``--no-speed``, a few
cases by ``-k``) run once per module, side by side. What may differ between the merged reports and the run's, and why:
the provenance lines at the top of grades.md (start time, warnings: the merge says it scored offline), the merged-only
section "Shards", sections only a live run writes (the sandbox's copy notes, --baseline, --judge-grades), and per-case
times. Everything else is compared: grades, points, case outcomes and messages, the grades.md sections, the pictures,
the badges. Refusals use copies of a shard's folder with one thing changed in its journal (the seed, the end line), so
they cost no grading run.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import REPO, ROSTER_SEED, GradingRun, run_grader
from plugins.config import checks
from plugins.discover import shard
from plugins.discover.submissions import discover
from plugins.grade.journal import replay

pytestmark = pytest.mark.grading_run

# Cases that split the demos (tile size 1, a single token, float32 with an uneven tile) and run in a few seconds.
CASES = "n33 or n1-d64 or t97-causal-f32"
ARGS = ("--no-speed", "--seed", ROSTER_SEED, "-k", CASES)
SHARDS = 3
LIVE_ONLY = {"Sandbox", "Against the baseline", "Judge against execution"}  # not rebuilt offline (merge docstring)
TIMED = {"Where cases ran"}  # sums of per-case seconds: present in both, equal only by chance
EXAMPLES = REPO / "docs" / "examples"
# The graded units with a flash-attention folder, as discovery finds them (tests/test_flash grades only those): a model
# a shard lost shows here.
FLASH_UNITS = {s.model for s in discover(REPO / "submissions") if s.challenge == "flash_attention"}


def merge(out: Path, *folders: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "plugins.report.merge", str(out), *map(str, folders)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, GradingRun]:
    """The runs by name: whole (no --shard), 1..3 (the shards), merged (their merge), empty (a shard of no pair)."""
    root = tmp_path_factory.mktemp("shards")
    jobs = {"whole": ARGS, **{str(i): (*ARGS, f"--shard={i}/{SHARDS}") for i in range(1, SHARDS + 1)}}
    jobs["empty"] = ("--no-speed", "--seed", ROSTER_SEED, "--model=demo-rescale", "--shard=2/2")  # one pair, 2 shards
    for name in jobs:
        (root / name).mkdir()
    with ThreadPoolExecutor(max_workers=2) as pool:  # shards of a job array run side by side too
        futures = {name: pool.submit(run_grader, root / name, *args) for name, args in jobs.items()}
        out = {name: future.result() for name, future in futures.items()}
    done = merge(root / "merged", *(out[str(i)].reports for i in range(1, SHARDS + 1)))
    out["merged"] = GradingRun(done.returncode, done.stdout + done.stderr, root / "merged")
    return out


def sections(report: Path) -> dict[str, str]:
    """grades.md's ``## `` sections by title (what comes before the first one is provenance)."""
    parts = re.split(r"^## ", (report / "grades.md").read_text(), flags=re.M)[1:]
    return {part.split("\n", 1)[0]: part.split("\n", 1)[1] for part in parts}


def test_shards_partition_the_roster(runs):
    """Every (submission, challenge) pair is in exactly one shard; each shard graded some of the selected cases."""
    assert all(runs[n].returncode in (0, 1) and "INTERNALERROR" not in runs[n].output for n in ("whole", "1", "2", "3"))
    infos = [runs[str(i)].summary["shard"] for i in range(1, SHARDS + 1)]
    roster = {tuple(p) for p in infos[0]["roster"]}
    owned = [{tuple(p) for p in info["pairs"]} for info in infos]
    assert all({tuple(p) for p in info["roster"]} == roster for info in infos)
    assert sum(map(len, owned)) == len(roster) and set().union(*owned) == roster
    assert [(info["index"], info["count"]) for info in infos] == [(1, 3), (2, 3), (3, 3)]
    for i, pairs in enumerate(owned, start=1):
        cases = runs[str(i)].summary["cases"]
        assert cases and {(c["model"], c["challenge"]) for c in cases} <= pairs
    whole = runs["whole"].records()
    assert sum(len(runs[str(i)].summary["cases"]) for i in range(1, SHARDS + 1)) == len(whole)


def test_merged_run_equals_one_run(runs):
    """Merged shards and one run agree on every grade, point, case outcome and message, and the run's status."""
    merged, whole = runs["merged"], runs["whole"]
    assert merged.returncode == 0, merged.output
    assert merged.letters() == whole.letters() and set(whole.letters()) == FLASH_UNITS
    assert {"A+", "F", "no code"} <= {g for m in whole.letters().values() for g in m.values()}  # grades that differ
    points = [
        {m: {c: g["points"] for c, g in d["challenges"].items()} for m, d in r.summary["models"].items()}
        for r in (merged, whole)
    ]
    assert points[0] == points[1]
    outcomes = [{k: (c["outcome"], c["message"]) for k, c in r.records().items()} for r in (merged, whole)]
    assert outcomes[0] == outcomes[1]
    for key in ("ranking", "head_to_head", "not_run", "selection", "status"):
        assert merged.summary[key] == whole.summary[key], key
    assert merged.summary["status"] == "complete"


def test_merged_reports_are_the_files_of_one_run(runs):
    """Same grades.md sections (but the merge's own), pictures and badges; a self-contained report.html."""
    merged, whole = runs["merged"].reports, runs["whole"].reports
    ours, theirs = sections(merged), sections(whole)
    assert set(ours) - {"Shards"} == set(theirs) - LIVE_ONLY
    same = set(theirs) - LIVE_ONLY - TIMED
    assert {t: ours[t] for t in same} == {t: theirs[t] for t in same} and "Grade matrix" in same
    for name in ("heatmap.svg", "speed.svg"):
        assert (merged / name).read_text() == (whole / name).read_text(), name
    badges = [
        {p.name: json.loads(p.read_text())["message"] for p in (r / "badges").glob("*.json")} for r in (merged, whole)
    ]
    assert badges[0] == badges[1] and badges[0]
    html = (merged / "report.html").read_text()
    assert 'id="kg-summary"' in html and "<svg" in html and "<script" not in html
    assert not re.search(r"(src|href)\s*=", html)  # self-contained: nothing loaded from elsewhere
    cases_table = re.search(r"<table id='kg-cases'>(.*?)</table>", html, re.S)
    assert cases_table, "report.html has no cases table"
    rows = cases_table.group(1).count("<tr>") - 1  # the header row is not a case
    assert rows == len(runs["merged"].summary["cases"])


def test_merged_reports_say_who_ran_each_shard(runs):
    """results.json["shards"] and grades.md's "Shards" name host, machine, cases and status; timing caveat said."""
    summary = runs["merged"].summary
    rows = summary["shards"]
    assert [r["shard"] for r in rows] == ["1/3", "2/3", "3/3"]
    assert all(r["host"] and r["machine"]["platform"] and r["status"] == "complete" for r in rows)
    assert sum(r["cases"] for r in rows) == len(summary["cases"]) and all(r["wall_s"] is not None for r in rows)
    text = sections(runs["merged"].reports)["Shards"]
    assert "comparable only on identical machines" in text and "| 2/3 " in text
    assert any("default scoring hooks" in w for w in summary["warnings"])
    journal = replay(runs["merged"].reports / "cases.jsonl")  # the merged journal reads back like a run's
    assert len(journal.records) == len(summary["cases"]) and journal.end["status"] == "complete"


def edited_copy(source: Path, target: Path, change) -> Path:
    """A copy of a shard's folder whose journal lines went through ``change(event) -> event | None`` (None drops it)."""
    target.mkdir()
    lines = [json.loads(line) for line in (source / "cases.jsonl").read_text().splitlines()]
    kept = [event for event in map(change, lines) if event is not None]
    (target / "cases.jsonl").write_text("".join(json.dumps(e) + "\n" for e in kept))
    return target


def test_mismatched_or_missing_shards_are_refused(runs, tmp_path):
    """Another seed or commit, a missing shard, a shard given twice: exit 1, a line saying why, nothing written."""
    one, two, three = (runs[str(i)].reports for i in range(1, SHARDS + 1))

    def header_change(part: str, key: str, value):
        def change(event):
            if event["kind"] == "header":
                event["header"][part][key] = value
            return event

        return change

    other_seed = edited_copy(three, tmp_path / "other-seed", header_change("options", "seed", 1))
    other_commit = edited_copy(three, tmp_path / "other-commit", header_change("commit", "sha", "0" * 40))
    for folders, says in [
        ((one, two, other_seed), "option seed differs"),
        ((one, two, other_commit), "grader commit differs"),
        ((one, two), "shard 3/3 missing"),
        ((one, two, two, three), "shard 2/3 given twice"),
    ]:
        done = merge(tmp_path / "out", *folders)
        assert done.returncode == 1 and says in done.stderr, done.stderr
        assert not (tmp_path / "out" / "results.json").exists()
    assert merge(tmp_path / "out").returncode == 2  # no shard at all: usage
    assert merge(tmp_path / "out", tmp_path).returncode == 2  # a folder without cases.jsonl: usage


def test_unfinished_shard_makes_the_merge_incomplete(runs, tmp_path):
    """A shard killed before its end line (and before its last case) merges into reports marked incomplete."""
    one, two, three = (runs[str(i)].reports for i in range(1, SHARDS + 1))
    cases = [json.loads(line) for line in (three / "cases.jsonl").read_text().splitlines()]
    last = next(e for e in reversed(cases) if e["kind"] == "case")
    killed = edited_copy(three, tmp_path / "killed", lambda e: None if e["kind"] == "end" or e == last else e)
    done = merge(tmp_path / "out", one, two, killed)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "out" / "results.json").read_text())
    assert summary["status"] == "incomplete" and "shard 3/3" in summary["status_detail"]
    assert "did not finish" in summary["status_detail"] and summary["shards"][2]["status"] == "did not finish"
    model = last["record"]["model"]
    assert not summary["models"][model]["challenges"][last["record"]["challenge"]]["complete"]


def test_shard_with_no_pairs_finishes_cleanly(runs):
    """More shards than pairs: the empty shard exits 0 and its reports say it got no submissions."""
    run = runs["empty"]
    assert run.returncode == 0, run.output[-2000:]
    assert run.summary["status"] == "empty" and run.summary["shard"]["pairs"] == []
    assert "this shard (2/2) got no submissions" in (run.reports / "grades.md").read_text()


def test_bad_shard_is_a_usage_error(tmp_path):
    """--shard=4/3 (shards count from 1 to N) and --shard without --seed stop with exit 4 before any case runs."""
    for args, says in [(("--shard=4/3", "--seed=1"), "--shard=4/3: must be I/N"), (("--shard=1/3",), "needs --seed")]:
        run = run_grader(tmp_path, *args)
        assert run.returncode == 4 and says in run.output, run.output[-2000:]


def test_shard_values_out_of_shape_or_range():
    """Only I/N with 1 <= I <= N is a shard (counting from 1); plugins/config/checks.py turns the rest into exit 4."""
    assert [checks.parse_shard(t) for t in ("1/3", "3/3", " 2 / 3 ")] == [(1, 3), (3, 3), (2, 3)]
    assert all(checks.shard_in_range(checks.parse_shard(t)) for t in ("1/1", "1/3", "3/3"))
    assert not any(checks.shard_in_range(checks.parse_shard(t)) for t in ("0/3", "4/3", "1/0", "0/0", "1/10001"))
    for text in ("3", "a/b", "1/3/5", "-1/3", "", "1.5/3"):
        with pytest.raises(ValueError):
            checks.parse_shard(text)


def test_assignment_is_deterministic_and_balanced():
    """The plan depends on the roster only (not its order) and spreads case counts evenly; a pair is never split."""
    pairs = [(f"m{i}", c) for i in range(9) for c in ("flash_attention", "kv_cache", "ternary_training")]
    plan = shard.assign(pairs, 4)
    assert shard.assign(list(reversed(pairs)), 4) == plan and set(plan.values()) == {1, 2, 3, 4}
    loads = [sum(shard.weight(c) for (m, c), s in plan.items() if s == k) for k in range(1, 5)]
    assert max(loads) - min(loads) <= max(shard.weight(c) for _, c in pairs)
    assert sorted(shard.assign(pairs[:2], 3).values()) == [1, 2]  # two pairs, three shards: one each, shard 3 empty


def test_documented_commands_use_options_that_exist(capsys):
    """The Slurm and GitHub Actions examples call pytest with real options and the merge with its usage."""
    help_text = subprocess.run(
        [sys.executable, "-m", "pytest", "--help"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    ).stdout
    assert "--shard=I/N" in help_text
    from plugins.report.merge import main as merge_main

    # the merge's own usage error (exit 2) names the arguments the examples' merge lines are checked against below
    assert merge_main([]) == 2 and capsys.readouterr().err.strip().endswith("OUT_DIR SHARD_DIR...")
    texts = [f.read_text().replace("\\\n", " ") for f in sorted(EXAMPLES.iterdir())]  # join continued lines
    commands = [line for text in texts for line in text.splitlines()]
    grading = [line for line in commands if "python -m pytest" in line and not line.lstrip().startswith("#")]
    merging = [line for line in commands if "python -m plugins.report.merge" in line]
    assert grading and merging
    for line in grading:
        assert "--shard=" in line and "--seed" in line, line
        for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", line):
            assert re.search(rf"(?m)^\s+(-\w, )?{option}\b", help_text), option
    for line in merging:
        words = re.findall(r"[^\s\"']+", line.split("python -m plugins.report.merge", 1)[1].split("#")[0])
        assert len([w for w in words if not w.startswith("-")]) >= 2, line  # OUT_DIR and at least one shard

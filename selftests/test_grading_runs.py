"""End-to-end grading runs in subprocesses: expected grades of the demo roster, reports, selection and isolation."""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics

import pytest

from conftest import FIXTURES, REPO
from reference.challenges import reference_module

pytestmark = pytest.mark.grading_run

# Without speed (timings must not move asserted grades): naive loses memory (80/90 points), buggy forward misses every
# uneven tile (core passes, so D), the backward bugs break core cases (F, capped anyway), rescale is wrong everywhere;
# f64-out returns float64 for float32 inputs and loses only the robustness case that asks for float32 (97.2, A+).
EXPECTED_LETTERS = {
    "demo-tiled": {"flash_attention": "A+", "flash_attention_bwd": "A+"},
    "demo-f64-out": {"flash_attention": "A+", "flash_attention_bwd": "A+"},
    "demo-naive": {"flash_attention": "B+", "flash_attention_bwd": "B+"},
    "demo-buggy": {"flash_attention": "D", "flash_attention_bwd": "F"},
    "demo-rescale": {"flash_attention": "F"},
    "demo-prompt-only": {"flash_attention": "no code"},  # its folder holds PROMPT.md only: a status, not a letter
    "demo-slow": {"flash_attention": "A+"},  # correct per-row loop: only speed (not measured here) can cost it
    # two samples of one model (test_samples.py checks their mean, spread and pass@k): correct, and demo-buggy's bug
    "demo-samples/sample-1": {"flash_attention": "A+"},
    "demo-samples/sample-2": {"flash_attention": "D"},
}
BUGGY_FORWARD_TRAPS = {
    "uneven final tile",
    "uneven final tile without a mask",
    "one-row final tile",
    "sequence shorter than one tile",
    "single token (N = 1)",
    "odd head dim with uneven tiles",
    "float32 inputs (any float dtype back)",
    "float32 stays float32 (never stated by the task)",
    "overflow-scale scores without a mask",
}


def failed_traps(run, model: str, challenge: str) -> set[str]:
    return {f["guards"] for f in run.summary["models"][model]["challenges"][challenge]["failed"]}


def test_demo_roster_grades(roster):
    """Each demo model gets its expected letter; the not-attempted backward of demo-rescale is absent, not an F."""
    assert roster.returncode == 1, roster.output[-3000:]  # failing submissions fail their tests; that is expected
    assert roster.letters() == EXPECTED_LETTERS


def test_demo_roster_traps(roster):
    """The report names exactly the traps each bug falls into."""
    assert failed_traps(roster, "demo-buggy", "flash_attention") == BUGGY_FORWARD_TRAPS
    assert failed_traps(roster, "demo-samples/sample-2", "flash_attention") == BUGGY_FORWARD_TRAPS  # the same bug
    assert "dK/dV accumulated across query tiles" in failed_traps(roster, "demo-buggy", "flash_attention_bwd")
    assert failed_traps(roster, "demo-naive", "flash_attention") == {"no N x N materialisation"}
    assert failed_traps(roster, "demo-tiled", "flash_attention_bwd") == set()


@pytest.mark.slow  # a second whole roster on two workers (41 s of setup): run with -m slow
def test_parallel_run_gives_the_same_grades(roster, roster_parallel):
    """-n 2 and a single process agree on every grade, point and case outcome (same seed)."""
    assert roster_parallel.letters() == roster.letters()
    points = [
        {m: {c: g["points"] for c, g in d["challenges"].items()} for m, d in run.summary["models"].items()}
        for run in (roster, roster_parallel)
    ]
    assert points[0] == points[1]
    outcomes = [{k: r["outcome"] for k, r in run.records().items()} for run in (roster, roster_parallel)]
    # Every non-speed case of every (model, challenge) folder in the roster ran (speed cases are skipped).
    scored = [sum(not c.is_speed for c in reference_module(ch).CASES) for m in EXPECTED_LETTERS.values() for ch in m]
    assert outcomes[0] == outcomes[1] and len(outcomes[0]) == sum(scored)


def test_results_json_schema(roster):
    """results.json carries provenance, every case record and per-model summaries."""
    summary = roster.summary
    assert summary["schema_version"] == 1
    assert {"platform", "python", "cpus", "numpy", "gpu", "device"} <= summary["machine"].keys()
    assert "sha" in summary["commit"] and summary["options"]["seed"] == 20261130
    assert summary["options"]["measure_speed"] is False
    record = roster.records()[("demo-buggy", "flash_attention", "b1-h2-n300-d64-t97-causal")]
    assert record["outcome"] == "wrong" and record["checks"][0]["bound_ratio"] > 1
    assert record["checks"][0]["first_mismatches"] and record["runtime"] == "native"
    assert summary["models"]["demo-tiled"]["coverage"] == "2 of 2"  # the run's challenges: the flash pair
    assert summary["head_to_head"]["demo-tiled"]["demo-naive"] == [2, 0, 0]


def test_grades_markdown(roster):
    """grades.md has the ranking, the matrix with a dash for not attempted, failed cases with traps, head-to-head."""
    text = (roster.reports / "grades.md").read_text()
    for heading in ("## Ranking", "## Grade matrix", "## Flash-attention forward", "## Head-to-head"):
        assert heading in text
    matrix = text.split("## Grade matrix")[1].split("##")[0]
    assert re.search(r"\| demo-rescale +\| F .*\| F \(\d+\.\d\) +\| — +\|", matrix)
    assert "**demo-buggy** `b1-h2-n300-d64-t97-causal` (uneven final tile): wrong" in text
    assert "speed not measured" in text


def test_badges(roster):
    """An SVG badge per model with its overall letter, coloured by letter, and a shields endpoint JSON."""
    svg = (roster.reports / "badges" / "demo-tiled.svg").read_text()
    assert ">A+<" in svg and "#4c1" in svg
    assert json.loads((roster.reports / "badges" / "demo-rescale.json").read_text())["message"] == "F"


def test_terminal_matrix(roster):
    assert "kernelgrade: grade matrix" in roster.output and "demo-tiled" in roster.output


def test_html_report(roster):
    """report.html is one self-contained file with the grade summary and per-case columns."""
    pytest.importorskip("pytest_html")
    html = (roster.reports / "report.html").read_text()
    assert "kernelgrade report" in html and "Grades" in html and "error / bound" in html


def test_bad_submissions_each_get_their_outcome(grade):
    """Timeout, crash, memory, exception, exit, NaN and noisy submissions in one run: each named, none fatal."""
    run = grade(
        "--submissions-dir",
        str(FIXTURES),
        "--call-timeout",
        "3",
        "--memory-limit-mb",
        "1024",
        "--no-speed",
        "-k",
        "t64-causal] and (n256 or n40) and not bwd",
    )
    assert "INTERNALERROR" not in run.output and run.returncode == 1
    outcome = {m: r["outcome"] for (m, _, case), r in run.records().items() if case == "b1-h2-n256-d64-t64-causal"}
    assert outcome == {
        "bad-timeout": "timeout",
        "bad-timeout-some": "passed",  # it hangs on short sequences only (test_failfast.py)
        "bad-segfault": "crash",
        "bad-memory": "oom",
        "bad-raise": "error",
        "bad-exit": "crash",
        "bad-nan": "wrong",
        "bad-noisy": "passed",
        "adapter-model": "passed",
    }
    assert run.summary["models"]["adapter-model"]["challenges"]["flash_attention"]["runtime"] == "adapter"
    assert "a submission's own test was collected" not in run.output and "test_kernel" not in run.output


def test_model_selection(grade):
    """--model takes exact names, repeated or comma-separated; -k flash with --model runs just that model."""
    run = grade("--collect-only", "-q", "--model", "demo-naive,demo-tiled", "-k", "flash and not bwd")
    ids = re.findall(r"\[([^/\]]+)/", run.output)
    assert set(ids) == {"demo-naive", "demo-tiled"} and len(ids) == 2 * len(reference_module("flash_attention").CASES)


def test_marker_selects_one_model_exactly(grade):
    run = grade("--collect-only", "-q", "-m", "submission(model='demo-tiled')")
    assert set(re.findall(r"\[([^/\]]+)/", run.output)) == {"demo-tiled"}


def test_unknown_model_is_a_usage_error(grade):
    """A typo must not pass as "0 tests": exit code 4 and the known names."""
    run = grade("--model", "demo-tild")
    assert run.returncode == 4
    known = re.search(r"known models: (.*)", run.output).group(1).split(", ")
    assert {"demo-buggy", "demo-naive", "demo-rescale", "demo-tiled"} <= set(known) and known == sorted(known)


def test_foreign_tree_graded_in_place(grade, tmp_path):
    """A clone of a model-comparison repo: graded in place, its own tests and scripts never collected or run."""
    clone = tmp_path / "clone"
    sub = clone / "submissions" / "kimi" / "flash_attention"
    shutil.copytree(REPO / "submissions" / "demo-tiled" / "flash_attention", sub)
    boom = "raise SystemExit('a submission script was run')\n"
    (sub / "test_mine.py").write_text("def test_mine():\n    raise AssertionError('own test ran')\n")
    (sub / "run_me.py").write_text(boom)
    (clone / "submissions" / "kimi" / "backwards").mkdir()
    (clone / "submissions" / "kimi" / "session.log").write_text("log\n")
    (clone / "README.md").write_text("# a comparison repo\n")
    (clone / "conftest.py").write_text(boom)
    # Exactly as the README shows it: from the repo root, path options with "=".
    run = grade(
        f"--submissions-dir={clone}", "--no-speed", "-k", "flash and not bwd and n256-d64-t64-causal]", as_user=True
    )
    assert "own test ran" not in run.output and "script was run" not in run.output
    assert run.returncode == 0, run.output[-3000:]
    assert run.letters() == {"kimi": {"flash_attention": "A+"}}
    assert any(s["challenge"] == "layer_norm_bwd" for s in run.summary["submissions"])
    partial = f"partial run: 1 of {len(reference_module('flash_attention').CASES)} cases"
    assert partial in run.summary["models"]["kimi"]["challenges"]["flash_attention"]["notes"]


def test_speed_case_records_timings(grade):
    """A speed case records median, spread and the ratio to the reference, and says them in words in its message; no
    threshold is asserted on them. Two repeats: the case is at the task's scale (seconds per request)."""
    run = grade("--model", "demo-tiled", "-k", "speed and not bwd", "--speed-repeats", "2", "--speed-max-trials", "2")
    speed_case = next(c.id for c in reference_module("flash_attention").CASES if c.is_speed)
    record = run.records()[("demo-tiled", "flash_attention", speed_case)]
    speed = record["speed"]
    assert speed["median_s"] > 0 and speed["baseline_median_s"] > 0 and speed["repeats"] == 2
    ratios = [a / b for a, b in zip(speed["times_s"], speed["baseline_times_s"], strict=True)]
    assert speed["ratio"] == pytest.approx(statistics.median(ratios))  # the median of per-trial ratios
    # every trial's time on both sides, so the figures can be checked and other estimators tried on a recorded run
    assert len(speed["times_s"]) == len(speed["baseline_times_s"]) == 2
    assert statistics.median(speed["times_s"]) == speed["median_s"]
    assert statistics.median(speed["baseline_times_s"]) == speed["baseline_median_s"]
    interval = r" \(95% interval [0-9.]+–[0-9.]+×\)"
    words = rf"(\d+\.\d× (slower|faster) than|as fast as) the reference{interval}, spread \d+% \(median .*"
    assert re.fullmatch(words, record["message"]), record["message"]
    assert "## Speed against peers" in (run.reports / "grades.md").read_text()


@pytest.fixture
def hostile_run(grade, tmp_path):
    """A model whose folder name is markup and whose exception message is markup too."""
    folder = tmp_path / "subs" / "x<img src=x onerror=alert(1)>" / "flash_attention"
    folder.mkdir(parents=True)
    (folder / "impl.py").write_text("def flash_attention_fwd(Q, K, V, t, c):\n    raise ValueError('<b>bold</b>')\n")
    return grade(f"--submissions-dir={tmp_path / 'subs'}", "--no-speed", "-k", "n40-")


def test_submission_text_is_escaped_in_markdown(hostile_run):
    """Model names and messages from submissions appear as text, never as markup, in grades.md."""
    text = (hostile_run.reports / "grades.md").read_text()
    assert "x&lt;img src=x onerror=alert(1)&gt;" in text and "<img src=x" not in text


def test_submission_text_is_escaped_in_html(hostile_run):
    """The same in report.html, where pytest-html inserts cells as raw HTML."""
    pytest.importorskip("pytest_html")
    html = (hostile_run.reports / "report.html").read_text()
    assert "x&lt;img src=x" in html
    assert "<img src=x" not in html and "<b>bold</b>" not in html


def test_hooks_replace_letters_and_amend_reports(grade, tmp_path, monkeypatch):
    """A plugin can replace the letters (firstresult), amend the summary and add a grades.md section."""
    (tmp_path / "myrubric.py").write_text(
        "def pytest_grader_letter(grade, rubric):\n    return 'B'\n"
        "def pytest_grader_update_summary(summary, config):\n    summary['label'] = 'nightly'\n"
        "def pytest_grader_report_sections(summary, config):\n    return [('House notes', 'graded by plugin')]\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    # "n40-": the two small cases only ("n40" alone also selects the n4096 memory cases, 16 s of float64 truths)
    run = grade("-p", "myrubric", "--model", "demo-tiled", "--no-speed", "-k", "n40-")
    assert run.letters() == {"demo-tiled": {"flash_attention": "B", "flash_attention_bwd": "B"}}
    assert run.summary["label"] == "nightly" and "## House notes" in (run.reports / "grades.md").read_text()


def test_dead_worker_is_scored_as_a_crash(grade, tmp_path, monkeypatch):
    """If a pytest worker dies mid-case (not the sandbox: the worker itself), the case is a crash, not a missing row."""
    (tmp_path / "killworker.py").write_text(
        "import os\n"
        "def pytest_runtest_call(item):\n"
        "    if 'demo-tiled/b1-h2-n40' in item.nodeid and 'bwd' not in item.nodeid:\n"
        "        os._exit(1)\n"
    )
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])))
    run = grade("-p", "killworker", "-n", "2", "--model", "demo-tiled", "--no-speed", "-k", "n40- or n1-")
    record = run.records()[("demo-tiled", "flash_attention", "b1-h2-n40-d64-t64-causal")]
    assert record["outcome"] == "crash" and "died" in record["message"]
    assert run.records()[("demo-tiled", "flash_attention", "b1-h2-n1-d64-t64-causal")]["outcome"] == "passed"

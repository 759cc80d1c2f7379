"""Reports that say why (issue 21): report.html opens every failed case with its message and a command that runs it
again, shows the extra sections grades.md has, and fits an 800 px window; the terminal prints one line per failed case
in the grader's words instead of pytest's long reports (``-v`` brings those back) and a matrix within 120 columns."""

from __future__ import annotations

import html
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, GradingRun, run_grader
from plugins.report import markup, tables
from reference.challenges import challenge_ids

LN_TESTS = "tests/test_layernorm"
BUGGY, CORRECT = "demo-ln-no-mean-term", "demo-tiled"
TWO_MODELS = ("--model", BUGGY, "--model", CORRECT, "--no-speed", "--color=no", "--seed", "11")


@pytest.fixture(scope="module")
def ln_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    return run_grader(tmp_path_factory.mktemp("ln"), *TWO_MODELS, tests=LN_TESTS)


# ------------------------------------------------------------------------------------------------------ markup
def test_markup_keeps_a_sections_markdown_as_text() -> None:
    """Tables, lists, quotes, bold and code become tags; everything else stays text: raw HTML, a link, an image."""
    body = (
        "Intro **bold** and `code`, <img src=x onerror=alert(1)> [a](javascript:x) ![i](y)\n\n"
        "| model | note |\n|---|---|\n| a\\|b | &lt;script&gt; |\n\n- one `x`\n- two\n\n> **warning**: w"
    )
    page = markup.to_html(body)
    assert "<b>bold</b>" in page and "<code>code</code>" in page and "<ul><li>one <code>x</code></li>" in page
    assert "<table>" in page and "<td>a&#124;b</td>" in page and "<td>&lt;script&gt;</td>" in page
    assert "<blockquote><b>warning</b>: w</blockquote>" in page
    assert not re.search(r"<(img|a|script)\b", page) and "&lt;img src=x onerror=alert(1)&gt;" in page


def test_markup_shows_escaped_marks_as_characters() -> None:
    """What ``wording.escape`` wrote for a hostile name reads back as that name, with no mark applied."""
    from plugins.base.wording import escape

    name = "*not bold* `no code` <b>x</b> a_b [l](u) &amp;"
    assert html.unescape(re.sub(r"<[^>]+>", "", markup.inline(escape(name)))) == name
    assert "<i>" not in markup.inline(escape(name)) and "<code>" not in markup.inline(escape(name))


# -------------------------------------------------------------------------------------------------- report.html
def test_report_html_says_why_each_case_failed(ln_run: GradingRun) -> None:
    """Per (model, challenge), a folded block lists every failed case with its trap, outcome, origin, the grader's
    message and the command that runs it again; the extra sections of grades.md are in the page too."""
    page = (ln_run.reports / "report.html").read_text()
    failed = ln_run.summary["models"][BUGGY]["challenges"]["layer_norm_bwd"]["failed"]
    assert failed and f"<summary>{BUGGY}: " in page
    for failure in failed:
        assert html.escape(failure["message"], quote=True) in page, failure["case"]
    assert page.count("run it again: <code>python -m pytest") == len(failed)
    for title in re.findall(r"^## (.+)$", (ln_run.reports / "grades.md").read_text(), re.M):
        if title.startswith(("Layer", "Ranking", "Task profiles", "Grade matrix", "Head-to-head")):
            continue  # the built-in ones are laid out by the page itself
        assert f"<h2>{html.escape(title, quote=True)}</h2>" in page, title


def test_the_command_in_the_report_runs_that_case_again(ln_run: GradingRun, tmp_path: Path) -> None:
    """The reproduction line of a failed case, run as printed (from the repository), fails that case the same way."""
    page = (ln_run.reports / "report.html").read_text()
    command = html.unescape(re.search(r"run it again: <code>([^<]+)</code>", page).group(1))
    words = shlex.split(command)
    case = re.search(r"\[[^/\]]+/([^\]]+)\]", words[3]).group(1)
    assert words[:3] == ["python", "-m", "pytest"] and "--seed=11" in words
    done = subprocess.run(
        [sys.executable, *words[1:], "-p", "no:cacheprovider", f"--reports-dir={tmp_path}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 1, done.stdout[-2000:]
    again = GradingRun(done.returncode, done.stdout, tmp_path).records()[(BUGGY, "layer_norm_bwd", case)]
    before = ln_run.records()[(BUGGY, "layer_norm_bwd", case)]
    assert (again["outcome"], again["message"]) == (before["outcome"], before["message"])


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install chromium)")
@pytest.mark.parametrize("width", [800, 1600])
def test_report_html_fits_the_window(ln_run: GradingRun, tmp_path: Path, width: int) -> None:
    """In headless Chromium at 800 and 1600 px the page is no wider than the window (wide tables scroll inside it),
    and a screenshot is made of it."""
    probe = (
        "<script>window.addEventListener('load',()=>setTimeout(()=>{const k=document.getElementById('kg-summary');"
        "const p=document.createElement('pre');p.id='kgprobe';p.textContent=[window.innerWidth,"
        "document.documentElement.scrollWidth,k.scrollWidth,k.clientWidth].join(' ');document.body.appendChild(p)},"
        "300));</script>"
    )
    page = tmp_path / "probe.html"
    page.write_text((ln_run.reports / "report.html").read_text().replace("</body>", probe + "</body>", 1))
    chromium = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000"]
    size = f"--window-size={width},1200"
    dom = subprocess.run([*chromium, size, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120)
    window, page_width, summary_width, summary_client = map(
        int, re.search(r'id="kgprobe">([\d ]+)<', dom.stdout)[1].split()
    )
    assert window == width and summary_width <= summary_client and page_width <= width + 16
    shot = tmp_path / f"report-{width}.png"
    subprocess.run([*chromium, size, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.stat().st_size > 10_000


# ------------------------------------------------------------------------------------------------------- terminal
def test_terminal_lists_failed_cases_one_line_each(ln_run: GradingRun) -> None:
    """No pytest failure section and no FAILED lines; one line per failed case, then the matrix and a verdict per
    model."""
    failed = ln_run.summary["models"][BUGGY]["challenges"]["layer_norm_bwd"]["failed"]
    assert "= FAILURES =" not in ln_run.output and "\nFAILED " not in ln_run.output
    assert f"kernelgrade: {len(failed)} failed cases" in ln_run.output
    lines = [line for line in ln_run.output.splitlines() if line.startswith(f"{BUGGY}  layer_norm_bwd/")]
    assert len(lines) == len(failed) and all(" wrong [" in line for line in lines)
    scored = sum(not f["beyond"] for f in failed)  # cases beyond the task are listed, not counted in the verdict
    assert re.search(rf"^{BUGGY}: F, score 0\.00, 1 of 1; failed layer_norm_bwd {scored};", ln_run.output, re.M)
    assert re.search(rf"^{CORRECT}: A\+, score 4\.30, 1 of 1; every scored case it ran passed", ln_run.output, re.M)


def test_verbose_brings_back_pytests_reports(tmp_path: Path) -> None:
    run = run_grader(tmp_path, *TWO_MODELS, "-v", "-k", "b2-t64-d256-eps1e-5 and not f32", tests=LN_TESTS)
    assert "= FAILURES =" in run.output and "FAILED " in run.output, run.output[-2000:]


@pytest.mark.parametrize("added", [0, 1, 6])
def test_the_terminal_matrix_fits_120_columns(added: int) -> None:
    """Every challenge (and more added: no count is written down) with long model names, letters and points: within
    120 columns, in as few tables as fit, each with the model column; ids spelled out below."""
    ids = [*challenge_ids(), *(f"added_challenge_number_{i}" for i in range(added))]
    grade = {"letter": "A+", "points": 100.0, "complete": True}
    models = {
        f"model-with-a-very-long-name-{i:02d}-and-more": {
            "overall": "A+",
            "mean_grade_points": 4.3,
            "challenges": {cid: dict(grade, complete=i % 2 == 0) for cid in ids},
        }
        for i in range(3)
    }
    summary = {
        "challenges": [{"id": cid, "graded": True, "title": cid} for cid in ids],
        "models": models,
        "ranking": [{"model": name} for name in models],
    }
    headers, rows, legend = tables.compact_matrix(summary)
    parts = tables.terminal_tables(headers, rows)
    assert max(len(line) for part in parts for line in part.splitlines()) <= 120 and len(set(headers)) == len(headers)
    shown = [part.splitlines()[0].split() for part in parts]
    assert all(cells[:2] == ["model", "overall"] for cells in shown)
    assert [h for cells in shown for h in cells[2:]] == headers[2:]  # every challenge once, in order
    assert all(f"= {cid}" in legend for cid in ids if len(cid) > tables.SHORT_ID_CHARS) and "* incomplete" in legend


USER_SECTION = """
def pytest_grader_report_sections(summary, config):
    models = ", ".join(sorted(summary["models"]))
    return [("Notes from the nightly machine", f"Graded **{len(summary['models'])}** models: `{models}`.")]
"""


def test_a_users_section_is_in_every_report_and_survives_recovery(tmp_path: Path, monkeypatch) -> None:
    """A section from a user's ``-p`` plugin is in grades.md and report.html of the run, and again in the reports
    rebuilt offline from cases.jsonl (as after a killed run, or in a merge of shards)."""
    from plugins.report import recover

    (tmp_path / "kg_user_section.py").write_text(USER_SECTION)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (tmp_path / "run").mkdir()
    run = run_grader(
        tmp_path / "run", "-p", "kg_user_section", *TWO_MODELS, "-k", "b2-t64-d256-eps1e-5", tests=LN_TESTS
    )
    models = ", ".join(sorted([BUGGY, CORRECT]))
    assert (
        f"## Notes from the nightly machine\n\nGraded **2** models: `{models}`."
        in (run.reports / "grades.md").read_text()
    )
    page = (run.reports / "report.html").read_text()
    assert f"<h2>Notes from the nightly machine</h2><p>Graded <b>2</b> models: <code>{models}</code>" in page
    monkeypatch.syspath_prepend(str(tmp_path))
    assert recover.recover(run.reports, "a test").startswith("recovered")
    assert "## Notes from the nightly machine" in (run.reports / "grades.md").read_text()
    assert "<h2>Notes from the nightly machine</h2>" in (run.reports / "report.html").read_text()


def test_recovering_a_users_sections_leaves_sys_path_alone(tmp_path: Path, monkeypatch) -> None:
    """The user's ``-p`` plugin is found from the current folder for the rebuild only: afterwards ``sys.path`` is as
    it was (a grading run that recovers a killed folder goes on with its own path)."""
    import sys

    from plugins.report import recover

    (tmp_path / "kg_path_probe.py").write_text("def pytest_grader_report_sections(summary, config):\n    return None\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "kg_path_probe", raising=False)
    before = list(sys.path)
    hooks = recover.user_section_hooks({"repo": str(tmp_path / "elsewhere"), "args": ["-p", "kg_path_probe"]})
    monkeypatch.delitem(sys.modules, "kg_path_probe", raising=False)
    assert [name for name, _ in hooks] == ["kg_path_probe"] and sys.path == before


def test_a_verdict_says_why_nothing_failed() -> None:
    """A model whose folder holds no code, one whose CUDA source was only built, and one that passed: three reasons."""
    from plugins.grade.rubric import BUILT_ONLY, NO_CODE
    from plugins.report import failures

    def grade(letter: str) -> dict:
        return {"letter": letter, "points": 0.0, "failed": [], "complete": True}

    letters = {"empty": NO_CODE, "built": BUILT_ONLY, "good": "A+"}
    summary = {
        "challenges": [{"id": "fa", "graded": True, "title": "fa"}],
        "models": {m: {"overall": "F", "challenges": {"fa": grade(letter)}} for m, letter in letters.items()},
        "ranking": [{"model": m, "overall": "F", "score": 0.0, "coverage": "1 of 1"} for m in letters],
        "cases": [],
    }
    lines = failures.verdict_lines(summary)
    assert lines[0].endswith("no code in its folders: nothing ran")
    assert lines[1].endswith("only built here (no GPU): no case ran, not graded")
    assert lines[2].endswith("every scored case it ran passed")


BROKEN_FIXTURE = """
import pytest


@pytest.fixture(autouse=True)
def broken_setup(request):
    if "eps1e-5]" in request.node.nodeid:
        raise RuntimeError("a broken grader fixture")
"""


def test_an_errored_test_keeps_its_traceback(tmp_path: Path, monkeypatch) -> None:
    """An error is the grader's own problem: pytest's error section with its traceback stays in a quiet run."""
    (tmp_path / "kg_broken.py").write_text(BROKEN_FIXTURE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    (tmp_path / "run").mkdir()
    run = run_grader(tmp_path / "run", "-p", "kg_broken", *TWO_MODELS, "-k", "b2-t64-d256-eps1e-5", tests=LN_TESTS)
    assert "= ERRORS =" in run.output and "RuntimeError: a broken grader fixture" in run.output, run.output[-3000:]

"""Adversarial roster of the reporting side: hostile names and sources, signals to the grader, bad options.

Every attack is a purpose-built submission with a comment naming what it stands for: a folder under
``selftests/fixtures/adversarial_reports/``, or one made here in a temporary folder when its name or file type cannot
live in git (markup, escape sequences, a FIFO). Each is asserted to get its own verdict, and a correct control model
(a copy of demo-tiled's ``flash_attention``) keeps its grade in the same run. Signals that a sandboxed submission can no
longer send are sent by a test-only plugin (``_adversary.py``) from the pytest process itself.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO, GradingRun, run_grader
from plugins.base import inert
from plugins.base.records import PASSED, CaseRecord
from plugins.config import RUBRIC_FILE
from plugins.grade import rubric
from plugins.grade import summary as summary_module
from plugins.report import html as html_report
from plugins.report import lifecycle, markdown
from reference import flash_attention
from reference.challenges import reference_module

pytestmark = pytest.mark.grading_run

ADVERSARIAL = FIXTURES.parent / "adversarial_reports"
TILED = REPO / "submissions" / "demo-tiled" / "flash_attention"
CONTROL = "control-tiled"  # a correct model: its grade must not move whatever the others do
ONE_CASE = ("--no-speed", "-k", "n40- and not bwd")
NO_COLOR = ("--color=no", "-p", "no:cacheprovider")

# Hostile model names; each folder is a correct copy of the control, so only the name attacks.
IMG = "<img src=x onerror=alert(1)>"  # the name: pytest-html put it in the test-id cell through innerHTML
IMG_TITLE = "<img src=x onerror=\"document.title='PWNED'\">"  # the same, with a handler a headless browser shows
SCRIPT = "<script>document.title='PWNED2'"  # a script element in a name
MD_LINK = "[x](javascript:alert(1))"  # a Markdown link in grades.md (a folder name cannot hold "/")
ANSI_NAME = "\x1b[31mred\x1b[0m"  # terminal escape sequences in a folder name
LONG = "long-" + "x" * 250  # 255 bytes: the badge file name <name>.svg was too long and no report.html was written
SPACE, UNDERSCORE = "has space", "has_space"  # both wrote badges/has_space.svg
NON_ASCII = "modèle-ü"  # pytest escapes it to mod\xe8le-\xfc in node ids: the name must stay the model's own
E_ACUTE, ITS_ID = "é", "%C3%A9"  # the percent-encoded id of é is a plain name of its own: ids must stay unique
# Hostile sources (the entry point cannot be read): verdict error, with the real cause in the message.
SOURCES = {
    "fifo-model": "not a regular file (FIFO)",  # a FIFO named impl.py hung discovery
    "zero-model": "not a regular file (character device)",  # impl.py -> /dev/zero: the parser read without end
    "huge-model": "over the parse limit of 2 MiB",  # a .py over the limit was silently ignored
    "syntax-error": "impl.py line 7: syntax error",  # was reported as "no Python file defines ..."
}
CORRECT_COPIES = (CONTROL, IMG, IMG_TITLE, SCRIPT, MD_LINK, LONG, SPACE, UNDERSCORE, NON_ASCII, E_ACUTE, ITS_ID)


def _copy_tiled(root: Path, *models: str) -> None:
    for model in models:
        shutil.copytree(TILED, root / model / "flash_attention")


def hostile_roster(root: Path) -> Path:
    """The submissions folder of the names-and-sources run."""
    _copy_tiled(root, *CORRECT_COPIES)
    shutil.copytree(ADVERSARIAL / "ansi-raise" / "flash_attention", root / ANSI_NAME / "flash_attention")
    for model in SOURCES:
        (root / model / "flash_attention").mkdir(parents=True)
    # Made here rather than kept as a fixture: ruff (rightly) refuses to parse it.
    broken = '"""Fixture: a syntax error on line 7."""\n\nimport numpy as np\n\n\n'
    broken += (
        "# the parenthesis is never closed\ndef flash_attention_fwd(Q, K, V, tile_size, causal=True:\n    return Q\n"
    )
    (root / "syntax-error" / "flash_attention" / "impl.py").write_text(broken)
    os.mkfifo(root / "fifo-model" / "flash_attention" / "impl.py")
    os.symlink("/dev/zero", root / "zero-model" / "flash_attention" / "impl.py")
    source = "def flash_attention_fwd(Q, K, V, tile_size, causal=True):\n    return Q\n" + "#" * 2**21 + "\n"
    (root / "huge-model" / "flash_attention" / "impl.py").write_text(source)
    return root


def adversary_run(workdir: Path, action: str, models: list[str], case: str, *args: str) -> GradingRun:
    """A grading run in which ``_adversary.py`` does ``action`` on ``case`` of ``models``."""
    env = {"KG_ADVERSARY_ACTION": action, "KG_ADVERSARY_MODELS": json.dumps(models), "KG_ADVERSARY_CASE": case}
    path = os.pathsep.join(filter(None, [str(ADVERSARIAL), os.environ.get("PYTHONPATH")]))
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**env, "PYTHONPATH": path}.items():
            mp.setenv(key, value)
        return run_grader(workdir, "-p", "_adversary", *NO_COLOR, *args, timeout=600)


@pytest.fixture(scope="module")
def names_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    roster = hostile_roster(tmp_path_factory.mktemp("hostile") / "subs")
    return run_grader(tmp_path_factory.mktemp("names"), f"--submissions-dir={roster}", *NO_COLOR, *ONE_CASE)


def test_control_and_hostile_names_keep_their_grades(names_run):
    """Markup, links, escapes, a 255-byte name and lookalike names are graded under their own names, like the
    control; no extra (phantom) model appears."""
    letters = names_run.letters()
    assert letters[CONTROL] == {"flash_attention": "A+"}, names_run.output[-3000:]
    assert {m: letters[m] for m in CORRECT_COPIES} == {m: {"flash_attention": "A+"} for m in CORRECT_COPIES}
    assert set(letters) == {*CORRECT_COPIES, ANSI_NAME, *SOURCES}
    assert "INTERNALERROR" not in names_run.output


def test_unreadable_sources_name_the_real_cause(names_run):
    """A FIFO, a link to /dev/zero, an oversized file and a syntax error each say what is wrong, with file and line,
    once in the grade's notes; the case itself says which entry point was not provided."""
    records = names_run.records()
    for model, cause in SOURCES.items():
        record = records[(model, "flash_attention", "b1-h2-n40-d64-t64-causal")]
        assert (record["outcome"], record["message"]) == ("error", "not provided: flash_attention_fwd"), model
        notes = names_run.summary["models"][model]["challenges"]["flash_attention"]["notes"]
        assert sum(cause in note for note in notes) == 1, (model, notes)


def test_report_html_cells_hold_no_markup(names_run):
    """Every cell pytest-html's script inserts with innerHTML (test id included) holds hostile names as text only."""
    page = (names_run.reports / "report.html").read_text()
    blob = json.loads(html.unescape(re.search(r'data-jsonblob="([^"]*)"', page).group(1)))
    cells = [cell for runs in blob["tests"].values() for test in runs for cell in test["resultsTableRow"]]
    assert len(cells) >= 9 * len(CORRECT_COPIES)
    assert not [c for c in cells if re.search(r"<(img|script)", c, re.I)]
    assert any("&lt;img src=x onerror=alert(1)&gt;" in c for c in cells)


@pytest.mark.skipif(not shutil.which("chromium"), reason="chromium is not installed (apt-get install chromium)")
def test_report_html_runs_no_script_in_a_browser(names_run):
    """Rendered by headless Chromium, the report keeps its title and has no element built from a model's name."""
    url = (names_run.reports / "report.html").as_uri()
    command = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=5000", "--dump-dom"]
    dom = subprocess.run([*command, url], capture_output=True, text=True, timeout=120, check=True).stdout
    assert re.search(r"<title[^>]*>kernelgrade report</title>", dom), dom[:500]
    assert "PWNED" not in re.search(r"<title[^>]*>.*?</title>", dom).group(0)
    assert not re.search(r"<img[^>]*onerror", dom) and not re.search(r"<script>document", dom)
    rows = re.findall(r'class="col-testId">([^<]*)<', dom)  # the rows were rendered: the check saw them
    assert any("&lt;img src=x onerror=" in row for row in rows) and len(rows) >= len(CORRECT_COPIES)


def test_grades_markdown_has_no_link_or_markup(names_run):
    """Names and messages in grades.md cannot form links, HTML, emphasis or code spans."""
    text = (names_run.reports / "grades.md").read_text()
    assert not re.search(r"(?<!\\)\]\(", text) and "<img" not in text and "<script" not in text
    assert "\\[x\\](javascript:alert(1))" in text  # the name is still there, as text
    assert "<b>" not in text and "\x1b" not in text and "\u202e" not in text


def test_terminal_gets_no_control_characters(names_run):
    """Escape sequences in a name, in printed output and in an exception message are shown, never sent."""
    assert "\x1b" not in names_run.output and "\x07" not in names_run.output and "\u202e" not in names_run.output
    assert "\\x1b[31mred\\x1b[0m" in names_run.output  # the model's name, made visible


def test_badge_file_names_are_unique_and_short(names_run):
    """One badge per model, none sharing a file, every file name short; report.html is written next to them."""
    folder = names_run.reports / "badges"
    labels = [json.loads(p.read_text())["label"] for p in folder.glob("*.json")]
    assert sorted(labels) == sorted(inert.visible(model) for model in names_run.letters())
    assert SPACE in labels and UNDERSCORE in labels and LONG in labels
    assert max(len(p.name.encode()) for p in folder.iterdir()) <= 120
    assert (names_run.reports / "report.html").is_file()


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory: pytest.TempPathFactory) -> GradingRun:
    """Under -n 2, the worker running n40 of two killers dies (os._exit); ``]`` and non-ASCII names."""
    roster = tmp_path_factory.mktemp("crash") / "subs"
    _copy_tiled(roster, CONTROL, "bad]name", NON_ASCII)
    killers = ["bad]name", NON_ASCII]
    args = (f"--submissions-dir={roster}", "-n", "2", "--no-speed", "-k", "(n40- or n1-) and not bwd")
    return adversary_run(tmp_path_factory.mktemp("crash-run"), "exit", killers, "b1-h2-n40-d64-t64-causal", *args)


def test_dead_worker_is_filed_under_its_model(crash_run):
    """A crash record of a killed xdist worker belongs to the model it graded, whatever its name holds."""
    records = crash_run.records()
    for model in ("bad]name", NON_ASCII):
        assert records[(model, "flash_attention", "b1-h2-n40-d64-t64-causal")]["outcome"] == "crash", model
        assert records[(model, "flash_attention", "b1-h2-n1-d64-t64-causal")]["outcome"] == "passed", model
    assert set(crash_run.letters()) == {CONTROL, "bad]name", NON_ASCII}  # no phantom model
    assert crash_run.letters()[CONTROL] == {"flash_attention": "A+"}


@pytest.mark.parametrize("action", ["int", "term"])
def test_interrupted_run_is_reported_as_interrupted(tmp_path, action):
    """Ctrl-C or SIGTERM at a model's memory case: reports say interrupted, the grade is marked incomplete with memory
    not run, and the next model is listed as not run instead of vanishing."""
    roster = tmp_path / "subs"
    _copy_tiled(roster, "a-cheater", "b-next")
    args = (f"--submissions-dir={roster}", "--no-speed", "-k", "not bwd and (n40- or n1- or mem)")
    run = adversary_run(tmp_path, action, ["a-cheater"], "b1-h1-n4096-d64-t128-causal-mem", *args)
    summary = run.summary
    assert run.returncode == 2 and summary["status"] == "interrupted", run.output[-3000:]
    grade = summary["models"]["a-cheater"]["challenges"]["flash_attention"]
    assert grade["complete"] is False
    assert any(n.startswith("interrupted: 2 of 3 selected cases ran; not run: memory") for n in grade["notes"])
    assert summary["not_run"] == [{"model": "b-next", "challenge": "flash_attention", "selected_cases": 3}]
    text = (run.reports / "grades.md").read_text()
    assert "INTERRUPTED" in text and "A+ (100.0) incomplete" in text and "**b-next**" in text
    assert "INTERRUPTED: 2 of 6 selected cases ran" in run.output
    assert json.loads((run.reports / "badges" / "a-cheater.json").read_text())["message"] == "A+ incomplete"


def test_killed_run_leaves_no_current_looking_report_and_is_recovered(tmp_path):
    """SIGKILL of the grader: grades.md says "run in progress", not the last run's grades; recover builds reports
    marked incomplete with every case that ran; the next run that grades moves them to history/ (a usage error
    leaves them)."""
    roster = tmp_path / "subs"
    _copy_tiled(roster, "a-first", "b-victim")
    args = (f"--submissions-dir={roster}", "--no-speed", "-k", "not bwd and (n40- or n1-)")
    first = run_grader(tmp_path, *args, *NO_COLOR)  # a complete run whose reports must not look current later
    assert first.summary["status"] == "complete"
    run = adversary_run(tmp_path, "kill", ["b-victim"], "b1-h2-n1-d64-t64-causal", *args)
    assert run.returncode == -9 and "run in progress — not grades" in (run.reports / "grades.md").read_text()
    assert json.loads((run.reports / "results.json").read_text())["status"] == "running"
    copy = tmp_path / "copy"
    shutil.copytree(run.reports, copy)
    done = subprocess.run(["python", "-m", "plugins.report.recover", str(copy)], cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr
    recovered = GradingRun(0, "", copy).summary
    assert recovered["status"] == "incomplete" and recovered["selection"]["ran"] == 3
    assert {(c["model"], c["case"]) for c in recovered["cases"]} >= {("a-first", "b1-h2-n1-d64-t64-causal")}
    assert "b-victim" not in recovered["models"] or not recovered["models"]["b-victim"]["complete"]
    typo = run_grader(tmp_path, "--model=nobody", *NO_COLOR)  # a usage error: the folder is left as it is
    assert typo.returncode == 4 and json.loads((run.reports / "results.json").read_text())["status"] == "running"
    again = run_grader(tmp_path, *args, "--model=a-first", *NO_COLOR)  # the killed run is recovered, then kept
    assert again.summary["status"] == "complete", again.output[-2000:]
    kept = lifecycle.run_folders(run.reports)
    assert [json.loads((f / "results.json").read_text())["status"] for f in kept.values()] == ["complete", "incomplete"]


BAD_OPTIONS = [
    ("--call-timeout=0", "--call-timeout=0: must be a finite number of seconds > 0"),
    ("--call-timeout=-1", "--call-timeout=-1: must be"),
    ("--call-timeout=nan", "--call-timeout=nan: must be"),
    ("--call-timeout=inf", "--call-timeout=inf: must be"),
    ("--seed=-1", "--seed=-1: must be a whole number >= 0"),
    ("--memory-limit-mb=0", "--memory-limit-mb=0: must be a whole number of MiB > 0"),
    ("--memory-limit-mb=-5", "--memory-limit-mb=-5: must be"),
    ("--speed-repeats=0", "--speed-repeats=0: must be a whole number >= 1"),
    ("--gpu-memory-fraction=0", "--gpu-memory-fraction=0: must be a number in (0, 1]"),
    ("--gpu-memory-fraction=1.5", "--gpu-memory-fraction=1.5: must be"),
    ("--submissions-dir={tmp}/missing", "missing: no such folder"),
    ("--submissions-dir={tmp}/empty", "empty: no submissions in it"),
    ("--submissions-dir={tmp}/file", "file: not a folder"),
]


@pytest.mark.parametrize(("option", "says"), BAD_OPTIONS, ids=[o.split("}")[-1] for o, _ in BAD_OPTIONS])
def test_bad_option_is_a_usage_error_and_leaves_old_reports(tmp_path, option, says):
    """Exit 4 with one clear line; the last run's reports stay exactly as they were (a typo erases nothing)."""
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("not a folder\n")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "grades.md").write_text("# kernelgrade: grades\n\nA+ for everyone\n")
    (reports / "results.json").write_text('{"status": "complete", "models": {}}\n')
    run = run_grader(tmp_path, option.format(tmp=tmp_path), *NO_COLOR)
    errors = [line for line in run.output.splitlines() if line.startswith("ERROR")]
    assert run.returncode == 4 and len(errors) == 1 and says in errors[0], run.output[-2000:]
    assert (reports / "grades.md").read_text() == "# kernelgrade: grades\n\nA+ for everyone\n"
    assert sorted(p.name for p in reports.iterdir()) == ["grades.md", "results.json"]


def test_no_speed_run_is_complete_and_says_so(tmp_path):
    """A --no-speed run of every case says "speed not measured", never "partial run"; -k says "partial run"."""
    roster = tmp_path / "subs"
    shutil.copytree(ADVERSARIAL / "ansi-raise", roster / "ansi-raise")
    run = run_grader(tmp_path, f"--submissions-dir={roster}", "--no-speed", "-k", "not bwd", *NO_COLOR)
    grade = run.summary["models"]["ansi-raise"]["challenges"]["flash_attention"]
    assert run.summary["status"] == "complete" and grade["complete"] is True, run.output[-2000:]
    assert grade["notes"] == ["speed not measured (--no-speed)"]
    assert "partial run" not in run.output and "\x1b" not in run.output
    scored = sum(not c.is_speed for c in reference_module("flash_attention").CASES)  # every case but speed errs
    assert grade["outcomes"] == {"error": scored} and "\x1b]0;pwned" in grade["failed"][0]["message"]  # kept as it was
    assert "\\\\x1b\\]0;pwned\\\\x07" in (run.reports / "grades.md").read_text()  # shown, never sent


def test_isolation_fallback_warning_leads_the_reports():
    """A sandbox warning (weaker containment than intended) is shown before any grade in grades.md and report.html."""
    case = flash_attention.CASES[0]
    record = CaseRecord.for_case("m<b>", "flash_attention", case, 0, PASSED)
    header = {
        "created": "now",
        "machine": {"platform": "p", "gpu": None},
        "commit": {"sha": None, "dirty": False},
        "options": {"measure_speed": True, "seed": 1, "device": "cpu"},
        "challenges": [{"id": "flash_attention", "title": "Flash-attention forward", "graded": True}],
        "warnings": [],
    }
    selection = summary_module.Selection({("m<b>", "flash_attention", 0)}, set(), True)
    run = summary_module.summarise(header, [record], selection, "complete", "", rubric.load_rubric(RUBRIC_FILE))
    run["sandbox"] = {"level": "process-group", "warnings": ["bwrap is not installed <here>"]}
    text = markdown.render(run, [])
    line = "> **warning**: isolation: fallback to rlimits and process groups: bwrap is not installed &lt;here&gt;"
    assert line in text and text.index(line) < text.index("## Ranking")
    page = html_report.summary_html(run)
    assert "isolation: fallback to rlimits and process groups: bwrap is not installed &lt;here&gt;" in page
    assert "m&lt;b&gt;" in page and "<b>" not in page.replace("<b>warning</b>", "")


def test_grade_matrix_column_names_wrap_and_model_names_stay_text():
    """The grade matrix's head may wrap after underscores (nine challenge ids fit a 1,400-pixel page); a model's name
    in the body, underscores and markup included, is left exactly as tabulate escaped it."""
    page = html_report._breakable_head(
        "<table><thead><tr><th>model</th><th>paged_attention_decode</th></tr></thead>"
        "<tbody><tr><td>my_model&lt;b&gt;</td><td>A+</td></tr></tbody></table>"
    )
    assert "<th>paged_<wbr>attention_<wbr>decode</th>" in page
    assert "<td>my_model&lt;b&gt;</td>" in page

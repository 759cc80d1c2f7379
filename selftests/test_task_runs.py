"""Task profiles in real grading runs: one submission graded under kernelgrade and scaffold, a profile from a path and
from a repo's own kernelgrade-task.toml, a broken profile as a usage error, partial interfaces and a syntax error said
once. Each run grades a few cases of one challenge (``-k``)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from conftest import GradingRun, full_marks_beyond_notes_only

TASK_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tasks"
# Layer norm: a core case at eps 1e-5, the large and tiny eps edge cases and the offset precision case (eps 1e-12):
# the last three depend on the rule eps-argument, which kernelgrade states and scaffold does not.
LN_CASES = ("-k", "b4-t8-d512 or b2-t32-d256-eps1 or off1e4")
EPS_CASES = {"b2-t32-d256-eps1", "b2-t32-d256-eps1e-12-std1e-3", "b2-t32-d1024-eps1e-12-off1e4-std1e-4"}
LN_TESTS = "tests/test_layernorm"


def _repo(tmp_path: Path, *models: str) -> Path:
    """A model-comparison repo: ``repo/submissions/<model>/layer_norm_bwd`` copies of the fixed-eps fixture."""
    for model in models:
        shutil.copytree(TASK_FIXTURES / "fixed-eps", tmp_path / "repo" / "submissions" / model)
    return tmp_path / "repo"


def _ln(run: GradingRun, model: str) -> dict:
    assert "INTERNALERROR" not in run.output, run.output[-3000:]
    return run.summary["models"][model]["challenges"]["layer_norm_bwd"]


@pytest.mark.grading_run
def test_the_same_submission_under_our_task_and_the_public_one(grade, tmp_path):
    """A layer norm with its own eps: under scaffold (its prompt never passes eps) the eps cases are beyond the task,
    shown and not scored, and it gets full marks; under kernelgrade they fail as edge and precision cases. The repo's
    kernelgrade-task.toml picks scaffold, a model folder's own file kernelgrade."""
    repo = _repo(tmp_path, "public", "ours")
    (repo / "kernelgrade-task.toml").write_text('task = "scaffold"\n')
    (repo / "submissions" / "ours" / "kernelgrade-task.toml").write_text('task = "kernelgrade"\n')
    run = grade(f"--submissions-dir={repo}", "--no-speed", *LN_CASES, tests=LN_TESTS)
    public, ours = _ln(run, "public"), _ln(run, "ours")
    assert {f["case"] for f in public["failed"]} == {f["case"] for f in ours["failed"]} == EPS_CASES
    assert all(f["beyond"] == ["eps-argument"] for f in public["failed"])
    assert full_marks_beyond_notes_only(public, "eps-argument") == EPS_CASES
    assert set(public["categories"]) == {"core"} and public["categories"]["core"]["passed"] == 1
    assert {f["category"] for f in ours["failed"]} == {"edge", "precision"} and not any(
        f["beyond"] for f in ours["failed"]
    )
    assert public["points"] > ours["points"]
    models = run.summary["models"]
    assert models["public"]["task"] == {"name": "scaffold", "source": str(repo / "kernelgrade-task.toml")}
    assert models["ours"]["task"]["name"] == "kernelgrade"
    beyond = models["public"]["beyond_failed"]
    assert list(beyond) == ["layer_norm_bwd"] and set(beyond["layer_norm_bwd"]["eps-argument"]) == EPS_CASES
    assert models["ours"]["beyond_failed"] == {}
    text = (run.reports / "grades.md").read_text()
    assert "## Task profiles" in text
    assert re.search(
        r"\| public +\| scaffold +\| [^|]*kernelgrade-task.toml +\| layer_norm_bwd: eps-argument \(3", text
    )
    assert "wrong [beyond the task (eps-argument): not scored]" in text
    assert "task profiles: scaffold from" in run.output
    if (run.reports / "report.html").exists():  # pytest-html installed
        page = (run.reports / "report.html").read_text()
        assert "Task profiles" in page and "eps-argument" in page


@pytest.mark.grading_run
def test_task_option_takes_a_profile_file_over_every_other(grade, tmp_path):
    """--task=PATH grades every model by that file (here a prompt set that states eps-argument), whatever the repo's
    and the models' own files say; the report names the file."""
    repo = _repo(tmp_path, "m")
    (repo / "kernelgrade-task.toml").write_text('task = "scaffold"\n')
    profile = tmp_path / "their-prompts.toml"
    profile.write_text('name = "their-prompts"\n[layer_norm_bwd]\nrules = ["eps-argument"]\n')
    run = grade(f"--submissions-dir={repo}", f"--task={profile}", "--no-speed", *LN_CASES, tests=LN_TESTS)
    grade_ = _ln(run, "m")
    assert run.summary["models"]["m"]["task"] == {"name": "their-prompts", "source": str(profile)}
    assert {f["case"] for f in grade_["failed"]} == EPS_CASES and not any(f["beyond"] for f in grade_["failed"])


@pytest.mark.grading_run
@pytest.mark.parametrize(
    ("where", "text", "says"),
    [
        ("option", "", "--task: scafold: neither a built-in task profile"),
        ("repo", '[layer_norm_bwd]\nrules = ["eps-arg"]\n', "unknown rule 'eps-arg'"),
    ],
)
def test_a_broken_profile_stops_the_run_with_one_line(grade, tmp_path, where, text, says):
    """An unknown profile name or a repo file naming an unknown rule: exit 4 with one line, no case run."""
    repo = _repo(tmp_path, "m")
    args = ["--task=scafold"] if where == "option" else []
    if text:
        (repo / "kernelgrade-task.toml").write_text(text)
    run = grade(f"--submissions-dir={repo}", "--no-speed", *LN_CASES, *args, tests=LN_TESTS)
    assert run.returncode == 4, run.output[-2000:]
    lines = [line for line in run.output.splitlines() if says in line]
    assert len(lines) == 1 and "Traceback" not in run.output


@pytest.mark.grading_run
def test_partial_interface_and_syntax_error_said_once(grade, tmp_path):
    """A DFlash folder with only build_tree_mask runs its mask case and fails the verification case as "not provided:
    verify_and_accept"; a folder whose only file has a syntax error fails each case as not provided, says the syntax
    error once in its notes, and grades.md lists it in one line."""
    subs = tmp_path / "subs"
    shutil.copytree(TASK_FIXTURES / "mask-only", subs / "mask-only")
    (subs / "broken" / "dflash_verify").mkdir(parents=True)
    # written here rather than kept as a fixture: ruff (rightly) refuses to parse it
    (subs / "broken" / "dflash_verify" / "impl.py").write_text("def build_tree_mask(prompt_len, tree_parents:\n")
    run = grade(f"--submissions-dir={subs}", "-k", "mask-chains or chain-all", tests="tests/test_dflash")
    records = run.records()
    assert records["mask-only", "dflash_verify", "mask-chains"]["outcome"] == "passed", run.output[-3000:]
    partial = records["mask-only", "dflash_verify", "chain-all"]
    assert (partial["outcome"], partial["message"]) == ("error", "not provided: verify_and_accept")
    for case in ("mask-chains", "chain-all"):
        assert records["broken", "dflash_verify", case]["message"].startswith("not provided: ")
    notes = run.summary["models"]["broken"]["challenges"]["dflash_verify"]["notes"]
    assert sum("impl.py line 1: syntax error" in n for n in notes) == 1, notes
    text = (run.reports / "grades.md").read_text()
    assert 1 <= text.count("syntax error") <= 2  # the breakdown's notes and its loaded column, never once per case
    assert "**broken**: 2 cases not run: not provided: build_tree_mask, verify_and_accept" in text

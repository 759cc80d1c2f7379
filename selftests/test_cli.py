"""The ``kernelgrade`` command: ``new`` scaffolds prompt folders, ``check`` reports how folders meet the contracts.

Fixtures for ``check`` are in ``fixtures/cli/`` (its README says what each stands for). The command is run in process
through ``main`` where only its result matters, and as a program (``python -m plugins.cli.main``, and the installed
``kernelgrade`` console script when this environment has it) where its output and exit status are the point.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import urllib.parse
import urllib.request
from dataclasses import replace
from importlib import metadata
from pathlib import Path

import pytest

from conftest import FIXTURES, REPO
from plugins.base.records import NO_CODE
from plugins.cli import scaffold
from plugins.cli.check import check_folder, find
from plugins.cli.main import main, pytest_command
from reference import tasks
from reference.challenges import all_challenges

CLI = Path(__file__).resolve().parent / "fixtures" / "cli"
INSTALLED = Path(sys.executable).parent / "kernelgrade"  # the console script `pip install -e .` puts beside python
IDS = [c.id for c in all_challenges()]


def installed_elsewhere() -> str | None:
    """Why the installed console script is not this checkout's editable install, or None when it is (or none is
    installed). An editable install records the checkout it points at; one made from another checkout (moved or deleted
    since), or a plain ``pip install .`` (which carries no specs), is not what this test is about."""
    try:
        found = metadata.distribution("kernelgrade").read_text("direct_url.json")
    except metadata.PackageNotFoundError:
        return None
    record = json.loads(found or "{}")
    url, editable = record.get("url", ""), record.get("dir_info", {}).get("editable", False)
    where = Path(urllib.request.url2pathname(urllib.parse.urlparse(url).path)) if url.startswith("file:") else None
    if not editable or where is None or where.resolve() != REPO.resolve():
        kind = "an editable install of" if editable else "installed from"
        return f"the installed kernelgrade is {kind} {url or 'an unknown source'}, not an editable install of {REPO}"
    return None


def command(*args: str, installed: bool = False) -> subprocess.CompletedProcess[str]:
    """The command as a program, run from the repo root: the installed console script or ``python -m``."""
    argv = [str(INSTALLED)] if installed else [sys.executable, "-m", "plugins.cli.main"]
    return subprocess.run([*argv, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def checked(path: Path, run_import: bool = True) -> dict:
    """``check`` of every folder under ``path``, keyed by (model, challenge)."""
    return {(r.model, r.challenge): r for r in (check_folder(s, run_import=run_import) for s in find(path))}


def test_new_writes_every_spec_as_its_prompt(tmp_path, capsys, monkeypatch):
    """One folder per challenge, each holding the prompt part of the challenge's spec as PROMPT.md (never the graders'
    notes below the marker, which name the hidden cases); next steps printed."""
    monkeypatch.chdir(REPO)  # from the checkout the next steps use the README's own grading command
    assert main(["new", "my-model", f"--submissions-dir={tmp_path}"]) == 0
    folders = sorted(p.name for p in (tmp_path / "my-model").iterdir())
    assert folders == sorted([*IDS, "kernelgrade-task.toml"])
    # the model's task profile: our prompts' rules, read back by discovery as the built-in kernelgrade profile
    task_file = tmp_path / "my-model" / "kernelgrade-task.toml"
    assert tasks.load_file(task_file).challenges == {k: replace(v, source=str(task_file)) for k, v in
                                                     tasks.built_in("kernelgrade").challenges.items()}  # fmt: skip
    for challenge_id in IDS:
        prompt = tmp_path / "my-model" / challenge_id / "PROMPT.md"
        spec = scaffold.spec_path(challenge_id).read_bytes()
        assert spec.startswith(prompt.read_bytes().rstrip()) and b"## What the grader checks" in prompt.read_bytes()
        assert scaffold.PROMPT_END not in prompt.read_bytes() and len(prompt.read_bytes()) < len(spec)
        assert [p.name for p in prompt.parent.iterdir()] == ["PROMPT.md"]
    out = capsys.readouterr().out
    assert f"with {len(IDS)} prompts and kernelgrade-task.toml" in out and "python -m pytest --model=my-model" in out
    assert "kernelgrade check" in out


def test_new_refuses_an_existing_model(tmp_path, capsys):
    """An existing model folder is never merged into or overwritten: exit 1, its files untouched."""
    (tmp_path / "taken" / "flash_attention").mkdir(parents=True)
    (tmp_path / "taken" / "flash_attention" / "impl.py").write_text("mine = 1\n")
    assert main(["new", "taken", f"--submissions-dir={tmp_path}"]) == 1
    assert "already exists" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "taken").iterdir()] == ["flash_attention"]
    assert (tmp_path / "taken" / "flash_attention" / "impl.py").read_text() == "mine = 1\n"


@pytest.mark.parametrize("name", ["", "a/b", "..", ".hidden", "_private", "esc\x1b[2Jape", "x" * 256])
def test_new_rejects_names_that_are_not_one_visible_folder(tmp_path, capsys, name):
    """Empty, path-like, hidden, skipped-by-discovery, control-character and over-long names: exit 1, nothing made."""
    assert main(["new", name, f"--submissions-dir={tmp_path}"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("kernelgrade new: the model name") and "\x1b" not in err
    assert list(tmp_path.iterdir()) == []


def test_new_names_a_missing_spec_and_creates_nothing(tmp_path, monkeypatch):
    """A challenge without a spec stops the scaffold before any folder is made, naming the challenge."""
    specs = tmp_path / "specs"
    specs.mkdir()
    for challenge_id in IDS[1:]:
        (specs / f"{challenge_id}.md").write_text(f"# {challenge_id}\n<!-- prompt ends here -->\ncases\n")
    monkeypatch.setattr(scaffold, "SPECS", specs)
    with pytest.raises(scaffold.ScaffoldError, match=f"for {IDS[0]} .*is missing\\); nothing was created"):
        scaffold.create("m", tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


def test_new_refuses_a_spec_without_the_prompt_end_marker(tmp_path, monkeypatch):
    """A spec with no prompt-end line would hand the graders' notes (hidden case sizes) to a model: nothing is made."""
    specs = tmp_path / "specs"
    specs.mkdir()
    for challenge_id in IDS:
        marker = "" if challenge_id == IDS[1] else "<!-- prompt ends here -->\n"
        (specs / f"{challenge_id}.md").write_text(f"# {challenge_id}\n{marker}| case | r7-v50257-k8 |\n")
    monkeypatch.setattr(scaffold, "SPECS", specs)
    with pytest.raises(scaffold.ScaffoldError, match=f"for {IDS[1]} .*no prompt above"):
        scaffold.create("m", tmp_path / "subs")
    assert not (tmp_path / "subs").exists()


@pytest.mark.grading_run
def test_scaffolded_model_grades_as_no_code(grade, tmp_path):
    """A model with prompts only is "no code" on every case a (scoped) grading run gives it, no errors."""
    subs = tmp_path / "subs"
    assert main(["new", "fresh", f"--submissions-dir={subs}"]) == 0
    run = grade(f"--submissions-dir={subs}", "--no-speed", "-k", "n40- or n33-")
    assert "INTERNALERROR" not in run.output
    assert run.letters() == {"fresh": {"flash_attention": "no code", "flash_attention_bwd": "no code"}}
    records = run.records()
    assert records and {r["outcome"] for r in records.values()} == {NO_CODE}


def test_check_demo_tiled_is_all_native_and_imports_cleanly():
    """The correct demo: every entry point native, every Python import clean in the sandbox, exit 0, valid JSON."""
    done = command("check", "submissions/demo-tiled", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] and [f["challenge"] for f in report["folders"]] == IDS
    for folder in report["folders"]:
        assert {e["status"] for e in folder["entries"]} == {"native"} and folder["skeleton"] is None
        if folder["runtime"] == "cuda":  # its extern "C" function is the challenge's one entry point
            names = [d["name"] for d in folder["extern_c"]]
            assert folder["import"] is None and names == [folder["challenge"]], (folder["challenge"], names)
        else:
            assert folder["import"]["status"] == "ok" and folder["import"]["clean"], folder["import"]


def test_check_reports_an_adapter():
    """Both backward entry points come from adapter.py (its code lines counted); the adapter imports cleanly."""
    result = checked(CLI / "adapted")["adapted", "flash_attention_bwd"]
    assert [(e.name, e.status, e.file) for e in result.entries] == [
        ("flash_attention_fwd", "adapter", "adapter.py"),
        ("flash_attention_bwd", "adapter", "adapter.py"),
    ]
    assert result.ok and result.adapter_lines == 6 and result.imported.clean and not result.skeleton


def test_check_finds_near_misses_and_writes_a_working_skeleton(tmp_path):
    """layernorm_bwd is offered for layer_norm_backward with its signature; the skeleton, saved as adapter.py, makes
    the folder resolve through the adapter and import cleanly."""
    result = checked(CLI / "near-miss")["near-miss", "layer_norm_bwd"]
    assert [(e.name, e.status) for e in result.entries] == [
        ("layer_norm_forward", "native"),
        ("layer_norm_backward", "missing"),
    ]
    best = result.near["layer_norm_backward"][0]
    assert (best.definition.signature, best.definition.file, best.score) == (
        "layernorm_bwd(dy, cache, eps=1e-05)",
        "layernorm.py",
        1.0,
    )
    assert "from layernorm import layer_norm_forward, layernorm_bwd  # noqa: F401 - re-exported" in result.skeleton
    contract = "# contract: layer_norm_backward(dy, cache) -> (dx, dgamma, dbeta)"
    assert f"def layer_norm_backward(dy, cache):\n    {contract}\n" in result.skeleton
    assert "# TODO: a guess: layernorm.py defines layernorm_bwd(dy, cache, eps=1e-05)" in result.skeleton
    assert "    return layernorm_bwd(dy, cache)\n" in result.skeleton and not result.ok
    copy = tmp_path / "m" / "layer_norm_bwd"
    shutil.copytree(CLI / "near-miss" / "layer_norm_bwd", copy)
    (copy / "adapter.py").write_text(result.skeleton)
    fixed = checked(copy)["m", "layer_norm_bwd"]
    assert {e.status for e in fixed.entries} == {"adapter"} and fixed.ok and fixed.imported.clean


def test_check_maps_a_class_based_api():
    """No function has the contract's name: FlashAttention.forward is the near miss, called through an instance."""
    result = checked(CLI / "near-miss", run_import=False)["near-miss", "flash_attention"]
    best = result.near["flash_attention_fwd"][0].definition
    assert (best.name, best.kind, best.signature) == (
        "FlashAttention.forward",
        "method",
        "FlashAttention.forward(self, q, k, v, causal=True)",
    )
    assert "from attention import FlashAttention\n" in result.skeleton
    assert "    return FlashAttention().forward(Q, K, V, tile_size, causal)\n" in result.skeleton
    assert "construct FlashAttention as its" in result.skeleton


def test_check_reports_import_side_effects_and_keeps_output_inert():
    """What the module printed and the file it wrote at import are reported; the escape sequence it printed is shown
    escaped; the write happened in the sandbox's copy, never in the folder itself."""
    done = command("check", str(CLI / "noisy"))
    assert done.returncode == 0, done.stderr  # side effects are reported, not failures: the entry point resolves
    out = done.stdout
    assert "printed to stdout at import:\n      running my own test of flash_attention_fwd" in out
    assert "all good \\x1b[2J" in out and "\x1b" not in out
    assert "changed its folder at import: import_log.txt (new, 9 bytes)" in out
    assert not (CLI / "noisy" / "flash_attention" / "import_log.txt").exists()


def test_check_reports_an_import_that_exits(tmp_path):
    """A module that calls sys.exit at import fails the check (exit 1) with SystemExit and its output."""
    folder = tmp_path / "m" / "flash_attention"
    folder.mkdir(parents=True)
    (folder / "impl.py").write_text("import sys\nprint('bye')\ndef flash_attention_fwd(*a):\n    pass\nsys.exit(3)\n")
    result = checked(tmp_path / "m")["m", "flash_attention"]
    assert result.imported.status == "error" and "SystemExit" in result.imported.message
    assert result.imported.stdout == "bye\n" and not result.ok
    assert main(["check", str(folder), "--json"]) == 1


def test_check_lists_extern_c_symbols_of_cuda_folders():
    """CUDA: the extern "C" functions against the contract's declaration; a misspelt one is the near miss and the
    adapter.cu skeleton forwards to it; a missing stream parameter is a warning."""
    results = checked(CLI, run_import=False)
    cuda = results["cuda", "softmax_topk"]
    assert [e.status for e in cuda.entries] == ["missing"]
    assert [d.name for d in cuda.c_functions] == ["softmax_top_k"]
    assert cuda.c_contract["softmax_topk"].startswith("int softmax_topk(const float* logits, int rows")
    assert [m.definition.name for m in cuda.near["softmax_topk"]][:2] == ["softmax_top_k", "launch_softmax_topk"]
    assert '#include "topk.cu"' in cuda.skeleton
    assert "  return softmax_top_k(logits, rows, V, k, indices, probs, stream);\n" in cuda.skeleton
    nostream = results["cuda-nostream", "softmax_topk"]
    assert nostream.ok and [d.kind for d in nostream.c_functions] == ["extern-c"]
    assert nostream.warnings and "int*, float*), the contract (" in nostream.warnings[0]
    assert nostream.warnings[0].endswith("cudaStream_t): the grader passes the contract's arguments")


@pytest.mark.parametrize("installed", [False, True], ids=["python-m", "console-script"])
def test_check_json_and_exit_status(installed):
    """--json parses, says which folders are ready, and the exit status is 1 when any entry point is missing."""
    if installed and not INSTALLED.exists():
        pytest.skip("kernelgrade is not installed in this environment (pip install -e .)")
    if installed and (elsewhere := installed_elsewhere()):
        pytest.skip(elsewhere)
    done = command("check", str(CLI), "--json", "--no-import", installed=installed)
    assert done.returncode == 1, done.stderr
    ready = {(f["model"], f["challenge"]): f["ok"] for f in json.loads(done.stdout)["folders"]}
    assert ready == {
        ("adapted", "flash_attention_bwd"): True,
        ("cuda", "softmax_topk"): False,
        ("cuda-nostream", "softmax_topk"): True,
        ("near-miss", "layer_norm_bwd"): False,
        ("near-miss", "flash_attention"): False,
        ("noisy", "flash_attention"): True,
    }
    assert command("check", str(CLI / "README.md"), installed=installed).returncode == 2


def test_check_refuses_a_path_without_challenge_folders(tmp_path, capsys):
    """A folder with no challenge folder anywhere is a usage error (exit 2) that says what was expected."""
    (tmp_path / "notes").mkdir()
    assert main(["check", str(tmp_path)]) == 2
    assert "no challenge folders under" in capsys.readouterr().err


def test_grade_makes_relative_path_options_absolute(tmp_path, monkeypatch):
    """`kernelgrade grade` runs pytest from the checkout: relative path options still name the caller's folders."""
    monkeypatch.chdir(tmp_path)
    argv = pytest_command(["--submissions-dir=subs", "--reports-dir=/abs/r", "-k", "kimi", "--model=m"])
    assert argv[1:] == ["-m", "pytest", f"--submissions-dir={tmp_path / 'subs'}", "--reports-dir=/abs/r", "-k"] + [
        "kimi",
        "--model=m",
    ]


def test_the_package_installs_no_pytest_plugin():
    """No pytest11 entry point: pytest would load it in every run of the environment, and once the checkout is moved
    or deleted every project's pytest there would stop with "Error while loading plugin" (the checkout's conftest.py
    loads the grader's plugins itself)."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert "pytest11" not in project.get("entry-points", {})
    assert not (REPO / "plugins" / "kernelgrade_pytest.py").exists()


def test_check_makes_one_tiny_call_of_each_entry_point_and_says_when_it_hangs(capsys):
    """An import that goes through is not enough: bad-timeout's flash_attention_fwd never returns, so check makes
    one tiny call under --call-limit, says it hangs and is not ready (before: "ready", from the import alone); the
    correct demo answers its one call."""
    hanging = FIXTURES / "bad-timeout" / "flash_attention"
    assert main(["check", str(hanging), "--json", "--call-limit", "2"]) == 1
    (folder,) = json.loads(capsys.readouterr().out)["folders"]
    calls = folder["import"]["calls"]
    assert folder["import"]["status"] == "ok" and not folder["ok"]
    assert [(c["entries"], c["status"]) for c in calls] == [(["flash_attention_fwd"], "timeout")]
    assert main(["check", str(hanging), "--call-limit", "2"]) == 1
    out = capsys.readouterr().out
    assert "HANGS: no answer within 2 s" in out and "not ready: a tiny call of flash_attention_fwd hangs" in out
    assert main(["check", str(REPO / "submissions" / "demo-tiled" / "flash_attention_bwd"), "--json"]) == 0
    (folder,) = json.loads(capsys.readouterr().out)["folders"]
    assert [(c["entries"], c["status"]) for c in folder["import"]["calls"]] == [
        (["flash_attention_fwd", "flash_attention_bwd"], "ok")  # one case calls both: one call, not two
    ]


def test_grade_joins_space_separated_path_options(tmp_path, monkeypatch):
    """`kernelgrade grade --submissions-dir subs` works like `--submissions-dir=subs`: pytest itself would take a path
    after a space for a test path (and, outside the checkout, stop with "unrecognized arguments"); --baseline's run
    selectors are no paths."""
    monkeypatch.chdir(tmp_path)
    argv = pytest_command(
        ["--submissions-dir", "subs", "--reports-dir", "/abs/r", "--baseline", "last", "--baseline=3", "--model", "m"]
    )
    assert argv[3:] == [f"--submissions-dir={tmp_path / 'subs'}", "--reports-dir=/abs/r", "--baseline", "last"] + [
        "--baseline=3",
        "--model",
        "m",
    ]
    assert pytest_command(["--baseline", "old.json"])[3:] == [f"--baseline={tmp_path / 'old.json'}"]


def test_help_shows_no_rest_markup(capsys):
    """`kernelgrade --help` is terminal text: no ``double backticks`` from the module docstring."""
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "kernelgrade: scaffold a model's prompts" in out and "``" not in out


def test_model_typo_suggests_the_close_names(tmp_path):
    """`--model demo-tild` is a usage error that asks "did you mean demo-tiled?" before listing every model."""
    from conftest import run_grader

    run = run_grader(tmp_path, "--model=demo-tild", "-p", "no:cacheprovider")
    (error,) = [line for line in run.output.splitlines() if line.startswith("ERROR")]
    assert run.returncode == 4 and "no such model" in error, run.output[-2000:]
    assert "did you mean demo-tiled? known models: " in error


def test_flash_attention_is_selected_exactly_by_the_submission_marker():
    """-k flash is a substring match (it picks dflash_verify and flash_attention_bwd too); the documented selector
    -m "submission(challenge='flash_attention')" picks that one challenge's cases only."""
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--model=demo-tiled"]

    def files(*args: str) -> set[str]:
        done = subprocess.run([*collect, *args], cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
        return {line.split("::")[0] for line in done.stdout.splitlines() if "::" in line}

    assert files("-k", "flash") == {
        "tests/test_dflash/test_dflash_verify.py",
        "tests/test_flash/test_flash_attention.py",
        "tests/test_flash/test_flash_attention_bwd.py",
    }
    assert files("-m", "submission(challenge='flash_attention')") == {"tests/test_flash/test_flash_attention.py"}

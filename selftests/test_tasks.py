"""Rules as data and task profiles: every case's rules are defined beside its table, profiles are checked strictly,
and a profile decides which cases are the task's and which are beyond it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from plugins.base import records
from plugins.base.records import PASSED, WRONG, CaseRecord
from plugins.cli import scaffold
from plugins.cli.check import check_folder, find
from plugins.cli.main import pytest_command
from plugins.cli.render import folder_text
from plugins.config import RUBRIC_FILE
from plugins.discover.ids import graded_params
from plugins.discover.submissions import Submission
from plugins.discover.tasks import ProfileFinder
from plugins.grade import summary as summary_module
from plugins.grade.rubric import load_rubric, score
from plugins.isolate.plugin import not_provided
from plugins.report import pictures
from reference import dflash_verify as dflash
from reference import kv_cache as kv
from reference import layer_norm_bwd as ln
from reference import softmax_topk as topk
from reference import tasks
from reference.challenges import all_challenges, reference_module
from reference.contract import Case, Challenge, Expected, Setting, Verified

GRADED = [c for c in all_challenges() if c.entry_points]


# The case table's rules and calls are checked with the rest of each contract in test_contracts.py.


def test_contract_variants():
    """A challenge with variants uses the first by default; without, its entry points are the one contract."""
    one = Challenge("x", "X", ("x",), ("f",))
    two = Challenge("y", "Y", ("y",), ("f",), contracts={"ours": ("f",), "theirs": ("g", "f")})
    assert (one.default_contract, one.entry_points_of()) == ("", ("f",))
    assert (two.default_contract, two.entry_points_of(), two.entry_points_of("theirs")) == ("ours", ("f",), ("g", "f"))


# --- profiles: built in, strict validation, precedence --------------------------------------------------------------


def test_built_in_profiles_state_what_their_prompts_state():
    """kernelgrade states our prompts' rules (tie order, longest path and the stop rule it implies, no scale floor,
    eps passed, any V and k, -inf) and the grader's model; scaffold states the public prompts' (stop at the first
    rejection) and the own-model KV contract, and none of our extra rules."""
    ours, theirs = tasks.built_in("kernelgrade"), tasks.built_in("scaffold")
    assert ours.of("beam_search").rules == {"tie-order"} and ours.of("dflash_verify").rules == {
        "longest-path",
        "stop-at-first-rejection",
    }
    assert ours.of("ternary_training").rules == {"scale-floor-none"} and ours.of("kv_cache").contract == "grader-model"
    assert ours.of("softmax_topk").rules == {"any-vocab-size", "k-up-to-v", "neg-inf-logits"}
    assert ours.of("layer_norm_bwd").rules == {"eps-argument"}
    assert (
        theirs.of("dflash_verify").rules == {"stop-at-first-rejection"}
        and theirs.of("kv_cache").contract == "own-model"
    )
    assert all(not theirs.of(c.id).rules for c in GRADED if c.id != "dflash_verify")
    assert tasks.built_in() == ours and ours.source == theirs.source == "built in"


def _profile(tmp_path: Path, text: str, name: str = "p.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[fuse]\nrules = []\n", "unknown challenge or key 'fuse'"),  # a folder alias is not a challenge id
        ("[beam_search]\nrules = ['tie-ordre']\n", "unknown rule 'tie-ordre' (its rules: tie-order)"),
        ("[beam_search]\nrule = ['tie-order']\n", "unknown key 'rule'"),
        ("[beam_search]\nrules = 'tie-order'\n", "rules must be a list"),
        ("[beam_search]\ncontract = 'own-model'\n", "the challenge has one contract"),
        ("[kv_cache]\ncontract = 'their-model'\n", "unknown contract 'their-model'"),
        ("beam_search = 1\n", "[beam_search] must be a table"),
        ("name = ''\n", "name must be a non-empty line"),
        ("[beam_search\n", "not valid TOML"),
    ],
)
def test_a_broken_profile_is_one_line_naming_the_file(tmp_path, text, says):
    """Unknown challenges, rules, keys, contracts and values are refused with a one-line reason naming the file."""
    path = _profile(tmp_path, text, "my-prompts.toml")
    with pytest.raises(tasks.TaskError) as info:
        tasks.load_file(path)
    message = str(info.value)
    assert says in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("task = 'ours'\n", "no built-in task profile named 'ours'"),
        ("task = 'scaffold'\n[beam_search]\nrules = []\n", "remove beam_search"),
    ],
)
def test_a_task_file_names_one_built_in_profile(tmp_path, text, says):
    """``task = NAME`` (what kernelgrade new writes) takes a built-in profile as it is, reported as from the file."""
    with pytest.raises(tasks.TaskError, match=re.escape(says)):
        tasks.load_file(_profile(tmp_path, text, tasks.FILE_NAME))
    path = _profile(tmp_path, "task = 'scaffold'\n", tasks.FILE_NAME)
    loaded = tasks.load_file(path)
    assert (loaded.name, loaded.source, loaded.of("kv_cache").contract) == ("scaffold", str(path), "own-model")


def test_load_takes_a_name_or_a_path(tmp_path):
    """``--task=NAME|PATH``: a built-in name, else a file; anything else is an error."""
    path = _profile(tmp_path, "name = 'repo-x'\n[beam_search]\nrules = ['tie-order']\n")
    mine = tasks.load(str(path))
    assert (mine.name, mine.shown) == ("repo-x", f"repo-x ({path})")
    assert mine.of("beam_search").rules == {"tie-order"} and not mine.of("dflash_verify").rules  # left out: none
    assert tasks.load("scaffold") is tasks.built_in("scaffold")
    with pytest.raises(tasks.TaskError, match="neither a built-in task profile"):
        tasks.load("scafold")


def test_a_challenge_a_profile_leaves_out_states_no_rule_and_answers_the_default_contract():
    """A profile needs no section per challenge (a new challenge needs no profile edit): one left out states none of
    its rules, answers its default contract and keeps its settings' defaults."""
    empty = tasks.parse({"name": "empty"}, "empty", "test")
    for challenge in GRADED:
        task, settings = empty.of(challenge.id), getattr(reference_module(challenge.id), "SETTINGS", {})
        assert not task.rules and task.contract == challenge.default_contract, challenge.id
        assert task.settings == tuple((k, s.default) for k, s in settings.items()), challenge.id
    grader_model = next(c for c in kv.CASES if c.contract == kv.CHALLENGE.default_contract)
    assert tasks.parse({}, "x", "test").of("kv_cache").collects(grader_model)  # its cases are collected


def test_precedence_task_option_then_model_folder_then_root_then_default(tmp_path):
    """--task wins; else the model folder's kernelgrade-task.toml; else the submissions (or repo) root's; else
    kernelgrade."""
    repo, subs = tmp_path / "repo", tmp_path / "repo" / "submissions"
    (subs / "own").mkdir(parents=True)
    (subs / "plain").mkdir()
    bare = ProfileFinder([subs, repo])
    assert bare.for_model(subs / "plain") is tasks.built_in()
    _profile(repo, "task = 'scaffold'\n", tasks.FILE_NAME)
    _profile(subs / "own", "task = 'kernelgrade'\n", tasks.FILE_NAME)
    found = ProfileFinder([subs, repo])
    assert (found.for_model(subs / "plain").name, found.for_model(subs / "plain").source) == (
        "scaffold",
        str(repo / tasks.FILE_NAME),
    )
    assert found.for_model(subs / "own").source == str(subs / "own" / tasks.FILE_NAME)
    forced = ProfileFinder([subs, repo], override=tasks.built_in("scaffold"))
    assert forced.for_model(subs / "own") is tasks.built_in("scaffold")


def test_settings_are_checked_and_reach_the_case(monkeypatch, tmp_path):
    """A module's SETTINGS: the profile's value (checked against the choices) or the default lands in case.params,
    and tells the truths of one case apart."""
    from reference import beam_search

    setting = Setting("strict", "how ties are judged", ("strict", "any"))
    monkeypatch.setattr(beam_search, "SETTINGS", {"ties": setting}, raising=False)
    profile = tasks.parse({"beam_search": {"ties": "any"}}, "x", "x.toml")
    case = beam_search.CASES[0]
    applied = profile.of("beam_search").apply(case)
    assert applied.params == {**case.params, "ties": "any"} and applied.id == case.id
    assert profile.of("beam_search").settings_tag == "ties='any'"
    assert tasks.parse({}, "y", "y.toml").of("beam_search").settings == (("ties", "strict"),)
    with pytest.raises(tasks.TaskError, match="ties = 'some' is not allowed"):
        tasks.parse({"beam_search": {"ties": "some"}}, "x", "x.toml")


# --- what a profile does to cases ---------------------------------------------------------------------------------


def test_a_case_beyond_the_task_is_tagged_and_not_scored():
    """Under scaffold, a core case that depends on a rule scaffold never states keeps its category but is tagged
    "added" with the rule, and failing it costs nothing; under kernelgrade it is a core case of the task."""
    case = next(c for c in topk.CASES if c.id == "r4096-v1000-k1")
    ours = CaseRecord.for_case("m", "softmax_topk", case, 4, PASSED, task=tasks.built_in().of("softmax_topk"))
    theirs = CaseRecord.for_case(
        "m", "softmax_topk", case, 4, PASSED, task=tasks.built_in("scaffold").of("softmax_topk")
    )
    assert (ours.category, ours.origin, ours.beyond) == ("core", "task", [])
    assert (theirs.category, theirs.origin, theirs.beyond) == ("core", "added", ["any-vocab-size"])
    assert theirs.task == "scaffold"
    rubric = load_rubric(Path(__file__).resolve().parent.parent / "plugins" / "grade" / "rubric.toml")
    for record in (ours, theirs):
        record.outcome = WRONG
    mine, public = score("m", "softmax_topk", [ours], rubric), score("m", "softmax_topk", [theirs], rubric)
    assert mine.categories["core"]["passed"] == 0 and mine.core_failed
    assert not public.categories and not public.core_failed  # nothing scored: no category, no core gate
    assert [f["beyond"] for f in public.failed] == [["any-vocab-size"]]  # still listed, as a note


@pytest.mark.parametrize(
    ("failing", "scored_as"),
    [
        ((), "passed"),
        (("acceptance",), "passed, with a note"),
        (("golden",), "failed"),
        (("golden", "acceptance"), "failed"),
    ],
)
def test_a_longest_path_case_is_still_graded_on_the_golden_property(failing, scored_as):
    """Under scaffold (stop-at-first-rejection), a longest-path case is beyond the task for its accepted length only:
    the golden property is every prompt's, so the case is graded on it (a wrong golden property fails the core case,
    the task's failure), and a short acceptance alone is a note that costs nothing."""
    case = next(c for c in dflash.CASES if c.id == "later-sibling")
    record = CaseRecord.for_case(
        "m", "dflash_verify", case, 5, PASSED, task=tasks.built_in("scaffold").of(dflash.CHALLENGE.id)
    )
    expected = Expected({"golden": None, "acceptance": None}, {"golden": Verified(), "acceptance": Verified()})
    record.beyond_checks = records.beyond_checks("dflash_verify", record.beyond, expected.values)
    record.checks = [{"name": n, "passed": n not in failing} for n in ("golden", "acceptance")]
    record.outcome = WRONG if failing else PASSED
    assert (record.beyond, record.beyond_checks) == (["longest-path"], ["acceptance"])
    grade = score("m", "dflash_verify", [record], load_rubric(RUBRIC_FILE))
    assert grade.categories["core"]["cases"] == 1  # scored: its golden property is the task's
    assert grade.categories["core"]["passed"] == (scored_as != "failed") and grade.core_failed == (
        scored_as == "failed"
    )
    if failing:
        (failure,) = grade.failed
        noted = scored_as != "failed"
        assert (failure["beyond"], failure["origin"]) == ((["longest-path"], "added") if noted else ([], "task"))
    assert records.beyond_checks("beam_search", ["tie-order"], {"tokens": 1}) == []  # nothing else
    assert records.beyond_checks("beam_search", ["tie-order"], {"tokens": 1, "scores": 1}) == ["tokens"]
    assert records.beyond_checks("layer_norm_bwd", ["eps-argument"], expected.values) == []  # no RULE_CHECKS: all of it


def test_a_case_that_never_ran_is_scored_like_one_that_ran():
    """A longest-path case that never reached a child (its entry point not provided, given up after two timeouts, a
    dead worker) is scored as the task's failure under scaffold, as it would be had it run and crashed: leaving the
    entry point out must not score better than a broken one. A case whose rule decides all of it (eps) stays a note."""
    scaffold = tasks.built_in("scaffold")
    case = next(c for c in dflash.CASES if c.id == "later-sibling")
    never_ran = CaseRecord.for_case("m", "dflash_verify", case, 5, "error", task=scaffold.of(dflash.CHALLENGE.id))
    assert never_ran.scored and not never_ran.task_passed
    grade = score("m", "dflash_verify", [never_ran], load_rubric(RUBRIC_FILE))
    assert grade.core_failed and grade.failed[0]["beyond"] == []
    eps = next(c for c in ln.CASES if "eps-argument" in c.rules)
    noted = CaseRecord.for_case("m", "layer_norm_bwd", eps, 1, "error", task=scaffold.of(ln.CHALLENGE.id))
    assert noted.beyond == ["eps-argument"] and not noted.scored


def test_cases_of_another_contract_variant_are_not_collected():
    """The grader-model KV cases are collected under kernelgrade and not under scaffold (own-model)."""
    for name, keep in (("kernelgrade", "grader-model"), ("scaffold", "own-model")):
        sub = _submission("kv_cache", tasks.built_in(name).of("kv_cache"))
        collected = [g.case for _, g in graded_params([sub], "kv_cache")]
        assert all(c.contract in ("", keep) for c in collected)
        assert any(c.contract == keep for c in collected), name
        assert bool(collected) == any(c.contract in ("", keep) for c in reference_module("kv_cache").CASES)


def _submission(challenge: str, task: tasks.ChallengeTask | None = None, missing: tuple[str, ...] = ()) -> Submission:
    return Submission("m", challenge, Path("/nowhere"), (), (), False, missing, task=task)


def test_a_missing_entry_point_fails_only_the_cases_that_call_it():
    """Partial interfaces: a DFlash folder without verify_and_accept can still run its mask cases."""
    sub = _submission("dflash_verify", missing=("verify_and_accept",))
    mask, verify = (next(c for c in dflash.CASES if c.id == i) for i in ("mask-chains", "chain-all"))
    assert not_provided(sub, mask) == ""
    assert not_provided(sub, verify) == "not provided: verify_and_accept"
    # a case that declares no calls needs every entry point of its contract
    assert not_provided(_submission("layer_norm_bwd", missing=("layer_norm_backward",)), ln.CASES[0]) == (
        "not provided: layer_norm_backward"
    )


def test_trap_table_names_non_finite_failures_apart():
    """A failed case whose output held NaN/Inf where the truth is finite shows "non-finite (NaN/Inf)", not "fell in";
    a failure over the bound stays "fell in"."""
    nan_check = {"name": "O", "passed": False, "nan": 3, "inf": 0, "nonfinite": 3}
    over_check = {"name": "O", "passed": False, "nan": 0, "inf": 0, "nonfinite": 0}
    cases = [
        {"model": m, "challenge": "flash_attention", "case_index": 0, "guards": "trap", "outcome": "wrong",
         "checks": [check]}
        for m, check in (("nan-model", nan_check), ("over-model", over_check))
    ]  # fmt: skip
    summary = {
        "ranking": [{"model": "nan-model"}, {"model": "over-model"}],
        "models": {m: {"challenges": {"flash_attention": {}}} for m in ("nan-model", "over-model")},
        "cases": cases,
    }
    models, traps, states = pictures.trap_table(summary, "flash_attention")
    assert (models, traps, states) == (["nan-model", "over-model"], ["trap"], [[pictures.NONFINITE, pictures.FELL]])
    assert "✗ non-finite (NaN/Inf)" in pictures.traps_markdown(summary, "flash_attention")


def test_check_offers_no_skeleton_for_a_folder_that_does_not_parse(tmp_path):
    """kernelgrade check on a folder whose file has a syntax error says so, and prints no adapter skeleton (an
    adapter around code that does not parse would be wrong once it is fixed)."""
    folder = tmp_path / "subs" / "broken" / "flash_attention"
    folder.mkdir(parents=True)
    (folder / "impl.py").write_text("def flash_attention_fwd(Q, K, V, tile_size, causal=True:\n    return Q\n")
    (sub,) = find(tmp_path / "subs")
    result = check_folder(sub, run_import=False)
    assert not result.skeleton and "fix the syntax error in impl.py first" in result.skeleton_note
    text = folder_text(result)
    assert "save as adapter.py" not in text and "line 1: syntax error" in text and "task profile: kernelgrade" in text


@pytest.mark.parametrize("challenge", [c.id for c in GRADED if reference_module(c.id).RULES])
def test_the_spec_lists_every_rule_with_what_each_profile_says(challenge):
    """docs/challenges/<id>.md (below the prompt) has a Rules table: every rule of the module, stated or not by each
    built-in profile, as the profiles say."""
    spec = scaffold.spec_path(challenge).read_text()
    notes = spec.split(scaffold.PROMPT_END.decode(), 1)[1]
    assert "### Rules" in notes
    for rule in reference_module(challenge).RULES:
        row = next(line for line in notes.splitlines() if line.startswith(f"| `{rule}` |"))
        said = [cell.strip() for cell in row.split("|")[-3:-1]]
        want = ["stated" if rule in tasks.built_in(n).of(challenge).rules else "not stated" for n in tasks.BUILT_IN]
        assert said == want, (rule, said)


def test_grade_command_makes_a_task_file_absolute_and_keeps_a_name(tmp_path, monkeypatch):
    """kernelgrade grade --task=scaffold passes the name; --task=FILE (relative, existing) becomes an absolute path,
    since pytest runs from the checkout."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_text("")
    assert pytest_command(["--task=scaffold"])[-1] == "--task=scaffold"
    assert pytest_command(["--task=mine.toml"])[-1] == f"--task={tmp_path / 'mine.toml'}"


def test_coverage_counts_only_the_cases_of_the_models_contract_variant(monkeypatch):
    """A grader-model KV submission that ran every grader-model case is complete, however many own-model cases the
    table holds (they were never collected for it); one that ran fewer is a partial run of its own variant's cases."""
    from reference import kv_cache

    other = Case("own-x", "core", "an own-model check", {}, contract="own-model")
    monkeypatch.setattr(kv_cache, "CASES", (*kv_cache.CASES, other))
    mine = [
        CaseRecord.for_case("m", "kv_cache", c, i, PASSED)
        for i, c in enumerate(kv_cache.CASES)
        if c.contract == "grader-model" and not c.is_speed
    ]
    speed = {("m", "kv_cache", i) for i, c in enumerate(kv_cache.CASES) if c.is_speed}  # skipped: --no-speed

    def notes_of(ran: list[CaseRecord]) -> tuple[list[str], bool]:
        selection = summary_module.Selection({("m", "kv_cache", rec.case_index) for rec in ran} | speed, speed, True)
        return summary_module.coverage("m", "kv_cache", ran, selection, "complete", False, "grader-model")

    assert notes_of(mine) == (["speed not measured (--no-speed)"], True)
    grader_model = sum(c.contract == "grader-model" for c in kv_cache.CASES)  # the real own-model cases too are out
    assert f"partial run: 3 of {grader_model} cases" in notes_of(mine[:3])[0]


def test_check_reads_the_repo_profile_and_lists_its_contract_variant(tmp_path):
    """kernelgrade check on a repo whose kernelgrade-task.toml names scaffold: the KV folder is checked against the
    own-model contract's entry points, and the profile is named."""
    folder = tmp_path / "repo" / "submissions" / "m" / "kv"
    folder.mkdir(parents=True)
    (folder / "cache.py").write_text("def forward(t):\n    pass\n\n\ndef prefill(t):\n    pass\n")
    (tmp_path / "repo" / tasks.FILE_NAME).write_text('task = "scaffold"\n')
    (sub,) = find(tmp_path / "repo")
    result = check_folder(sub, run_import=False)
    assert [(e.name, e.status) for e in result.entries] == [
        ("build_model", "missing"),
        ("forward", "native"),
        ("prefill", "native"),
        ("decode_step", "missing"),
    ]
    assert result.task == f"scaffold ({tmp_path / 'repo' / tasks.FILE_NAME}), contract own-model"

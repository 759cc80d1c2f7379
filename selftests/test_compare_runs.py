"""``--baseline`` (grade deltas, newly failing and passing cases, speed beyond the noise) and ``--judge-grades``
(where an external judge and the execution grade disagree, and the cases that explain it): pure functions on hand-made
summaries, the usage errors, and one real scoped grading run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import run_grader
from plugins.config import RUBRIC_FILE
from plugins.grade.rubric import load_rubric
from plugins.report import compare_runs as cr
from plugins.report import judge_grades as jg

RUBRIC = load_rubric(RUBRIC_FILE)
NO_COLOR = ("-p", "no:cacheprovider", "--color=no")
CHALLENGES = [
    {"id": "flash_attention", "title": "Flash", "graded": True},
    {"id": "kv_cache", "title": "KV", "graded": True},
]


def case(model: str, name: str, outcome: str, category: str = "edge", speed: dict | None = None) -> dict[str, Any]:
    return {"model": model, "challenge": "flash_attention", "case": name, "category": category, "outcome": outcome,
            "guards": f"trap of {name}", "message": "" if outcome == "passed" else f"{name} went {outcome}",
            "speed": speed}  # fmt: skip


def summary(grades: dict[tuple[str, str], tuple[str, float]], cases: list[dict], seed: int = 1) -> dict[str, Any]:
    """A summary with just the fields the comparisons read."""
    models: dict[str, Any] = {}
    for (model, challenge), (letter, points) in grades.items():
        models.setdefault(model, {"challenges": {}})["challenges"][challenge] = {"letter": letter, "points": points}
    return {"schema_version": 1, "status": "complete", "created": "then", "commit": {"sha": "abc"},
            "options": {"seed": seed, "measure_speed": True, "device": "cpu"}, "challenges": CHALLENGES,
            "models": models, "cases": cases, "ranking": [{"model": m} for m in models]}  # fmt: skip


def speed(ratio: float, spread: float, ref_spread: float | None = None) -> dict[str, Any]:
    """A speed record with median 1 s, so ``spread`` is the relative spread."""
    extra = {} if ref_spread is None else {"baseline_spread_s": ref_spread * 2.0}
    return {"median_s": 1.0, "spread_s": spread, "baseline_median_s": 2.0, "ratio": ratio} | extra


def test_grade_deltas_list_changes_and_one_sided_pairs():
    """Changed letters or points are rows with the points moved; unchanged pairs are counted; one-sided pairs say so."""
    before = summary({("a", "flash_attention"): ("B", 84.0), ("b", "flash_attention"): ("A", 95.0),
                      ("b", "kv_cache"): ("F", 10.0)}, [])  # fmt: skip
    after = summary({("a", "flash_attention"): ("D", 61.5), ("b", "flash_attention"): ("A", 95.0),
                     ("c", "kv_cache"): ("A+", 100.0)}, [])  # fmt: skip
    rows, unchanged = cr.grade_deltas(before, after)
    assert unchanged == 1
    shown = {(r["model"], r["challenge"]): (r["before"], r["after"], r["points_delta"]) for r in rows}
    assert shown == {
        ("a", "flash_attention"): ("B (84.0)", "D (61.5)", -22.5),
        ("b", "kv_cache"): ("F (10.0)", cr.UNGRADED, None),
        ("c", "kv_cache"): (cr.UNGRADED, "A+ (100.0)", None),
    }


def test_newly_failing_and_passing_only_among_cases_both_ran():
    """A pass turned failure (and back) is listed; skips, and cases run in one run only, are counted, not judged."""
    before = summary({}, [case("a", "n1", "passed"), case("a", "n2", "wrong"), case("a", "n3", "passed"),
                          case("a", "n4", "passed"), case("a", "old", "wrong"), case("a", "s", "skipped")])  # fmt: skip
    after = summary({}, [case("a", "n1", "timeout"), case("a", "n2", "passed"), case("a", "n3", "passed"),
                         case("a", "n4", "skipped"), case("a", "new", "wrong"), case("a", "s", "wrong")])  # fmt: skip
    changes = cr.case_changes(before, after)
    assert [(r["case"], r["before"], r["after"]) for r in changes["newly_failing"]] == [("n1", "passed", "timeout")]
    assert [(r["case"], r["before"], r["after"]) for r in changes["newly_passing"]] == [("n2", "wrong", "passed")]
    assert changes["newly_failing"][0]["message"] == "n1 went timeout"  # the failing side's message explains it
    assert (changes["compared"], changes["only_now"], changes["only_before"]) == (3, 2, 2)


@pytest.mark.parametrize(
    ("old", "new", "moved"),
    [
        (speed(2.0, 0.02), speed(3.0, 0.02), True),  # 1.5x slower, spreads 2 %: threshold is the 10 % floor
        (speed(2.0, 0.02), speed(2.15, 0.02), False),  # 7.5 %: under the floor
        (speed(2.0, 0.10), speed(2.5, 0.02), True),  # 25 % against 2 x 10 % = 20 %
        (speed(2.0, 0.15), speed(2.5, 0.02), False),  # 25 % against 2 x 15 % = 30 %: the old run was too noisy
        (speed(2.0, 0.05, 0.10), speed(2.5, 0.0), False),  # the reference's own spread counts too: 2 x 15 %
        (speed(3.0, 0.02), speed(2.0, 0.02), True),  # faster counts the same way: 1.5x
    ],
)
def test_speed_change_beyond_noise(old, new, moved):
    """A ratio moved beyond the noise when f - 1 > max(2 x the larger relative spread, 10 %), in either direction."""
    before = summary({}, [case("a", "sp", "passed", "speed", old)])
    after = summary({}, [case("a", "sp", "passed", "speed", new)])
    result = cr.speed_changes(before, after)
    assert result["compared"] == 1 and bool(result["moved"]) is moved


def test_speed_not_compared_unless_both_timed_a_pass():
    """A failed or unmeasured speed case has no ratio to compare."""
    before = summary({}, [case("a", "sp", "passed", "speed", speed(2.0, 0.0)), case("a", "x", "passed", "speed")])
    after = summary({}, [case("a", "sp", "wrong", "speed", speed(9.0, 0.0)), case("a", "x", "passed", "speed")])
    assert cr.speed_changes(before, after) == {"moved": [], "compared": 0}


def test_describe_move_in_words():
    """The terminal and grades.md say how far and which way, with both spreads and the threshold."""
    row = cr.speed_move(speed(2.0, 0.04), speed(3.5, 0.06))
    assert cr.describe_move(row) == ("2.00× → 3.50× the reference: 1.75× slower (spread 4% / 6%, noise threshold 12%)")


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (None, "no such file"),
        ("not json", "not readable as JSON"),
        ("[1, 2]", "top level is not an object"),
        ('{"schema_version": 7, "models": {}, "cases": []}', "schema_version 7"),
        ('{"schema_version": 1, "status": "usage-error"}', "report stub"),
        ('{"schema_version": 1, "status": "complete", "models": {}}', "no 'models' object or 'cases' list"),
        ('{"schema_version": 1, "models": {"m": {"challenges": {"c": {"letter": "A"}}}}, "cases": []}', "letter and"),
        ('{"schema_version": 1, "models": {}, "cases": [{"model": "m"}]}', "a case record lacks"),
    ],
)
def test_baseline_that_is_no_results_json_is_refused(tmp_path, content, says):
    """A missing file, non-JSON, a stub or another layout raises BaselineError naming why."""
    path = tmp_path / "results.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(cr.BaselineError, match=says):
        cr.load_baseline(path)


# --- judge grades -----------------------------------------------------------------------------------------------------


def test_judge_file_letters_and_scores():
    """Letters in any case, scores mapped by the rubric's thresholds, extra columns and blank lines ignored."""
    text = "Model, Challenge ,grade,comment\na,flash_attention,b+,x\n\nb,kv_cache,92.5,\nc,kv_cache,59,\nd,x,100,\n"
    rows = jg.parse(text, RUBRIC)
    assert [(r["model"], r["challenge"], r["given"], r["letter"], r["line"]) for r in rows] == [
        ("a", "flash_attention", "b+", "B+", 2),
        ("b", "kv_cache", "92.5", "A-", 4),  # 90 <= 92.5 < 93
        ("c", "kv_cache", "59", "F", 5),  # under D's 60
        ("d", "x", "100", "A+", 6),
    ]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("model,grade\na,A\n", "the header lacks challenge"),
        ("model,challenge,grade\n", "no grades under the header"),
        ("model,challenge,grade\na,flash_attention,E\n", "line 2: grade 'E' is neither"),
        ("model,challenge,grade\na,flash_attention,101\n", "line 2: grade '101'"),
        ("model,challenge,grade\na,flash_attention,A,extra\n", "line 2: 4 fields, the header has 3"),
        ("model,challenge,grade\n,flash_attention,A\n", "line 2: empty model"),
        ("model,challenge,grade\na,c,A\na,c,F\n", "line 3: a on c graded twice"),
        ('model,challenge,grade\n"a,c,A\n', "not CSV"),
    ],
)
def test_malformed_judge_file_is_refused(text, says):
    """Each way a judge file breaks the documented format raises JudgeFileError naming the line."""
    with pytest.raises(jg.JudgeFileError, match=says):
        jg.parse(text, RUBRIC)


def judged_summary() -> dict[str, Any]:
    cases = [case("good", "core1", "passed", "core"), case("good", "edge1", "passed", "edge"),
             case("good", "prec1", "passed", "precision"), case("good", "rob1", "wrong", "robustness"),
             case("bad", "core1", "wrong", "core"), case("bad", "edge1", "passed", "edge"),
             case("bad", "sp", "skipped", "speed")]  # fmt: skip
    grades = {("good", "flash_attention"): ("A", 95.0), ("bad", "flash_attention"): ("D", 62.0),
              ("cuda", "flash_attention"): ("built", 100.0)}  # fmt: skip
    return summary(grades, cases)


def test_judge_disagreements_come_with_the_cases_that_explain_them():
    """Judge higher: the failed cases; judge lower: the passed edge and precision cases; one step apart agrees."""
    text = ("model,challenge,grade\ngood,flash_attention,70\nbad,flash_attention,A\ngood,flash_attention,C-\n"
            "cuda,flash_attention,A\nnobody,flash_attention,A\ngood,warp,A\ngood,kv_cache,A\n")  # fmt: skip
    rows = jg.parse(text, RUBRIC)
    rows.append(rows[0] | {"letter": "A-", "given": "A-", "line": 9})  # one step under A: agrees
    result = jg.disagreements(judged_summary(), rows, RUBRIC)
    found = {(d["model"], d["given"]): d for d in result["disagreements"]}
    assert set(found) == {("good", "70"), ("bad", "A"), ("good", "C-")} and result["compared"] == 4
    lower, higher = found["good", "70"], found["bad", "A"]
    assert lower["letter"] == "C-" and lower["gap"] == -7
    assert [c["case"] for c in lower["cases"]] == ["edge1", "prec1"]  # not the passed core case, not the failed one
    assert higher["gap"] == 8 and [c["case"] for c in higher["cases"]] == ["core1"]  # the skip explains nothing
    why = {(u["model"], u["challenge"]): u["why"] for u in result["not_compared"]}
    assert why == {
        ("cuda", "flash_attention"): "execution grade 'built' is not a letter",
        ("nobody", "flash_attention"): "model not graded in this run",
        ("good", "warp"): "unknown challenge",
        ("good", "kv_cache"): "challenge not graded for this model in this run",
    }
    assert "1 failed: core1 (core, wrong: trap of core1)" in jg.describe_cases(higher)


# --- real runs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "says"),
    [
        ("--baseline={tmp}/missing.json", "--baseline={tmp}/missing.json: no such file"),
        ("--baseline={tmp}/stub.json", "a report stub, not a finished run"),
        ("--judge-grades={tmp}/missing.csv", "--judge-grades={tmp}/missing.csv: no such file"),
        ("--judge-grades={tmp}/bad.csv", "line 2: grade 'Z' is neither a rubric letter nor a score"),
        ("--judge-grades={tmp}/esc.csv", "line 3: \\x1b[31mred on c graded twice"),  # shown, not sent
    ],
)
def test_unreadable_baseline_or_judge_file_is_a_usage_error(tmp_path, option, says):
    """Exit 4 with one line naming the option and why, before any case runs."""
    (tmp_path / "stub.json").write_text('{"schema_version": 1, "status": "running"}')
    (tmp_path / "bad.csv").write_text("model,challenge,grade\ndemo-tiled,flash_attention,Z\n")
    (tmp_path / "esc.csv").write_text("model,challenge,grade\n\x1b[31mred,c,A\n\x1b[31mred,c,F\n")
    run = run_grader(tmp_path, option.format(tmp=tmp_path), *NO_COLOR)
    errors = [line for line in run.output.splitlines() if line.startswith("ERROR")]
    assert run.returncode == 4 and len(errors) == 1 and says.format(tmp=tmp_path) in errors[0], run.output[-2000:]
    assert "\x1b" not in run.output


SCOPE = ("--model=demo-tiled,demo-buggy", "--no-speed", "--seed=7", "-k", "n300-d64-t97-causal-f32 and not keep or n33")
JUDGE_CSV = """model,challenge,grade
demo-tiled,flash_attention,C
demo-buggy,flash_attention,92
demo-nobody,flash_attention,A
demo-tiled,warp_drive,B
"""


def doctor(path: Path) -> None:
    """The earlier run as if demo-buggy had passed its float32 case (A), demo-tiled failed its one-row tile (D)."""
    data = json.loads(path.read_text())
    for c in data["cases"]:
        if (c["model"], c["case"]) == ("demo-buggy", "b1-h2-n300-d64-t97-causal-f32"):
            c.update(outcome="passed", message="")
        if (c["model"], c["case"]) == ("demo-tiled", "b1-h1-n33-d16-t1-causal"):
            c.update(outcome="wrong", message="made up for the baseline")
    data["models"]["demo-buggy"]["challenges"]["flash_attention"].update(letter="A", points=95.0)
    data["models"]["demo-tiled"]["challenges"]["flash_attention"].update(letter="D", points=62.5)
    path.write_text(json.dumps(data))


def section(text: str, title: str) -> list[str]:
    body = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    return body.splitlines()


def cells(lines: list[str], model: str) -> list[str]:
    row = next(line for line in lines if line.startswith(f"| {model} "))
    return [c.strip() for c in row.strip("|").split("|")]


def test_real_run_against_a_doctored_baseline_and_a_judge(tmp_path):
    """The baseline (this reports folder's own results.json, moved aside by the run) and judge sections in grades.md."""
    first = run_grader(tmp_path, *SCOPE, *NO_COLOR)
    assert first.returncode == 1, first.output[-2000:]
    doctor(first.reports / "results.json")
    (tmp_path / "judge.csv").write_text(JUDGE_CSV)
    baseline, judge = f"--baseline={first.reports / 'results.json'}", f"--judge-grades={tmp_path / 'judge.csv'}"
    run = run_grader(tmp_path, *SCOPE, baseline, judge, *NO_COLOR)
    grades = (run.reports / "grades.md").read_text()
    against = section(grades, "Against the baseline")
    assert cells(against, "demo-tiled")[2:] == ["D (62.5)", "A+ (100.0)", "+37.5"], grades
    assert cells(against, "demo-buggy")[2:] == ["A (95.0)", "C- (71.4)", "-23.6"]
    assert (
        "- demo-buggy flash_attention/b1-h2-n300-d64-t97-causal-f32 (precision): passed → wrong — O: max abs err"
        in grades
    )
    assert "- demo-tiled flash_attention/b1-h1-n33-d16-t1-causal (edge): wrong → passed — made up" in grades
    judged = section(grades, "Judge against execution")
    assert cells(judged, "demo-buggy")[2:5] == ["92 → A-", "C- (71.4)", "judge 6 steps higher"]
    assert cells(judged, "demo-buggy")[5].startswith(
        "1 failed: b1-h2-n300-d64-t97-causal-f32 (precision, wrong: float32"
    )
    assert cells(judged, "demo-tiled")[2:5] == ["C", "A+ (100.0)", "judge 7 steps lower"]
    explained = (
        "2 passed: b1-h1-n33-d16-t1-causal (edge: tile of one element); b1-h2-n300-d64-t97-causal-f32 (precision"
    )
    assert cells(judged, "demo-tiled")[5].startswith(explained)
    assert "- line 4: demo-nobody on flash_attention: model not graded in this run" in judged
    assert "- line 5: demo-tiled on warp_drive: unknown challenge" in judged
    assert (run.reports / "history" / "0001" / "results.json").is_file()  # the baseline moved aside: read at start
    out = run.output
    assert out.index("grade matrix") < out.index("against the baseline") < out.index("judge against execution")

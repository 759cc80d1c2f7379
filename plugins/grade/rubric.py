"""Scoring as a small pure module: case records in, points, letters, head-to-head records and a ranking out.

How a grade is made (weights and thresholds come from ``rubric.toml``):

1. Each scored case earns a credit in [0, 1]: 1 if it passed, 0 otherwise; a passed speed case earns the fraction of
   the speed band its time ratio falls in. Skipped cases are not scored, nor are cases beyond the model's task (they
   depend on a rule its task profile does not state): those are listed, as notes, and cost nothing.
2. A category's score is its mean credit. Points = 100 * sum(weight * score) / sum(weight), over the categories that
   had at least one scored case.
3. The letter is the best one whose threshold the points reach, capped by the core gate when a core case failed.
4. Head-to-head: for every pair of models, each challenge both attempted is a win, loss or tie by grade points.
5. Ranking: one row per model, on the run's challenges (those it graded): the score is the grade points averaged over
   all of them, a challenge not attempted counting 0 (mean x coverage), so one A+ alone does not rank level with A+
   on every challenge; the mean over attempted challenges and the coverage stand beside it. A model graded from several
   samples is one row: each challenge counts the mean of its samples, and the row gives the score's spread.
6. A folder with no code (``NO_CODE``) counts as an F in 4 and 5 under ``[no_code] score = "zero"``, and as not
   attempted under ``"not attempted"``; statuses that count as neither (``BUILT_ONLY``, ``SKIPPED_HERE``) are left
   out of both.

Nothing here touches pytest; the plugin in ``plugins/grade/plugin.py`` calls it through overridable hooks.
"""

from __future__ import annotations

import statistics
import tomllib
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from plugins.base.records import PASSED, SKIPPED, CaseRecord
from plugins.discover.submissions import sample_number, split_sample
from reference.contract import CATEGORIES

# A CUDA challenge graded where there is no GPU: its kernels compiled, none ran. Not a letter: it is shown in place of
# one, and neither ranked nor compared (a buggy kernel that builds must not read as an A+).
BUILT_ONLY = "built"
# A submission none of whose cases could run here (a Triton kernel without a GPU, an MLX one without MLX): every case
# was skipped for the machine's reason, which the grade's notes give. Not a letter either, and counted like BUILT_ONLY.
SKIPPED_HERE = "skipped here"
NOT_HERE = (BUILT_ONLY, SKIPPED_HERE)  # graded where the machine allows: neither in a model's coverage nor in its score
NOT_GRADED = "—"  # the overall letter of a model none of whose challenges could be graded here
# A challenge folder with no source file of the challenge's language (a prompt, notes): nothing ran. Not a letter
# either; the rubric's [no_code] score says what it counts as: "zero" (an F's grade points in the ranking and
# head-to-head, coverage counted: the task was given) or "not attempted" (like a missing folder: neither).
NO_CODE = "no code"
NO_CODE_SCORES = ("zero", "not attempted")


@dataclass(frozen=True)
class Rubric:
    weights: Mapping[str, float]
    speed_bands: tuple[tuple[float, float], ...]  # (ratio under which, credit), fastest band first
    letters: tuple[tuple[str, float], ...]  # (letter, minimum points), best first; below the last: F
    grade_points: Mapping[str, float]
    core_failure_cap: str | None
    no_code: str = "zero"  # one of NO_CODE_SCORES


def load_rubric(path: Path) -> Rubric:
    data = tomllib.loads(path.read_text())
    weights = {c: float(data["weights"].get(c, 0.0)) for c in CATEGORIES}
    letters = tuple(sorted(((k, float(v)) for k, v in data["letters"].items()), key=lambda kv: -kv[1]))
    return Rubric(
        weights=weights,
        speed_bands=tuple((float(a), float(b)) for a, b in sorted(data["speed"]["bands"])),
        letters=letters,
        grade_points={k: float(v) for k, v in data["grade_points"].items()},
        core_failure_cap=data.get("gates", {}).get("core_failure_cap"),
        no_code=_no_code_score(data),
    )


def _no_code_score(data: Mapping[str, Any]) -> str:
    """``[no_code] score``: "zero" (the default) or "not attempted"; anything else is a broken rubric."""
    value = data.get("no_code", {}).get("score", "zero")
    if value not in NO_CODE_SCORES:
        raise ValueError(f"[no_code] score = {value!r}: expected one of {', '.join(map(repr, NO_CODE_SCORES))}")
    return value


def counted_points(letter: str, rubric: Rubric) -> float | None:
    """The grade points a letter or status counts as in the ranking and head-to-head; None when it does not count
    (BUILT_ONLY, and NO_CODE under "not attempted"). NO_CODE under "zero" counts as an F."""
    if letter == NO_CODE:
        return rubric.grade_points.get("F", 0.0) if rubric.no_code == "zero" else None
    return rubric.grade_points.get(letter)


@dataclass
class ChallengeGrade:
    """One model's grade on one challenge, with everything needed to explain it."""

    model: str
    challenge: str
    points: float
    letter: str = ""
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> weight, score, cases, passed
    failed: list[dict[str, Any]] = field(default_factory=list)  # case, guards, origin, outcome, message, worst_ratio
    outcomes: dict[str, int] = field(default_factory=dict)  # outcome -> count
    runtime: str = ""
    loaded: str = ""
    speed_ratio: float | None = None
    notes: list[str] = field(default_factory=list)
    # category -> cases that ran and are not scored (each depends on a rule the task does not state): such a category
    # is absent from ``categories``, and the report says why instead of "not run"
    unscored: dict[str, int] = field(default_factory=dict)
    no_code: str = ""  # when the letter is NO_CODE: what the folder holds instead of code (one line in the report)

    @property
    def core_failed(self) -> bool:
        core = self.categories.get("core")
        return bool(core) and core["passed"] < core["cases"]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def case_credit(record: CaseRecord, rubric: Rubric) -> float:
    if not record.task_passed:
        return 0.0
    if record.category != "speed":
        return 1.0
    if not record.speed:
        return 0.0
    return next((credit for under, credit in rubric.speed_bands if record.speed["ratio"] < under), 0.0)


def score(model: str, challenge: str, records: Iterable[CaseRecord], rubric: Rubric) -> ChallengeGrade:
    """Points and per-category breakdown for one (model, challenge) from its case records (letter left empty)."""
    ran = [r for r in records if r.outcome != SKIPPED]
    scored = [r for r in ran if r.scored]  # a rule the model's prompt did not state is no fault, nor any credit
    categories: dict[str, dict[str, Any]] = {}
    for name in CATEGORIES:
        mine = [r for r in scored if r.category == name]
        if mine and rubric.weights[name] > 0:
            credit = sum(case_credit(r, rubric) for r in mine)
            categories[name] = {
                "weight": rubric.weights[name],
                "score": credit / len(mine),
                "cases": len(mine),
                "passed": sum(r.task_passed for r in mine),
            }
    total_weight = sum(c["weight"] for c in categories.values())
    points = 100.0 * sum(c["weight"] * c["score"] for c in categories.values()) / total_weight if total_weight else 0.0
    failed = [_failure(r) for r in ran if r.outcome != PASSED]
    outcomes = dict(Counter(r.outcome for r in ran))
    unscored = dict(Counter(r.category for r in ran if not r.scored))
    speed = [r.speed["ratio"] for r in scored if r.speed]
    first = next((r for r in scored if r.loaded), None)  # a dead worker's crash record knows no loading details
    return ChallengeGrade(
        model,
        challenge,
        round(points, 2),
        categories=categories,
        failed=failed,
        outcomes=outcomes,
        runtime=first.runtime if first else "",
        loaded=first.loaded if first else "",
        speed_ratio=max(speed) if speed else None,
        unscored=unscored,
    )


def _failure(r: CaseRecord) -> dict[str, Any]:
    """A failed case as the report lists it. One beyond the task is a note ("beyond"), unless it failed a check its
    task states (a case graded on part of its checks): then it is the task's failure like any other."""
    task_failure = r.scored and not r.task_passed
    return {
        "case": r.case,
        "category": r.category,
        "guards": r.guards,
        "origin": "task" if task_failure else r.origin,
        "beyond": [] if task_failure else r.beyond,  # the unstated rules the case depends on: a note, not scored
        "outcome": r.outcome,
        "message": r.message,
        "worst_ratio": r.worst_ratio,
    }


def letter_for(grade: ChallengeGrade, rubric: Rubric) -> str:
    """The best letter whose threshold the points reach, capped by the core gate."""
    letter = next((name for name, minimum in rubric.letters if grade.points >= minimum), "F")
    cap = rubric.core_failure_cap
    if cap and grade.core_failed and rubric.grade_points[letter] > rubric.grade_points[cap]:
        grade.notes.append(f"capped at {cap}: a core case failed")
        return cap
    return letter


def head_to_head(letters: Mapping[str, Mapping[str, str]], rubric: Rubric) -> dict[str, dict[str, list[int]]]:
    """``[wins, losses, ties]`` of each model against each other, over the challenges both attempted."""
    table: dict[str, dict[str, list[int]]] = {}
    for a in letters:
        table[a] = {}
        for b in letters:
            if a == b:
                continue
            record = [0, 0, 0]
            for challenge in letters[a].keys() & letters[b].keys():
                pa, pb = counted_points(letters[a][challenge], rubric), counted_points(letters[b][challenge], rubric)
                if pa is None or pb is None:
                    continue  # a status such as BUILT_ONLY or SKIPPED_HERE is no grade to compare
                record[0 if pa > pb else 1 if pa < pb else 2] += 1
            table[a][b] = record
    return table


def ranking(
    letters: Mapping[str, Mapping[str, str]], rubric: Rubric, challenges: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per model (its sample units together), ranked on the run's ``challenges``: by ``score``, the grade
    points averaged over all of them with a challenge not attempted counting 0 (mean x coverage), then by the mean
    over attempted ones, then coverage, then name.

    :param letters: graded unit (a model, or ``model/sample-N``) -> challenge -> letter or status.
    :param challenges: the challenges this run graded (at least one unit has counted points on each), in order.

    A model graded from several samples of a challenge counts the mean of its samples' grade points there, and its
    row gives the ``spread``: the score with every such challenge at its worst sample and at its best. A challenge the
    model's code was only built for here (CUDA on a machine without a GPU), or could not run here at all, is left out
    of its score, not counted 0."""
    groups: dict[str, list[str]] = {}
    for unit in letters:
        groups.setdefault(split_sample(unit)[0], []).append(unit)
    rows = [_ranking_row(model, units, letters, rubric, challenges) for model, units in groups.items()]
    rows.sort(key=lambda row: (row["rank"] is None, -(row["score"] or 0), -(row["mean_grade_points"] or 0),
                               -row["attempted"], row["model"]))  # fmt: skip
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank if row["rank"] is not None else None
    return rows


def _ranking_row(
    model: str, units: list[str], letters: Mapping[str, Mapping[str, str]], rubric: Rubric, challenges: Sequence[str]
) -> dict[str, Any]:
    """The ranking figures of one model from the letters of its units (module docstring, step 5)."""
    graded = {c: [letters[u][c] for u in units if c in letters[u]] for c in {c for u in units for c in letters[u]}}
    # Could not run here (no GPU, no MLX), also where no model was graded (then not among the run's): not held against
    # the model, and counted apart by status for its coverage ("+1 only built here").
    not_here = {c for c, mine in graded.items() if all(g in NOT_HERE for g in mine)}
    counted: dict[str, list[float]] = {}  # challenge -> grade points of each unit graded on it (samples: several)
    attempted = no_code = 0
    for challenge in challenges:
        mine = graded.get(challenge)
        if not mine or challenge in not_here:
            continue
        no_code += all(g == NO_CODE for g in mine)
        # Under "not attempted" a folder without code is no attempt, like a missing folder.
        attempted += not (all(g == NO_CODE for g in mine) and rubric.no_code == "not attempted")
        points = [p for p in (counted_points(g, rubric) for g in mine) if p is not None]
        if points:
            counted[challenge] = points
    n = len(set(challenges) - not_here)  # the run's challenges this model could be graded on here
    built = sum(all(g == BUILT_ONLY for g in graded[c]) for c in not_here)
    mean = sum(statistics.fmean(p) for p in counted.values()) / len(counted) if counted else None
    score = sum(statistics.fmean(p) for p in counted.values()) / n if counted and n else None
    sampled = any(len(p) > 1 for p in counted.values())
    return {
        "model": model,
        "units": sorted(units, key=lambda u: sample_number(split_sample(u)[1])),
        "rank": 0 if mean is not None else None,  # None: nothing gradable here; listed last, unranked
        "score": None if score is None else round(score, 2),
        "mean_grade_points": None if mean is None else round(mean, 2),
        "attempted": attempted,
        "coverage": f"{attempted} of {n}",  # score = mean x coverage
        "run_challenges": len(challenges),
        "built_only": built,  # challenges only built here (CUDA, no GPU): not in its coverage or score
        "skipped_here": len(not_here) - built,  # every case skipped here (no GPU, no MLX; its notes say which), or
        # built for some samples and skipped for others: likewise
        "samples": max((len(p) for p in counted.values()), default=0) if sampled else 0,
        "spread": [
            round(sum(min(p) for p in counted.values()) / n, 2),
            round(sum(max(p) for p in counted.values()) / n, 2),
        ]
        if sampled
        else None,
        "no_code": no_code,  # challenges whose folder holds no code
        "no_code_counts_as": "F" if rubric.no_code == "zero" else "not attempted",
    }


def unit_mean(grades: Mapping[str, str], rubric: Rubric) -> float | None:
    """One graded unit's mean grade points over the challenges it was graded on (its overall letter's basis)."""
    points = [p for p in (counted_points(g, rubric) for g in grades.values()) if p is not None]
    return round(sum(points) / len(points), 2) if points else None


def run_challenges(letters: Mapping[str, Mapping[str, str]], order: Sequence[str], rubric: Rubric) -> list[str]:
    """The challenges of ``order`` that this run graded: some unit has counted grade points on it (a challenge
    deselected by ``-k``, or one only built here, is not one of them)."""
    return [
        c
        for c in order
        if any(c in grades and counted_points(grades[c], rubric) is not None for grades in letters.values())
    ]


def overall_letter(mean_grade_points: float | None, rubric: Rubric) -> str:
    """The best letter whose grade points the mean reaches (the badge's letter); a dash when nothing was graded."""
    if mean_grade_points is None:
        return NOT_GRADED
    reachable = [(points, letter) for letter, points in rubric.grade_points.items() if points <= mean_grade_points]
    return max(reachable)[1] if reachable else "F"

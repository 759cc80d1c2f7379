"""Pytest side of grading: gather case records on the controller and turn them into the run's summary.

Only the xdist controller (or the single process without ``-n``) aggregates, from ``pytest_runtest_logreport``, so the
summary is the same with and without ``-n``. A graded test whose report carries no record (its worker died) is scored as
a crash instead of vanishing. The summary is a plain dict; ``plugins/report`` writes it out.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
from typing import Any

import pytest

from plugins import hookspecs
from plugins.config import grader_config, run_quietly
from plugins.discover.plugin import selected_submissions
from plugins.grade import records as r
from plugins.grade import rubric as rubric_module
from reference.challenges import all_challenges, reference_module

SUMMARY_KEY = pytest.StashKey[dict[str, Any]]()
SCHEMA_VERSION = 1
_NODE_ID = re.compile(r"::test_(?P<challenge>\w+)\[(?P<model>[^/\]]+)/(?P<case>[^\]]+)\]$")


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    pluginmanager.add_hookspecs(hookspecs)


@pytest.hookimpl(trylast=True)
def pytest_grader_score(model: str, challenge: str, records: list[r.CaseRecord], rubric: Any) -> Any:
    return rubric_module.score(model, challenge, records, rubric)


@pytest.hookimpl(trylast=True)
def pytest_grader_letter(grade: rubric_module.ChallengeGrade, rubric: Any) -> str:
    return rubric_module.letter_for(grade, rubric)


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        config.pluginmanager.register(RecordCollector(config), "kernelgrade-records")


class RecordCollector:
    """Controller-only: one record per graded test, then the summary at session end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.records: dict[str, r.CaseRecord] = {}
        self.orphans: dict[str, str] = {}  # nodeid -> failure text, for graded tests that came back without a record

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == r.RECORD_PROPERTY:
                self.records[report.nodeid] = r.CaseRecord.from_dict(value)
                return
        if report.failed and _NODE_ID.search(report.nodeid):
            self.orphans[report.nodeid] = str(report.longrepr)[-2000:]

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        for nodeid, text in self.orphans.items():
            if nodeid not in self.records:
                self.records[nodeid] = _orphan_record(nodeid, text)
        if not self.records:
            return
        summary = build_summary(self.config, sorted(self.records.values(), key=_order))
        self.config.hook.pytest_grader_update_summary(summary=summary, config=self.config)
        self.config.stash[SUMMARY_KEY] = summary


def _order(record: r.CaseRecord) -> tuple[str, int, int]:
    challenge_order = [c.id for c in all_challenges()].index(record.challenge)
    return (record.model, challenge_order, record.case_index)


def _orphan_record(nodeid: str, text: str) -> r.CaseRecord:
    """A crash record for a graded test whose process died before it could report (xdist's "worker crashed")."""
    match = _NODE_ID.search(nodeid)
    reference = reference_module(match["challenge"])
    index, case = next((i, c) for i, c in enumerate(reference.CASES) if c.id == match["case"])
    last_line = text.strip().splitlines()[-1] if text.strip() else "no details"
    message = f"the pytest process running this case died or failed outside the sandbox: {last_line}"
    return r.CaseRecord.for_case(
        match["model"], match["challenge"], case, index, r.CRASH, message=message, nodeid=nodeid
    )


def build_summary(config: pytest.Config, records: list[r.CaseRecord]) -> dict[str, Any]:
    """Grades, ranking and head-to-head from the records, with the run's provenance (``results.json``; the README
    describes its keys)."""
    cfg = grader_config(config)
    rubric = rubric_module.load_rubric(cfg.rubric)
    challenges = all_challenges()
    models: dict[str, dict[str, Any]] = {}
    letters: dict[str, dict[str, str]] = {}
    for model in dict.fromkeys(rec.model for rec in records):
        models[model] = {"challenges": {}}
        letters[model] = {}
        for challenge in challenges:
            mine = [rec for rec in records if rec.model == model and rec.challenge == challenge.id]
            if not mine:
                continue
            grade = config.hook.pytest_grader_score(model=model, challenge=challenge.id, records=mine, rubric=rubric)
            grade.letter = grade.letter or config.hook.pytest_grader_letter(grade=grade, rubric=rubric)
            total = len(reference_module(challenge.id).CASES)
            if len(mine) < total:
                grade.notes.append(f"partial run: {len(mine)} of {total} cases")
            models[model]["challenges"][challenge.id] = grade.to_dict()
            letters[model][challenge.id] = grade.letter
    ranking = rubric_module.ranking(letters, rubric, len(challenges))
    for row in ranking:
        models[row["model"]].update(
            mean_grade_points=row["mean_grade_points"],
            coverage=row["coverage"],
            rank=row["rank"],
            overall=rubric_module.overall_letter(row["mean_grade_points"], rubric),
        )
    return {
        "schema_version": SCHEMA_VERSION,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine_info(cfg.device),
        "commit": git_commit(cfg.repo),
        "options": cfg.to_dict()
        | {
            "workers": str(getattr(config.option, "numprocesses", None) or 0),
            "args": [str(a) for a in config.invocation_params.args],
        },
        "challenges": [{"id": c.id, "title": c.title, "graded": bool(c.entry_points)} for c in challenges],
        "submissions": [
            {
                "model": s.model,
                "challenge": s.challenge,
                "folder": str(s.folder),
                "runtime": s.runtime,
                "loaded": s.describe(),
            }
            for s in selected_submissions(config)
        ],
        "cases": [rec.to_dict() for rec in records],
        "models": models,
        "ranking": ranking,
        "head_to_head": rubric_module.head_to_head(letters, rubric),
    }


def machine_info(device: str) -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": _cpu_count(),
        "numpy": numpy.__version__,
        "device": device,
        "gpu": None,
    }
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    gpus = run_quietly(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if gpus:
        info["gpu"] = gpus.splitlines()
    return info


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 0)


def git_commit(repo: Any) -> dict[str, Any]:
    sha = run_quietly(["git", "-C", str(repo), "rev-parse", "HEAD"])
    dirty = run_quietly(["git", "-C", str(repo), "status", "--porcelain"])
    return {"sha": sha or None, "dirty": bool(dirty)}

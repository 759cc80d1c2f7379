"""Pytest side of discovery: find submissions once, validate ``--model``, parametrize tests, never collect submissions.

A test module takes part by naming its reference module (``REFERENCE = reference.flash_attention``) and requesting the
``submission`` and ``case`` arguments; each (submission, case) pair becomes one test with the id ``model/case`` and the
marker ``submission(model=..., challenge=...)``, so ``-m "submission(model='x')"`` selects one model exactly.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from plugins.config import grader_config
from plugins.discover.submissions import Submission, discover, submissions_root

SUBMISSIONS_KEY = pytest.StashKey[list[Submission]]()


def pytest_configure(config: pytest.Config) -> None:
    """Discover submissions and check every ``--model`` names one exactly (a typo is a usage error, not a skip)."""
    cfg = grader_config(config)
    found = discover(submissions_root(cfg.submissions_dir))
    known = sorted({s.model for s in found})
    unknown = [m for m in cfg.models if m not in known]
    if unknown:
        raise pytest.UsageError(
            f"--model {', '.join(unknown)}: no such model in {cfg.submissions_dir}; "
            f"known models: {', '.join(known) or 'none'}"
        )
    config.stash[SUBMISSIONS_KEY] = [s for s in found if not cfg.models or s.model in cfg.models]


def selected_submissions(config: pytest.Config) -> list[Submission]:
    return config.stash[SUBMISSIONS_KEY]


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Submission folders hold the models' own tests and scripts: the grader never collects or runs them."""
    cfg = grader_config(config)
    for root in {cfg.submissions_dir, cfg.repo / "submissions"}:
        if collection_path == root or root in collection_path.parents:
            return True
    return None


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if not {"submission", "case"} <= set(metafunc.fixturenames):
        return
    reference = metafunc.module.REFERENCE
    challenge = reference.CHALLENGE.id
    params = []
    for sub in (s for s in selected_submissions(metafunc.config) if s.challenge == challenge):
        for case in reference.CASES:
            marks = [pytest.mark.submission(model=sub.model, challenge=challenge)]
            if case.is_speed:
                marks.append(pytest.mark.speed)
            params.append(pytest.param(sub, case, id=f"{sub.model}/{case.id}", marks=marks))
    metafunc.parametrize(("submission", "case"), params)

"""Pytest side of discovery: find submissions once, validate ``--model``, parametrize tests, never collect submissions.

A test module takes part by naming its reference module (``REFERENCE = reference.flash_attention``) and requesting the
``submission`` and ``case`` arguments; each (submission, case) pair becomes one test with the id ``model/case``
(:mod:`plugins.discover.ids`: a model name that pytest would escape is percent-encoded there) and the marker
``submission(model=..., challenge=...)``, so ``-m "submission(model='x')"`` selects one model exactly.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import pytest

from plugins.base import inert
from plugins.config import grader_config
from plugins.discover import shard
from plugins.discover.ids import graded_params
from plugins.discover.submissions import (
    Submission,
    discover,
    known_names,
    name_warnings,
    select,
    submissions_root,
)
from plugins.discover.tasks import ProfileFinder, repo_roots
from reference import tasks

SUBMISSIONS_KEY = pytest.StashKey[list[Submission]]()
NAME_WARNINGS_KEY = pytest.StashKey[list[str]]()


def pytest_configure(config: pytest.Config) -> None:
    """Discover submissions; a missing, empty or non-folder ``--submissions-dir`` and a ``--model`` that names no
    model exactly are usage errors (exit 4), not "0 tests" or a skip. Model folders whose names the grader refuses
    or warns about (``names.py``) are named in a warning."""
    cfg = grader_config(config)
    where = cfg.submissions_dir
    problem = "no such folder" if not where.exists() else "not a folder" if not where.is_dir() else None
    try:
        found = [] if problem else discover(submissions_root(where), _profiles(config, where))
        warned = [] if problem else name_warnings(submissions_root(where))
    except tasks.TaskError as exc:  # a model's or the repo's kernelgrade-task.toml that cannot be used
        raise usage_error(config, str(exc)) from None
    except OSError as exc:  # an unreadable folder of the roster
        found, warned, problem = [], [], f"cannot be read ({exc.strerror}: {exc.filename!r})"
    config.stash[NAME_WARNINGS_KEY] = warned
    if not found and not problem:
        problem = "no submissions in it (expected <model>/<challenge>/ folders, e.g. demo/flash_attention/)"
        problem += "".join(f"; {w}" for w in warned)
    if problem and not config.option.help:
        raise usage_error(config, f"--submissions-dir={where}: {problem}")
    chosen, unknown = select(found, cfg.models)  # a model's name selects every sample of it too
    known = known_names(found)
    if unknown:
        raise usage_error(config, f"--model {', '.join(unknown)}: no such model in {where}; {_suggest(unknown, known)}")
    # --shard=I/N keeps this shard's pairs here, so the header, the node map and the tests all see the same share
    config.stash[SUBMISSIONS_KEY] = shard.keep(config, chosen if cfg.models else found, cfg.shard)


def _suggest(unknown: list[str], known: list[str]) -> str:
    """``did you mean demo-tiled?`` for each unknown name close to a known one (difflib), then every known name."""
    close = [m for name in unknown for m in difflib.get_close_matches(name, known, n=3, cutoff=0.8)]
    hint = f"did you mean {' or '.join(dict.fromkeys(close))}? " if close else ""
    return f"{hint}known models: {', '.join(known) or 'none'}"


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The folder-name warnings, before any test runs (they are in the reports too)."""
    return [f"kernelgrade: warning: {inert.terminal(w)}" for w in config.stash.get(NAME_WARNINGS_KEY, [])]


def pytest_grader_update_summary(summary: dict[str, Any], config: pytest.Config) -> None:
    """The folder-name warnings lead the reports, with the run's own."""
    summary["warnings"] = [*summary.get("warnings", []), *config.stash.get(NAME_WARNINGS_KEY, [])]


def _profiles(config: pytest.Config, where: Path) -> ProfileFinder:
    """Task profiles per model (plugins/discover/tasks.py): ``--task`` for all, else each model's or the repo's file.
    An unusable profile is a usage error naming the option or the file."""
    option = grader_config(config).task
    try:
        override = tasks.load(option) if option else None
    except tasks.TaskError as exc:
        raise usage_error(config, f"--task: {exc}") from None
    return ProfileFinder([*repo_roots(submissions_root(where)), where], override)


def usage_error(config: pytest.Config, message: str) -> Exception:
    """Exit 4 with one line (model names made inert for the terminal); the reports folder is left as it is."""
    return pytest.UsageError(inert.terminal(message).replace("\n", "\\n"))


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
    # graded_params leaves out the cases of another contract variant than the model's task profile names
    for test_id, (sub, _, case) in graded_params(selected_submissions(metafunc.config), challenge):
        marks = [pytest.mark.submission(model=sub.model, challenge=challenge)]
        if case.is_speed:
            marks.append(pytest.mark.speed)
        params.append(pytest.param(sub, case, id=test_id, marks=marks))
    metafunc.parametrize(("submission", "case"), params)

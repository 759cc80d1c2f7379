"""The extra sections of a run's reports (``pytest_grader_report_sections``: the grader's own and users'), asked once
per run and kept in ``config.stash``: grades.md and report.html show the same ones, whichever is written first."""

from __future__ import annotations

from typing import Any

import pytest

SECTIONS_KEY = pytest.StashKey[list[tuple[str, str]]]()


def report_sections(config: pytest.Config, summary: dict[str, Any]) -> list[tuple[str, str]]:
    """``(title, Markdown body)`` pairs, in the order the hook returns them."""
    if SECTIONS_KEY not in config.stash:
        groups = config.hook.pytest_grader_report_sections(summary=summary, config=config)
        config.stash[SECTIONS_KEY] = [section for group in groups if group for section in group]
    return config.stash[SECTIONS_KEY]

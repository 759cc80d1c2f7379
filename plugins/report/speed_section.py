"""The ``grades.md`` section "Speed against peers" (``plugins.report.speed`` builds it).

A plugin module of its own: ``speed`` is imported by the report tables before pytest registers plugins, and a hook
module must not be imported before its registration (pytest could not rewrite it).
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.report.speed import render


@pytest.hookimpl
def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]]:
    body = render(summary)
    return [("Speed against peers", body)] if body else []

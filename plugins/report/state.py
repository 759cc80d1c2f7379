"""What a reports folder says of the run that wrote it: the ``status`` of its ``results.json`` and how to read it.

Shared by the folder's life cycle (:mod:`plugins.report.lifecycle`), recovery (:mod:`plugins.report.recover`) and the
shard merge; it imports nothing of theirs, so recovery and the life cycle can each import the other's work.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

RUNNING, USAGE_ERROR, FAILED_TO_START = "running", "usage-error", "failed-to-start"
STUBS = (USAGE_ERROR, FAILED_TO_START)  # statuses of stubs that stand for no run: replaced, never kept in history/


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def read_state(folder: Path) -> dict[str, Any] | None:
    """The folder's ``results.json`` as a dict; ``{"status": "unreadable"}`` if it is not JSON; None if absent."""
    path = folder / "results.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
    except ValueError:
        return {"status": "unreadable"}
    return data if isinstance(data, dict) else {"status": "unreadable"}

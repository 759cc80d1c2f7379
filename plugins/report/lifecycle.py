"""The reports folder never shows an earlier run's grades as if they were this run's.

- When a run starts (on the xdist controller, or the only process), the reports of the run before move to
  ``previous/`` (replacing what was there), and ``grades.md``, ``results.json`` (``"status": "running"``) and, when
  pytest-html will write it, ``report.html`` say "run in progress". They are replaced when the run ends.
- If the run before was killed (its ``results.json`` still says ``running``), its ``cases.jsonl`` is first turned into
  reports marked incomplete (:mod:`plugins.report.recover`); those move to ``previous/``.
- A usage error (a bad option, an unknown model, no submissions) is no run: it leaves the folder as it is, the last
  run that graded included. (Stubs that say ``"status": "usage-error"``, left by earlier versions, are replaced like
  the failed-to-start ones.)
- A run that stops before its session starts (an internal error or Ctrl-C while it discovers or copies the
  submissions, before the reports are moved aside) moves them aside the same way, through :class:`StartGuard`, and
  leaves a ``grades.md`` and ``results.json`` (``"status": "failed-to-start"``) that say why; the next run replaces
  them and keeps ``previous/``.
- A run that is still alive (its pid, on this host, is a running pytest) keeps its folder: the new run stops with a
  usage error instead of moving files from under it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
from pathlib import Path
from typing import Any

from plugins.base import inert
from plugins.config import reports_dir
from plugins.report import recover
from plugins.report.files import atomic_write
from plugins.report.state import FAILED_TO_START, RUNNING, STUBS, now, read_state

REPORT_FILES = ("grades.md", "results.json", "report.html", "cases.jsonl")
REPORT_DIRS = ("badges",)
PREVIOUS = "previous"
STUB_MARK = "<!-- kernelgrade: not a report -->"


class FolderBusy(Exception):
    """Another grading run that is still alive writes to this reports folder."""


def _alive(state: dict[str, Any]) -> bool:
    """Whether the run that wrote a "running" stub is still running (same host, its pid a live pytest)."""
    pid, host = state.get("pid"), state.get("host")
    if not isinstance(pid, int) or host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pytest" in cmdline


def retire(folder: Path) -> str:
    """Move the last run's reports to ``previous/`` (recovering a killed run first); returns what was done, for the
    terminal ("" when there was nothing). Raises :class:`FolderBusy` if a live run owns the folder."""
    state = read_state(folder)
    status = (state or {}).get("status")
    if state and status == RUNNING and _alive(state):
        raise FolderBusy(
            f"another grading run (pid {state['pid']}, started {state.get('created')}) is writing to {folder}; "
            "wait for it or pass another --reports-dir"
        )
    present = [folder / n for n in (*REPORT_FILES, *REPORT_DIRS) if (folder / n).exists()]
    if not present:
        return ""
    note = ""
    if status == RUNNING:
        try:
            note = recover.recover(folder, reason="the grading process died before it wrote its reports")
        except Exception as exc:  # a damaged journal must not stop every later run
            note = f"the previous run was killed and its cases.jsonl could not be rebuilt ({exc!r}); kept as it was"
        else:
            if not note:
                _remove(present)  # nothing was recorded: the stubs are all there was
                return "the previous run was killed before any case finished; its stubs were removed"
    elif status in STUBS:
        _remove(present)  # only the stubs: previous/ already holds the last real run
        return ""
    previous = folder / PREVIOUS
    shutil.rmtree(previous, ignore_errors=True)
    previous.mkdir(parents=True, exist_ok=True)
    for path in [folder / n for n in (*REPORT_FILES, *REPORT_DIRS)]:
        if path.exists():
            path.rename(previous / path.name)
    return (note + "; " if note else "") + f"the previous run's reports moved to {previous}"


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stamp_running(folder: Path, html: bool) -> dict[str, Any]:
    """The "run in progress" stubs; returns the stub state (pid, host, time)."""
    state = {"schema_version": 1, "status": RUNNING, "created": now(), "pid": os.getpid(), "host": socket.gethostname()}
    state["cases_file"] = "cases.jsonl"
    text = (
        f"# kernelgrade: run in progress — not grades\n\n{STUB_MARK}\n\n"
        f"A grading run started at {state['created']} (pid {state['pid']} on {state['host']}) writes its reports here "
        "when it ends; until then this file replaces them.\n\n"
        "If no grading run is running any more, it was killed before it could write them. "
        f"`python -m plugins.report.recover {folder}` builds reports marked incomplete from the cases it recorded in "
        "`cases.jsonl`; the next grading run does the same before it starts. "
        f"Reports of the run before this one, if any, are in `{PREVIOUS}/`.\n"
    )
    atomic_write(folder / "grades.md", text)
    atomic_write(folder / "results.json", json.dumps(state, indent=1) + "\n")
    if html:
        atomic_write(folder / "report.html", _html_page("kernelgrade: run in progress", text))
    return state


def _stamp_stopped(folder: Path, status: str, headline: str, message: str) -> None:
    """Move the last reports aside and leave stubs with ``status`` that say why no grades follow; never raises."""
    try:
        retire(folder)
        state = {"schema_version": 1, "status": status, "created": now(), "message": message}
        atomic_write(folder / "results.json", json.dumps(state, indent=1) + "\n")
        atomic_write(
            folder / "grades.md",
            f"# kernelgrade: no grades — {headline}\n\n{STUB_MARK}\n\n"
            f"{state['created']}: {_fenced(message)}\n\nThe last run that graded is in `{PREVIOUS}/`.\n",
        )
    except (OSError, FolderBusy):
        pass


class StartGuard:
    """Registered on the controller (or the only process) as soon as discovery configures: if the run stops with an
    internal error or an interrupt before its session starts (when the reports are moved aside and the "run in
    progress" stubs written), it moves the last run's reports aside and says so (module docstring). Without it, such a
    run left them in place, marked complete, as if they were its own. A usage error leaves the folder as it is."""

    def __init__(self, config: Any):
        self.config = config
        self.started = False

    def pytest_sessionstart(self) -> None:
        self.started = True

    def pytest_internalerror(self, excrepr: Any, excinfo: Any) -> None:
        lines = str(excrepr).strip().splitlines()
        self._stopped(f"internal error before grading started: {lines[-1] if lines else excinfo.typename}")

    def pytest_keyboard_interrupt(self, excinfo: Any) -> None:
        self._stopped(f"interrupted before grading started ({excinfo.typename})")

    def _stopped(self, message: str) -> None:
        if self.started:  # the session's own stubs and reports say what happened
            return
        headline = "the last invocation stopped before it graded anything"
        _stamp_stopped(reports_dir(self.config), FAILED_TO_START, headline, message[-2000:])


def _fenced(text: str) -> str:
    """Text from the command line (it may hold a submission's folder name) as an inert Markdown code block."""

    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"\n\n{fence}text\n{inert.visible(text)}\n{fence}"


def _html_page(title: str, markdown_text: str) -> str:

    body = inert.html(markdown_text.replace(STUB_MARK, "")).replace("\n\n", "</p><p>")
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    return f"{head}<body><p>{body}</p></body></html>\n"

"""The reports folder never shows an earlier run's grades as if they were this run's, and keeps the runs before.

- Runs are numbered (1, 2, ...; ``"run"`` in ``results.json``). When a run has selected at least one graded case (on
  the xdist controller, or the only process), the reports of the run before move to ``history/NNNN/`` (``NNNN`` its
  number, zero-padded: pictures, badges and ``cases.jsonl`` with them), the oldest numbered runs beyond ``--keep-runs``
  are deleted, and ``grades.md``, ``results.json`` (``"status": "running"``) and, when pytest-html will write it,
  ``report.html`` say "run in progress". They are replaced when the run ends.
- A usage error (a bad option, an unknown model, no submissions) and a run that selects no graded case (``-k flsh``)
  never rotate, delete or stamp anything: the folder stays as the last run that graded left it. (A ``--shard`` run
  whose share is empty still writes its reports: the merge reads every shard's.)
- If the run before was killed (its ``results.json`` still says ``running``), its ``cases.jsonl`` is first turned into
  reports marked incomplete (:mod:`plugins.report.recover`); those move to ``history/`` with its number.
- A run that stops before its session starts (an internal error or Ctrl-C while it discovers or copies the
  submissions) moves the reports to ``history/`` the same way, through :class:`StartGuard`, and leaves a ``grades.md``
  and ``results.json`` (``"status": "failed-to-start"``) that say why; the next run replaces these stubs.
- A run that is still alive (its pid, on this host, is a running pytest) keeps its folder: the new run stops with a
  usage error instead of moving files from under it.
- ``--baseline=last`` is the newest finished run of the folder, ``--baseline=N`` run N (:func:`run_results`).
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
from plugins.config.options import KEEP_RUNS
from plugins.report import recover
from plugins.report.files import atomic_write
from plugins.report.state import FAILED_TO_START, RUNNING, STUBS, now, read_state

# Every file a run writes into the folder: all of them move to history/ together (the pictures included).
REPORT_FILES = ("grades.md", "results.json", "report.html", "cases.jsonl", "heatmap.svg", "speed.svg")
REPORT_DIRS = ("badges",)
HISTORY = "history"
_RUN_FOLDER = re.compile(r"[0-9]{4,}")
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


def check_free(folder: Path) -> None:
    """Raise :class:`FolderBusy` if a live run owns the folder (read only: nothing is moved)."""
    state = read_state(folder)
    if state and state.get("status") == RUNNING and _alive(state):
        raise FolderBusy(
            f"another grading run (pid {state['pid']}, started {state.get('created')}) is writing to {folder}; "
            "wait for it or pass another --reports-dir"
        )


def run_folders(folder: Path) -> dict[int, Path]:
    """The numbered runs kept in ``folder/history``: number -> its folder."""
    history = folder / HISTORY
    if not history.is_dir():
        return {}
    found = {int(p.name): p for p in history.iterdir() if _RUN_FOLDER.fullmatch(p.name) and p.is_dir()}
    return dict(sorted(found.items()))


def run_number(state: dict[str, Any] | None) -> int | None:
    """The run number a ``results.json`` (or stub) records, if it records one."""
    number = (state or {}).get("run")
    return number if isinstance(number, int) and not isinstance(number, bool) and number > 0 else None


def next_run_number(folder: Path) -> int:
    """One more than any run number the folder knows (its history and its current reports)."""
    known = [*run_folders(folder), run_number(read_state(folder)) or 0]
    return max(known, default=0) + 1


def retire(folder: Path, keep: int = KEEP_RUNS) -> str:
    """Move the last run's reports to ``history/NNNN/`` (recovering a killed run first) and keep the newest ``keep``
    numbered runs; returns what was done, for the terminal ("" when there was nothing). Raises :class:`FolderBusy` if
    a live run owns the folder."""
    check_free(folder)
    state = read_state(folder)
    status = (state or {}).get("status")
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
        _remove(present)  # only the stubs: history/ already holds the last real run
        return ""
    target = _archive_folder(folder, run_number(state))
    target.mkdir(parents=True)
    for path in [folder / n for n in (*REPORT_FILES, *REPORT_DIRS)]:
        if path.exists():
            path.rename(target / path.name)
    pruned = prune(folder, keep)
    done = (note + "; " if note else "") + f"the previous run's reports moved to {target}"
    return done + (f"; {len(pruned)} older run(s) deleted (--keep-runs={keep})" if pruned else "")


def _archive_folder(folder: Path, number: int | None) -> Path:
    """``history/NNNN`` for a run's number; a run without one (written before runs were numbered) or whose number is
    taken gets the next free number, so nothing kept is ever overwritten."""
    taken = run_folders(folder)
    if number is None or number in taken:
        number = max([*taken, number or 0], default=0) + 1
    return folder / HISTORY / f"{number:04d}"


def prune(folder: Path, keep: int) -> list[Path]:
    """Delete the oldest numbered runs beyond the newest ``keep``; returns the folders deleted."""
    runs = list(run_folders(folder).values())
    gone = runs[: max(0, len(runs) - keep)]
    for path in gone:
        shutil.rmtree(path, ignore_errors=True)
    return gone


def run_results(folder: Path, which: str) -> Path | None:
    """The ``results.json`` of ``--baseline=last`` (the newest finished run: the folder's own reports, else the
    newest in history/) or ``--baseline=N`` (run N); None when there is no such run. Stubs are never a run."""
    current = folder / "results.json"
    state = read_state(folder)
    finished = state is not None and state.get("status") not in (RUNNING, *STUBS, "unreadable")
    if which == "last":
        if finished:
            return current
        for path in reversed(run_folders(folder).values()):
            if (read_state(path) or {}).get("status") not in (None, RUNNING, *STUBS, "unreadable"):
                return path / "results.json"
        return None
    number = int(which)
    if finished and run_number(state) == number:
        return current
    kept = run_folders(folder).get(number)
    return kept / "results.json" if kept and (kept / "results.json").is_file() else None


def _remove(paths: list[Path]) -> None:
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def stamp_running(folder: Path, html: bool, number: int | None = None) -> dict[str, Any]:
    """The "run in progress" stubs of run ``number``; returns the stub state (run, pid, host, time)."""
    state = {"schema_version": 1, "status": RUNNING, "created": now(), "pid": os.getpid(), "host": socket.gethostname()}
    if number is not None:
        state["run"] = number
    state["cases_file"] = "cases.jsonl"
    text = (
        f"# kernelgrade: run in progress — not grades\n\n{STUB_MARK}\n\n"
        f"A grading run started at {state['created']} (pid {state['pid']} on {state['host']}) writes its reports here "
        "when it ends; until then this file replaces them.\n\n"
        "If no grading run is running any more, it was killed before it could write them. "
        f"`python -m plugins.report.recover {folder}` builds reports marked incomplete from the cases it recorded in "
        "`cases.jsonl`; the next grading run does the same before it starts. "
        f"Reports of the runs before this one, if any, are in `{HISTORY}/`.\n"
    )
    atomic_write(folder / "grades.md", text)
    atomic_write(folder / "results.json", json.dumps(state, indent=1) + "\n")
    if html:
        atomic_write(folder / "report.html", _html_page("kernelgrade: run in progress", text))
    return state


def _stamp_stopped(folder: Path, status: str, headline: str, message: str, keep: int = KEEP_RUNS) -> None:
    """Move the last reports aside and leave stubs with ``status`` that say why no grades follow; never raises."""
    try:
        retire(folder, keep)
        state = {"schema_version": 1, "status": status, "created": now(), "message": message}
        atomic_write(folder / "results.json", json.dumps(state, indent=1) + "\n")
        atomic_write(
            folder / "grades.md",
            f"# kernelgrade: no grades — {headline}\n\n{STUB_MARK}\n\n"
            f"{state['created']}: {_fenced(message)}\n\nThe runs that graded are in `{HISTORY}/`.\n",
        )
    except (OSError, FolderBusy):
        pass


class StartGuard:
    """Registered on the controller (or the only process) as soon as discovery configures: if the run stops with an
    internal error or an interrupt before its session starts (while it discovers or copies the submissions), it moves
    the last run's reports aside and says so (module docstring); one that stops later, during collection, has not yet
    touched the folder and leaves it as it was. Without it, such a
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
        _stamp_stopped(reports_dir(self.config), FAILED_TO_START, headline, message[-2000:], keep_runs(self.config))


def keep_runs(config: Any) -> int:
    """``--keep-runs`` as checked when the run configured, else its default (a run that failed before that)."""
    value = getattr(config.option, "keep_runs", None)
    try:
        return max(1, int(str(value))) if value is not None else KEEP_RUNS
    except ValueError:
        return KEEP_RUNS


def _fenced(text: str) -> str:
    """Text from the command line (it may hold a submission's folder name) as an inert Markdown code block."""

    fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))
    return f"\n\n{fence}text\n{inert.visible(text)}\n{fence}"


def _html_page(title: str, markdown_text: str) -> str:

    body = inert.html(markdown_text.replace(STUB_MARK, "")).replace("\n\n", "</p><p>")
    head = f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title></head>"
    return f"{head}<body><p>{body}</p></body></html>\n"

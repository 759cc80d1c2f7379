"""Pytest side of grading: gather case records on the controller, journal them, and build the run's summary.

Only the xdist controller (or the single process without ``-n``) aggregates, from ``pytest_runtest_logreport``, so the
summary is the same with and without ``-n``. The reports folder is touched only once collection has selected a graded
case (the report stage readies it through ``pytest_grader_prepare_reports``): a run that selects nothing (``-k flsh``)
leaves it as it was. Each record is appended to ``cases.jsonl`` the moment it arrives (:mod:`plugins.grade.journal`),
so a run killed by any means leaves its cases for :mod:`plugins.report.recover`. A graded test whose report carries no
record (its worker died) is scored as a crash of the model it graded, found through the node id map of
:mod:`plugins.discover.ids` (never by parsing the id). The summary is a plain dict (:mod:`plugins.grade.summary`);
``plugins/report`` writes it out.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import platform
import signal
from typing import Any

import pytest

from plugins import hookspecs
from plugins.base import records as r
from plugins.base.host import host_cores, run_quietly
from plugins.config import grader_config
from plugins.discover import shard
from plugins.discover.ids import NodeMap
from plugins.discover.plugin import selected_submissions
from plugins.grade import rubric as rubric_module
from plugins.grade import summary as summary_module
from plugins.grade.journal import FILE_NAME, Journal
from reference.challenges import all_challenges, cases_by_category

SUMMARY_KEY = pytest.StashKey[dict[str, Any]]()
SCHEMA_VERSION = 1


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
    """Controller-only: one record per graded test, journalled as it comes, then the summary at session end."""

    def __init__(self, config: pytest.Config):
        self.config = config
        # Read once, before any submission runs: a rubric file changed during the run changes nothing.
        self.rubric = _load_rubric(config)
        self.header: dict[str, Any] = {}
        self.records: dict[tuple[str, str, int], r.CaseRecord] = {}
        self.selection = summary_module.Selection()
        self.journal: Journal | None = None
        self._nodes: NodeMap | None = None
        self.retired = ""  # what happened to the previous run's reports, for the terminal
        self.signal_name = ""
        self._sigterm_set = False

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """Make the run's header; nothing is written yet (the report stage checks now that no live run owns the reports
        folder: its ``pytest_sessionstart``)."""
        if self.config.option.collectonly:
            return
        self.header = run_header(self.config)
        self._terminate_as_interrupt()

    def begin(self) -> None:
        """The run grades: move the last run's reports to history/, stamp "run in progress" with this run's number,
        and open the journal with the run's header. Called once, when collection selected a graded case."""
        if self.journal is not None or not self.header:
            return
        folder = grader_config(self.config).reports_dir
        folder.mkdir(parents=True, exist_ok=True)
        hook = self.config.hook.pytest_grader_prepare_reports
        self.retired = hook(folder=folder, config=self.config, header=self.header) or ""
        self.journal = Journal(folder / FILE_NAME)
        self.journal.header(self.header)

    @property
    def nodes(self) -> NodeMap:
        """Built on first use: discovery configures after this plugin (pytest calls ``pytest_configure`` in reverse
        registration order)."""
        if self._nodes is None:
            challenges = [c.id for c in all_challenges()]
            self._nodes = NodeMap(selected_submissions(self.config), challenges, self.config.rootpath)
        return self._nodes

    def _terminate_as_interrupt(self) -> None:
        """SIGTERM (a CI timeout, ``kill``) ends the run like Ctrl-C, so its reports are written, marked interrupted."""

        def interrupt(signum: int, frame: Any) -> None:
            self.signal_name = signal.Signals(signum).name
            raise KeyboardInterrupt(self.signal_name)

        try:
            if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                signal.signal(signal.SIGTERM, interrupt)
                self._sigterm_set = True
        except ValueError:  # not the main thread (pytest run from a thread): leave SIGTERM alone
            pass

    def pytest_unconfigure(self, config: pytest.Config) -> None:
        if self._sigterm_set:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        if not self.config.pluginmanager.hasplugin("dsession"):  # under xdist the workers collect (below)
            self._selected([item.nodeid for item in session.items])

    @pytest.hookimpl(optionalhook=True)
    def pytest_xdist_node_collection_finished(self, node: Any, ids: list[str]) -> None:
        if not self.selection.known:
            self._selected(ids)

    def _selected(self, nodeids: list[str]) -> None:
        graded = [g for g in map(self.nodes.lookup, nodeids) if g is not None]
        keys = [(g.submission.model, g.submission.challenge, g.case_index) for g in graded]
        self.selection.selected |= set(keys)
        self.selection.known = True
        if keys or grader_config(self.config).shard is not None:  # an empty shard still reports (sessionfinish)
            self.begin()
        if self.journal:
            self.journal.selected(keys)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        for name, value in report.user_properties:
            if name == r.RECORD_PROPERTY:  # on the call report, and again on teardown's: keep the first
                if report.when == "call":
                    self._add(r.CaseRecord.from_dict(value))
                return
        graded = self.nodes.lookup(report.nodeid)
        if graded is None:
            return
        key = (graded.submission.model, graded.submission.challenge, graded.case_index)
        if report.skipped and key not in self.records:
            self.selection.skipped.add(key)
            if self.journal:
                self.journal.skipped(key)
        elif report.failed and key not in self.records:
            self._add(_orphan_record(graded, report))

    def _add(self, record: r.CaseRecord) -> None:
        self.records[record.model, record.challenge, record.case_index] = record
        if self.journal:
            self.journal.case(record)

    @pytest.hookimpl(tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if self.journal is None and grader_config(self.config).shard is not None:
            self.begin()  # a shard whose share is empty still reports: the merge reads every shard's folder
        if self.journal is None:  # --collect-only, the session never started, or no graded case was selected
            return
        records = list(self.records.values())
        interrupted = exitstatus == pytest.ExitCode.INTERRUPTED
        measure_speed = grader_config(self.config).measure_speed
        reason = self._stop_reason(session)
        status, detail = summary_module.run_status(self.selection, records, interrupted, reason, measure_speed)
        summary = summary_module.summarise(
            self.header,
            records,
            self.selection,
            status,
            detail,
            self.rubric,
            score=self.config.hook.pytest_grader_score,
            letter=self.config.hook.pytest_grader_letter,
        )
        self.config.hook.pytest_grader_update_summary(summary=summary, config=self.config)
        self.config.stash[SUMMARY_KEY] = summary

    def _stop_reason(self, session: pytest.Session) -> str:
        if self.signal_name:
            return self.signal_name
        dsession = self.config.pluginmanager.getplugin("dsession")
        for reason in (getattr(dsession, "shouldstop", None), session.shouldstop, session.shouldfail):
            if isinstance(reason, str) and reason:
                return reason
        return "KeyboardInterrupt" if session.exitstatus == pytest.ExitCode.INTERRUPTED else "stopped early"

    def end(self, status: str) -> None:
        """Called by the report plugin once the reports are written."""
        if self.journal:
            self.journal.end(status, ended=now())


def _orphan_record(graded: Any, report: pytest.TestReport) -> r.CaseRecord:
    """A crash record for a graded test whose process died before it could report (xdist's "worker crashed")."""
    text = str(report.longrepr).strip()
    last_line = text.splitlines()[-1][-500:] if text else "no details"
    message = f"the pytest process running this case died or failed outside the sandbox: {last_line}"
    sub = graded.submission
    return r.CaseRecord.for_case(
        sub.model,
        sub.challenge,
        graded.case,
        graded.case_index,
        r.CRASH,
        task=sub.challenge_task,
        message=message,
        nodeid=report.nodeid,
    )


def run_header(config: pytest.Config) -> dict[str, Any]:
    """The run's provenance, written first to ``cases.jsonl`` and kept in ``results.json``."""
    cfg = grader_config(config)
    return {
        "schema_version": SCHEMA_VERSION,
        "created": now(),
        "machine": machine_info(cfg.device),
        "commit": git_commit(cfg.repo),
        "options": cfg.to_dict()
        | {
            "workers": str(getattr(config.option, "numprocesses", None) or 0),
            "args": [str(a) for a in config.invocation_params.args],
        },
        "challenges": [
            {"id": c.id, "title": c.title, "graded": bool(c.entry_points), "cases_by_category": cases_by_category(c.id)}
            for c in all_challenges()
        ],
        "submissions": [
            {
                "model": s.model,
                "challenge": s.challenge,
                "folder": str(s.folder),
                "runtime": s.interface,  # "adapter" or "native"
                "language": s.runtime,  # the runtime it is graded in (plugins/isolate/runtimes/)
                "loaded": s.describe(),
                "adapter_lines": s.adapter_lines,  # code lines of adapter.py / adapter.cu; None when native
                # the task profile that grades it (reference/tasks): its name, where it came from, the contract variant
                "task": s.challenge_task.profile,
                "task_source": s.challenge_task.source,
                "contract": s.challenge_task.contract,
                "problems": [list(p) for p in s.problems],  # files not read (a syntax error): said once in the report
            }
            for s in selected_submissions(config)
        ],
        "warnings": [],
    } | shard.header_fields(config, cfg.rubric)  # under --shard: which share, of which roster, on which host


def _load_rubric(config: pytest.Config) -> rubric_module.Rubric:
    path = grader_config(config).rubric
    try:
        return rubric_module.load_rubric(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        message = f"--rubric={path}: not a readable rubric ({exc.__class__.__name__}: {exc})"
        raise pytest.UsageError(message) from None


def now() -> str:
    """The time in UTC, to the second, as every record of a run writes it."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def machine_info(device: str) -> dict[str, Any]:
    import numpy

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": host_cores(),
        "numpy": numpy.__version__,
        "device": device,
        "gpu": None,
    }
    try:  # from the installed metadata: importing torch takes seconds on a CUDA build, before any worker starts
        info["torch"] = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        info["torch"] = None
    gpus = run_quietly(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"])
    if gpus:
        info["gpu"] = gpus.splitlines()
    return info


def git_commit(repo: Any) -> dict[str, Any]:
    sha = run_quietly(["git", "-C", str(repo), "rev-parse", "HEAD"])
    dirty = run_quietly(["git", "-C", str(repo), "status", "--porcelain"])
    return {"sha": sha or None, "dirty": bool(dirty)}

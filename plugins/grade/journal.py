"""``cases.jsonl``: the run written as it goes, one JSON line at a time, so a run killed by any means leaves its cases.

The controller (or the only process) appends and flushes a line per event: first the run's header (provenance:
machine, commit, options, submissions), then ``selected`` once collection is known, then one ``case`` line per
finished case (a later line for the same case replaces an earlier one) and ``skipped`` for cases skipped by choice, and
``end`` when the reports were written. A merge of shards writes the same events in one go (:func:`write_run`).
A line cut short by a kill is ignored when the file is read back.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from plugins.base.records import CaseRecord
from plugins.grade.summary import Key, Selection

FILE_NAME = "cases.jsonl"


def json_safe(value: Any) -> Any:
    """JSON has no NaN or infinity: write them as the strings "nan", "inf" and "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


class Journal:
    """Appends events to ``cases.jsonl``; every line is flushed before the call returns (a SIGKILL keeps it).

    One method per kind of event, so the shapes that :func:`replay` reads back are written here and nowhere else."""

    def __init__(self, path: Path):
        self.path = path
        self._file: TextIO | None = path.open("w", encoding="utf-8")

    def _write(self, kind: str, **data: Any) -> None:
        if self._file is None:
            return
        self._file.write(json.dumps(json_safe({"kind": kind, **data}), allow_nan=False) + "\n")
        self._file.flush()

    def header(self, header: dict[str, Any]) -> None:
        self._write("header", header=header)

    def selected(self, cases: list[Key]) -> None:
        self._write("selected", cases=cases)

    def skipped(self, key: Key) -> None:
        model, challenge, index = key
        self._write("skipped", model=model, challenge=challenge, case_index=index)

    def case(self, record: CaseRecord) -> None:
        self._write("case", record=record.to_dict())

    def end(self, status: str, ended: str) -> None:
        """The last line, then the file is closed; ``ended`` (an ISO time) is the wall time a merge reports."""
        self._write("end", status=status, ended=ended)
        self.close()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def write_run(
    path: Path, header: dict[str, Any], selection: Selection, records: dict[Key, CaseRecord], status: str, ended: str
) -> None:
    """A whole run's journal in one go (a merge's): the events a live run streams, in the order it streams them, so
    :func:`replay`, recovery and a later merge read it like any other."""
    journal = Journal(path)
    journal.header(header)
    if selection.known:
        journal.selected(sorted(selection.selected))
    for key in sorted(selection.skipped):
        journal.skipped(key)
    for key in sorted(records):
        journal.case(records[key])
    journal.end(status, ended)


@dataclass
class Replay:
    """What a ``cases.jsonl`` holds: the header, the selection, every case's last record, and the end line if any."""

    header: dict[str, Any] | None = None
    selection: Selection = field(default_factory=Selection)
    records: dict[tuple[str, str, int], CaseRecord] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    damaged_lines: int = 0


def replay(path: Path) -> Replay:
    """Read a journal back; lines that are not whole JSON objects (a write cut short by a kill) are counted, not
    fatal."""
    out = Replay()
    with path.open(encoding="utf-8", errors="replace") as handle:
        for line in handle:
            try:
                event = json.loads(line)
                _apply(out, event)
            except (ValueError, KeyError, TypeError):
                out.damaged_lines += 1
    return out


def _apply(out: Replay, event: dict[str, Any]) -> None:
    kind = event["kind"]
    if kind == "header":
        out.header = event["header"]
    elif kind == "selected":
        out.selection.selected |= {(m, c, int(i)) for m, c, i in event["cases"]}
        out.selection.known = True
    elif kind == "skipped":
        out.selection.skipped.add((event["model"], event["challenge"], int(event["case_index"])))
    elif kind == "case":
        record = CaseRecord.from_dict(_numbers_back(event["record"]))
        out.records[record.model, record.challenge, record.case_index] = record
    elif kind == "end":
        out.end = event


_NON_FINITE = {"nan", "inf", "-inf"}
_CHECK_FLOATS = ("max_abs_err", "max_rel_err", "bound_ratio", "atol", "rtol")


def _numbers_back(data: dict[str, Any]) -> dict[str, Any]:
    """Undo :func:`json_safe` where the record holds numbers (a message that reads "nan" stays a string)."""

    def number(value: Any) -> Any:
        return float(value) if isinstance(value, str) and value in _NON_FINITE else value

    for check in data.get("checks") or []:
        for key in _CHECK_FLOATS:
            check[key] = number(check.get(key))
    if isinstance(data.get("speed"), dict):
        data["speed"] = {k: number(v) for k, v in data["speed"].items()}
    data["seconds"] = number(data.get("seconds"))
    return data

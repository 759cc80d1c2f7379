"""Join the shards of a sharded run (``--shard=I/N``) into the reports one run would have written.

    python -m plugins.report.merge OUT_DIR SHARD_DIR...

Each ``SHARD_DIR`` is the reports folder of one shard; its ``cases.jsonl`` is the source of truth (the header, what was
selected, every case record, and whether the shard finished). The shards must belong together, or nothing is written:

- refused: shards of different N, a shard missing or given twice, another commit of the grader, another seed, another
  roster (the discovered submissions), another rubric file (by content) or other options that change grades
  (``--no-speed``, speed repeats, ``--model``, ``--train-data``), and cases filed under a pair another shard owns;
- warned: other limits (call timeout, memory caps), a grader checkout with local changes, shards on different machines.

``OUT_DIR`` then gets ``grades.md``, ``results.json``, the pictures, a self-contained ``report.html``, ``badges/`` and a
merged ``cases.jsonl``, built with the same code as a run's (:func:`plugins.grade.summary.summarise` with the default
scoring, through :mod:`plugins.report.recover`'s offline pieces). A ``pytest_grader_*`` plugin of the shards' runs is
not loaded here, which the reports say; neither are the sections that need the live run (the sandbox's copy notes,
``--baseline``, ``--judge-grades``). ``results.json["shards"]`` and the section "Shards" of ``grades.md`` say which
host ran each shard, on what machine, how long it took and how it ended: timing across shards is comparable only on
identical machines. A shard that did not finish (killed, interrupted) makes the merged reports incomplete, naming it.
Earlier reports in ``OUT_DIR`` move to ``history/NNNN/``, as a run's do.

Exit status: 0 merged, 1 refused (the shards do not belong together, or ``OUT_DIR`` is in use), 2 usage error.
"""

from __future__ import annotations

import datetime
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from plugins.base import inert
from plugins.base.host import run_quietly
from plugins.base.records import CaseRecord
from plugins.grade import summary as summary_module
from plugins.grade.journal import FILE_NAME, Replay, replay, write_run
from plugins.report import lifecycle, recover
from plugins.report.markdown import table

REPO = Path(__file__).resolve().parents[2]
USAGE = "usage: python -m plugins.report.merge OUT_DIR SHARD_DIR..."
MERGE_NOTE = (
    "merged offline from the shards' cases.jsonl: scored with the rubric file and the default scoring hooks; "
    "timing across shards is comparable only on identical machines"
)
# Options that change grades: shards that differ in one are not one run. (The rubric is compared by content.)
# speed_warmup is not among them: the grader fixes it, and shards of one commit cannot differ in it.
MUST_MATCH = (
    "seed",
    "measure_speed",
    "speed_repeats",
    "speed_max_trials",
    "time_failed",
    "models",
    "train_data",
    "task",
)
# Options that can change an outcome at the margin (a timeout, an oom): said, not refused.
SHOULD_MATCH = ("call_timeout_s", "memory_limit_mb", "gpu_memory_fraction", "device")
FINISHED = (summary_module.COMPLETE, summary_module.EMPTY)
HEADER_KEYS = ("created", "machine", "commit", "options", "challenges", "submissions")
Pair = tuple[str, str]


class Refused(Exception):
    """The shards do not make one run; the message says why."""


@dataclass
class Shard:
    """One shard's reports folder, read back."""

    folder: Path
    journal: Replay
    header: dict[str, Any]
    info: dict[str, Any]  # the header's "shard"; a run without --shard counts as shard 1 of 1

    @property
    def name(self) -> str:
        return f"{self.info['index']}/{self.info['count']}"

    @property
    def pairs(self) -> set[Pair]:
        return {(m, c) for m, c in self.info["pairs"]}

    @property
    def roster(self) -> list[Pair]:
        return sorted((m, c) for m, c in self.info["roster"])

    @property
    def status(self) -> str | None:
        """How the shard's run ended (its journal's end line); None when it never wrote one (killed, still running)."""
        return self.journal.end.get("status") if self.journal.end else None


def load(folder: Path) -> Shard:
    journal = replay(folder / FILE_NAME)
    header = journal.header
    if not isinstance(header, dict) or any(key not in header for key in HEADER_KEYS):
        raise Refused(f"{folder / FILE_NAME}: no whole run header (damaged, or not a grading run's journal)")
    roster = sorted([s["model"], s["challenge"]] for s in header.get("submissions", []))
    whole = {"index": 1, "count": 1, "host": None, "roster": roster, "pairs": roster}
    return Shard(folder, journal, header, header.get("shard") or whole)


def check(shards: list[Shard]) -> list[str]:
    """Raise :class:`Refused` for shards that do not make one run; return the warnings of shards that do."""
    problems = _numbering(shards)
    problems += _differences(shards, "grader commit", lambda s: s.header["commit"].get("sha"))
    for key in MUST_MATCH:
        problems += _differences(shards, f"option {key}", lambda s, k=key: s.header["options"].get(k))
    problems += _differences(shards, "rubric", lambda s: s.info.get("rubric_sha256") or s.header["options"]["rubric"])
    problems += _differences(shards, "roster (the discovered submissions)", lambda s: s.roster)
    problems += _ownership(shards)
    if problems:
        raise Refused("; ".join(problems))
    dirty = [s.name for s in shards if s.header["commit"]["dirty"]]
    warnings = [f"the grader's checkout had local changes in shard {', '.join(dirty)}"] if dirty else []
    for key in SHOULD_MATCH:
        values = sorted({json.dumps(s.header["options"].get(key)) for s in shards})
        if len(values) > 1:
            warnings.append(f"option {key} differs between shards ({', '.join(values)}): outcomes may differ")
    if len({json.dumps(s.header["machine"], sort_keys=True) for s in shards}) > 1:
        warnings.append("the shards ran on different machines (see Shards): their timings are not comparable")
    here, ran = run_quietly(["git", "-C", str(REPO), "rev-parse", "HEAD"]), shards[0].header["commit"].get("sha")
    if here and ran and here != ran:  # the scoring code is this checkout's
        warnings.append(f"merged by grader commit {here[:12]}, graded by commit {ran[:12]}: scoring code may differ")
    damaged = [s for s in shards if s.journal.damaged_lines]
    return warnings + [
        f"shard {s.name}: {s.journal.damaged_lines} damaged line(s) of cases.jsonl skipped" for s in damaged
    ]


def _numbering(shards: list[Shard]) -> list[str]:
    """Every shard of one N, each of 1..N exactly once."""
    counts = sorted({s.info["count"] for s in shards})
    if len(counts) > 1:
        return ["shards of different counts N: " + ", ".join(f"{s.name} ({s.folder})" for s in shards)]
    problems, seen = [], {}
    for s in shards:
        if s.info["index"] in seen:
            problems.append(f"shard {s.name} given twice ({seen[s.info['index']]} and {s.folder})")
        seen[s.info["index"]] = s.folder
    missing = [f"{i}/{counts[0]}" for i in range(1, counts[0] + 1) if i not in seen]
    if missing:
        problems.append(f"shard {', '.join(missing)} missing: every shard of the run must be given")
    return problems


def _differences(shards: list[Shard], what: str, value: Callable[[Shard], Any]) -> list[str]:
    found: dict[str, list[str]] = {}
    for s in shards:
        found.setdefault(json.dumps(value(s), sort_keys=True), []).append(s.name)
    if len(found) <= 1:
        return []
    return [f"{what} differs: " + "; ".join(f"{v} in shard {', '.join(names)}" for v, names in found.items())]


def _ownership(shards: list[Shard]) -> list[str]:
    """The shards' pairs partition the roster, and each shard's cases are of its own pairs."""
    problems, owner = [], {}
    for s in shards:
        for pair in sorted(s.pairs):
            if pair in owner:
                problems.append(f"{pair[0]}/{pair[1]} graded by shard {owner[pair]} and shard {s.name}")
            owner[pair] = s.name
        strays = sorted({(m, c) for m, c, _ in s.journal.records} - s.pairs)
        problems += [f"shard {s.name} holds cases of {m}/{c}, which is not its pair" for m, c in strays[:3]]
    lost = sorted(set(shards[0].roster) - set(owner))
    if lost:
        problems.append(f"{len(lost)} pair(s) of the roster in no shard, e.g. {lost[0][0]}/{lost[0][1]}")
    return problems


def merge(out: Path, folders: list[Path]) -> dict[str, Any]:
    """Check, join and write; returns the merged summary. Raises :class:`Refused`."""
    shards = sorted((load(f) for f in folders), key=lambda s: s.info["index"])
    warnings = check(shards)
    selection = summary_module.Selection(known=all(s.journal.selection.known for s in shards))
    records: dict[tuple[str, str, int], CaseRecord] = {}
    for s in shards:
        selection.selected |= s.journal.selection.selected
        selection.skipped |= s.journal.selection.skipped
        records |= s.journal.records
    header = merged_header(shards, warnings)
    status, detail = merged_status(shards, selection, list(records.values()), header["options"]["measure_speed"])
    summary = recover.offline_summary(header, list(records.values()), selection, status, detail, MERGE_NOTE)
    if sandbox := _sandbox(shards):
        summary["sandbox"] = sandbox
    try:
        lifecycle.retire(out)
    except lifecycle.FolderBusy as exc:
        raise Refused(str(exc)) from None
    header["run"] = summary["run"] = lifecycle.next_run_number(out)  # a run of OUT_DIR's history, not a shard's number
    title = f"kernelgrade report (merged from {len(shards)} shards)"
    for problem in recover.write_offline(out, summary, title, badges=True, extra=[shards_section(header)]):
        print(f"warning: {problem}", file=sys.stderr)
    write_run(out / FILE_NAME, header, selection, records, status, ended=lifecycle.now())
    return summary


def merged_header(shards: list[Shard], warnings: list[str]) -> dict[str, Any]:
    """The first shard's header, for the whole roster: its submissions, the earliest start, and the shards table."""
    first = shards[0].header
    order = {pair: i for i, pair in enumerate(shards[0].roster)}
    submissions = sorted(
        (sub for s in shards for sub in s.header["submissions"]),
        key=lambda d: order.get((d["model"], d["challenge"]), -1),
    )
    own = [w for s in shards for w in s.header.get("warnings", []) if "got no submissions" not in w]
    return first | {
        "created": min(s.header["created"] for s in shards),
        "commit": first["commit"] | {"dirty": any(s.header["commit"]["dirty"] for s in shards)},
        "options": first["options"] | {"shard": None, "args": [], "workers": "per shard"},
        "submissions": submissions,
        "warnings": [*dict.fromkeys(own), *warnings],
        "shard": None,
        "merged": {"at": lifecycle.now(), "from": [str(s.folder) for s in shards]},
        "shards": [shard_row(s) for s in shards],
    }


def shard_row(shard: Shard) -> dict[str, Any]:
    """Who ran a shard and how it went: the row of ``results.json["shards"]``."""
    machine = shard.header["machine"]
    ended = shard.journal.end.get("ended") if shard.journal.end else None
    return {
        "shard": shard.name,
        "host": shard.info.get("host"),
        "machine": {k: machine.get(k) for k in ("platform", "cpus", "device", "gpu")},
        "created": shard.header["created"],
        "ended": ended,
        "wall_s": _seconds_between(shard.header["created"], ended),
        "pairs": len(shard.pairs),
        "cases": len(shard.journal.records),
        "status": shard.status or "did not finish",
        "folder": str(shard.folder),
    }


def _seconds_between(start: str, end: str | None) -> float | None:
    try:
        return (datetime.datetime.fromisoformat(end) - datetime.datetime.fromisoformat(start)).total_seconds()
    except (TypeError, ValueError):
        return None


def merged_status(
    shards: list[Shard], selection: summary_module.Selection, records: list[CaseRecord], measure_speed: bool
) -> tuple[str, str]:
    """Complete when every shard finished and every selected case ran; otherwise incomplete, naming the shards."""
    unfinished = [s for s in shards if s.status not in FINISHED]
    status, detail = summary_module.run_status(selection, records, False, "a shard did not finish", measure_speed)
    if not unfinished:
        return status, detail
    counts = summary_module.selection_counts(records, summary_module.effective(selection, measure_speed))
    said = [
        f"shard {s.name} ({s.info.get('host') or 'unknown host'}) {s.status or 'did not finish'}" for s in unfinished
    ]
    ran = summary_module.cases_ran(counts)
    return summary_module.INCOMPLETE, f"{ran}; {', '.join(said)}; grades cover only those and are marked incomplete"


def shards_section(header: dict[str, Any]) -> tuple[str, str]:
    """grades.md's "Shards": which host and machine ran each shard, its pairs and cases, wall time and ending."""
    rows = []
    for row in header["shards"]:
        machine = row["machine"]
        gpu = ", ".join(machine["gpu"]) if machine.get("gpu") else "no GPU"
        wall = "unknown" if row["wall_s"] is None else f"{row['wall_s']:.0f} s"
        described = f"{machine['platform']}, {machine['cpus']} CPUs, {gpu}"
        rows.append(
            [row["shard"], row["host"] or "unknown", described, row["pairs"], row["cases"], wall, row["status"]]
        )
    kinds = len({json.dumps(r["machine"], sort_keys=True) for r in header["shards"]})
    intro = (
        f"Merged from {len(rows)} shards with `python -m plugins.report.merge`. Timing across shards is comparable "
        "only on identical machines: " + ("all ran on one kind of machine." if kinds == 1 else f"they ran on {kinds}.")
    )
    headers = ["shard", "host", "machine", "pairs", "cases", "wall time", "status"]
    return "Shards", intro + "\n\n" + table(headers, [[str(c) for c in r] for r in rows])


def _sandbox(shards: list[Shard]) -> dict[str, Any] | None:
    """The shards' containment facts (from their results.json, when written), joined: copy notes and warnings of all."""
    facts = [f for s in shards if isinstance(f := (lifecycle.read_state(s.folder) or {}).get("sandbox"), dict)]
    if not facts:
        return None
    joined = facts[0] | {"warnings": [*dict.fromkeys(w for f in facts for w in f.get("warnings", []))]}
    joined["copy_notes"] = {k: v for f in facts for k, v in (f.get("copy_notes") or {}).items()}
    levels = sorted({str(f.get("level")) for f in facts})
    if len(levels) > 1:
        joined["warnings"].append(f"containment differs between shards: {', '.join(levels)}")
    return joined


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(USAGE, file=sys.stderr)
        return 2
    out, folders = Path(argv[0]), [Path(a) for a in argv[1:]]
    bad = [f"{f}: no {FILE_NAME} (not a shard's reports folder)" for f in folders if not (f / FILE_NAME).is_file()]
    if out.resolve() in {f.resolve() for f in folders}:
        bad.append(f"{out}: OUT_DIR must not be one of the shards' folders")
    if bad:
        print(inert.terminal("\n".join([USAGE, *bad])), file=sys.stderr)
        return 2
    try:
        summary = merge(out, folders)
    except Refused as exc:
        print(inert.terminal(f"merge refused: {exc}"), file=sys.stderr)  # it may name a submission
        return 1
    print(f"merged {len(folders)} shards ({len(summary['cases'])} cases, status {summary['status']}) into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``kernelgrade check PATH``: how each challenge folder under PATH meets its contract, before any grading.

PATH is a submissions root or a repo clone holding ``submissions/`` (every model), one model's folder, or one challenge
folder. Folders are found and their entry points resolved by the grader's own discovery (``plugins/discover``), so
the answer is the one a grading run would give. Per folder it reports each entry point (found natively and where,
through ``adapter.py``, or missing), near-miss names with their signatures (read from the source), for CUDA the
``extern "C"`` functions against the contract's declaration, what importing the files did inside the grader's sandbox
(``probe.py``), what one tiny call of each entry point did in that child under a short limit (``tinycall.py``: a
function that hangs shows here, not as a whole challenge of timeouts), and an adapter skeleton for what is missing
(``skeleton.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from plugins.cli import nearmiss, probe, signatures, skeleton, tinycall
from plugins.config import DEFAULT_CALL_TIMEOUT_S
from plugins.discover.entry_points import defined_names
from plugins.discover.submissions import SAMPLE_FOLDER, Submission, discover, submissions_root
from plugins.isolate import runtimes
from reference import tasks
from reference.challenges import all_challenges, challenge_for_folder, reference_module


class CheckError(Exception):
    """PATH holds nothing to check (a usage error, exit status 2)."""


@dataclass
class Entry:
    name: str
    status: str  # native, adapter or missing
    file: str = ""
    also: tuple[str, ...] = ()


@dataclass
class FolderCheck:
    """Everything ``check`` found out about one (model, challenge) folder."""

    model: str
    challenge: str
    folder: Path
    runtime: str
    entries: list[Entry]
    near: dict[str, list[nearmiss.NearMiss]] = field(default_factory=dict)
    c_functions: list[nearmiss.Definition] = field(default_factory=list)  # extern "C" definitions (CUDA)
    c_contract: dict[str, str] = field(default_factory=dict)  # entry point -> the contract's C declaration
    warnings: list[str] = field(default_factory=list)
    problems: tuple[tuple[str, str], ...] = ()
    no_code: str = ""
    imported: probe.ImportReport | None = None
    import_note: str = ""
    skeleton: str = ""
    skeleton_file: str = ""
    skeleton_adds: bool = False  # the skeleton is lines to add to the folder's adapter, not a whole file to save
    # Why no skeleton is offered though entry points are missing: a file that does not parse hides what it defines,
    # and an adapter written around it would be wrong once the syntax error is fixed.
    skeleton_note: str = ""
    task: str = ""  # the task profile discovery found for the model (reference/tasks), as the report names it
    adapter_lines: int | None = None  # code lines of the adapter in use (the report's interface column counts them)

    @property
    def ok(self) -> bool:
        """Every entry point found, and (when they were tried) the import went through and every tiny call answered."""
        found = all(e.status != "missing" for e in self.entries) and not self.no_code
        return found and (self.imported is None or (self.imported.status == "ok" and not self.imported.hung_or_failed))

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "challenge": self.challenge,
            "folder": str(self.folder),
            "runtime": self.runtime,
            "ok": self.ok,
            "no_code": self.no_code,
            "entries": [vars(e) | {"also": list(e.also)} for e in self.entries],
            "near_misses": {
                name: [vars(m.definition) | {"score": m.score} for m in misses] for name, misses in self.near.items()
            },
            "extern_c": [vars(d) for d in self.c_functions],
            "c_contract": self.c_contract,
            "warnings": self.warnings,
            "problems": [list(p) for p in self.problems],
            "import": self.imported.to_json() if self.imported else None,
            "import_note": self.import_note,
            "adapter_lines": self.adapter_lines,
            "skeleton": {"file": self.skeleton_file, "text": self.skeleton} if self.skeleton else None,
            "skeleton_note": self.skeleton_note,
            "task": self.task,
        }


def find(path: Path) -> list[Submission]:
    """The graded units under ``path`` as discovery sees them (see the module docstring for what PATH may be; a
    challenge folder holding ``sample-<N>/`` folders gives one unit per sample, and a sample folder itself works).
    A model's or the repo's ``kernelgrade-task.toml`` that cannot be used is a :class:`CheckError`."""
    try:
        return _find(path)
    except tasks.TaskError as exc:
        raise CheckError(str(exc)) from None


def _find(path: Path) -> list[Submission]:
    path = path.expanduser()
    if not path.is_dir():
        raise CheckError(f"{path} is not a folder")
    path = path.resolve()
    holds_challenges = any(c.is_dir() and challenge_for_folder(c.name) for c in _children(path))
    in_sample = SAMPLE_FOLDER.fullmatch(path.name) and challenge_for_folder(path.parent.name)
    if (challenge_for_folder(path.name) or in_sample) and not holds_challenges:  # one challenge (or sample) folder
        challenge_folder = path.parent if in_sample else path
        units = discover(challenge_folder.parent.parent)
        found = [s for s in units if s.folder == path or (not in_sample and s.folder.parent == path)]
        if not found:
            challenge = challenge_for_folder(challenge_folder.name)
            model = challenge_folder.parent.name
            other = next((s for s in units if s.base_model == model and s.challenge == challenge.id), None)
            why = f": {other.folder.name}/ is graded for {other.challenge} instead" if other else ""
            raise CheckError(f"{path} is not a folder the grader would grade{why}")
        return found
    if holds_challenges:  # one model's folder
        return [s for s in discover(path.parent) if s.base_model == path.name]
    found = discover(submissions_root(path))
    if not found:
        ids = ", ".join(c.id for c in all_challenges())
        raise CheckError(
            f"no challenge folders under {path}: expected <root>/<model>/<challenge>/ (or a model's folder, or one "
            f"challenge folder), challenge folders named by id ({ids}) or a scaffold alias"
        )
    return found


def _children(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def check_folder(
    sub: Submission,
    run_import: bool = True,
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    call_limit_s: float = tinycall.TINY_CALL_LIMIT_S,
) -> FolderCheck:
    challenge = reference_module(sub.challenge).CHALLENGE
    found = dict(sub.entries)
    others = dict(sub.alternatives)
    entries = [
        Entry(e, sub.interface, found[e], tuple(others.get(e, ()))) if e in found else Entry(e, "missing")
        for e in challenge.entry_points_of(sub.challenge_task.contract)  # the variant the model's task profile names
    ]
    result = FolderCheck(
        sub.model, sub.challenge, sub.folder, sub.runtime, entries, problems=sub.problems, no_code=sub.no_code
    )
    result.adapter_lines = sub.adapter_lines
    task = sub.challenge_task
    result.task = task.profile if task.source == tasks.BUILT_IN_SOURCE else f"{task.profile} ({task.source})"
    if task.contract:
        result.task += f", contract {task.contract}"
    if sub.no_code:
        result.import_note = "not imported: no code"
        return result
    rt = runtimes.runtime(sub.runtime)
    if rt.entries_by == "extern-c":
        _check_cuda(result, challenge)
    else:
        limits = (timeout_s, call_limit_s)
        _check_python(
            result, challenge, run_import and not rt.needs_gpu, limits, sub.via_adapter, sub.challenge_task.contract
        )
        if run_import and rt.needs_gpu:  # its tiny calls need the GPU and torch tensors: the grading run makes them
            result.import_note = f"not imported: a {rt.what} submission runs on the GPU in the grading run"
    return result


def _other_spellings(challenge: Any, entry: str) -> set[str]:
    """The names of the contract's other entry points (and their aliases): never a near miss of this one."""
    return {n for e in challenge.entry_points if e != entry for n in (e, *challenge.aliases.get(e, ()))}


def _check_python(
    result: FolderCheck,
    challenge: Any,
    run_import: bool,
    limits: tuple[float, float],
    via_adapter: bool,
    contract: str,
) -> None:
    """Near misses and a skeleton for missing entry points; the import (``limits[0]``) and, when every entry point is
    there, one tiny call of each (``limits[1]`` each)."""
    definitions = nearmiss.python_definitions(result.folder)
    missing = [e.name for e in result.entries if e.status == "missing"]
    for entry in missing:
        result.near[entry] = nearmiss.near_misses(entry, definitions, _other_spellings(challenge, entry))
    if missing and (broken := [f for f, why in result.problems if "syntax error" in why]):
        result.skeleton_note = f"no adapter skeleton: fix the syntax error in {', '.join(broken)} first"
    elif missing:
        found = []
        for e in result.entries:
            if e.status != "missing":
                names = defined_names(result.folder / e.file)
                found.append((e.name, e.file, skeleton.spelling(names, e.name, challenge.aliases.get(e.name, ()))))
        wanted = [(signatures.python_signature(challenge.id, e), (result.near[e] or [None])[0]) for e in missing]
        # Discovery took every entry point from the folder's adapter.py when it has one: add to it, never replace it.
        result.skeleton = skeleton.python_adapter(challenge.id, found, wanted, existing=via_adapter)
        result.skeleton_file = "adapter.py"
        result.skeleton_adds = via_adapter
    if not run_import:
        result.import_note = "not imported (--no-import)"
        return
    to_import = {e.name: e.file for e in result.entries if e.status != "missing"}
    for misses in result.near.values():  # the files an adapter would import: their import is checked too
        if misses:
            d = misses[0].definition
            to_import.setdefault(d.name.split(".")[0], d.file)
    if not to_import:
        result.import_note = "not imported: no file defines an entry point or a near miss"
        return
    reference = reference_module(challenge.id)
    found = [e.name for e in result.entries if e.status != "missing"]
    # a case calls the entry points it names, or all of them: with one missing, its calls would only fail on that
    then = None if missing else (lambda sandbox: tinycall.call_each(sandbox, reference, found, contract))
    timeout_s, call_limit_s = limits
    result.imported = probe.probe_import(reference.__name__, to_import, result.folder, timeout_s, then, call_limit_s)


def _check_cuda(result: FolderCheck, challenge: Any) -> None:
    definitions = nearmiss.c_definitions(result.folder)
    result.c_functions = [d for d in definitions if d.kind == "extern-c"]
    result.import_note = "not imported: a CUDA source is compiled by the grading run (nvcc), not imported"
    for entry in result.entries:
        sig = signatures.c_signature(challenge.id, entry.name)
        if sig is None:
            continue
        result.c_contract[entry.name] = sig.line
        want = signatures.c_param_types(sig.params)
        for d in result.c_functions:
            if d.name == entry.name and (entry.file in ("", d.file) or entry.status == "adapter"):
                got = signatures.c_param_types(signatures.param_list(d.signature))
                if got != want:
                    result.warnings.append(
                        f"{d.file} line {d.line}: {entry.name} takes ({', '.join(got)}), the contract "
                        f"({', '.join(want)}): the grader passes the contract's arguments"
                    )
        if entry.status == "missing":
            candidates = [d for d in definitions if d.kind != "extern-c" or d.name != entry.name]
            others = _other_spellings(challenge, entry.name)
            result.near[entry.name] = nearmiss.near_misses(entry.name, candidates, others)
            sources = [d.file for d in definitions] or [p.as_posix() for p in sorted(result.folder.glob("*.cu"))]
            best = (result.near[entry.name] or [None])[0]
            result.skeleton = skeleton.cuda_adapter(challenge.id, sig, best, sources)
            result.skeleton_file = "adapter.cu"

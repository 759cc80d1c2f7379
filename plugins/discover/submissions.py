"""Find submissions laid out as ``<root>/<model>/<challenge folder>/``; a model-comparison repo's clone works too.

Several samples per model: a challenge folder may hold sample folders ``sample-1/``, ``sample-2/``, … (``sample-<N>``,
N a positive integer written without leading zeros; a link is never a sample folder). Each sample is then its own
graded unit and anything beside the sample folders (a ``PROMPT.md``, code, ``samples-old/``) is ignored. With two or
more samples a unit is named ``<model>/sample-<N>``: ``/`` is the one character no folder name holds, so a unit's name
never equals a real model's, stays an id pytest keeps as it is, and ``-k``, ``--model`` and
``-m "submission(model='m/sample-2')"`` take it. A model with a single sample folder is just that model. The name is
split back into model and sample in one place, :func:`split_sample`; ``--model m`` selects every sample of ``m``.
"""

from __future__ import annotations

import ast
import io
import os
import re
import tokenize
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from plugins.discover import names as folder_names
from plugins.discover.entry_points import (
    C_COMMENT,
    SKIP_DIRS,
    Unreadable,
    read_source,
    resolve,
    resolve_cuda,
)
from plugins.discover.tasks import ProfileFinder, repo_roots
from plugins.isolate import runtimes
from plugins.isolate.runtimes import Runtime
from reference import tasks
from reference.challenges import all_challenges, challenge_for_folder
from reference.contract import Challenge

SAMPLE_FOLDER = re.compile(r"sample-([1-9][0-9]*)")
SAMPLE_SEPARATOR = "/"  # between a model and its sample in a unit's name: never part of a folder name


def sample_unit(model: str, sample: str) -> str:
    """The graded unit's name of one sample of several: ``demo-samples/sample-2``."""
    return f"{model}{SAMPLE_SEPARATOR}{sample}"


def split_sample(name: str) -> tuple[str, str]:
    """``(model, sample)`` of a unit's name: ``("demo-samples", "sample-2")``, or ``(name, "")`` for a plain model."""
    model, sep, sample = name.partition(SAMPLE_SEPARATOR)
    return (model, sample) if sep and SAMPLE_FOLDER.fullmatch(sample) else (name, "")


def sample_number(sample: str) -> int:
    """2 for ``sample-2``; 0 for no sample (so a plain model sorts before its samples)."""
    match = SAMPLE_FOLDER.fullmatch(sample)
    return int(match.group(1)) if match else 0


def sample_folders(folder: Path) -> list[Path]:
    """The sample folders of a challenge folder, by number (``sample-2`` before ``sample-10``); links left out."""
    try:
        found = [d for d in folder.iterdir() if SAMPLE_FOLDER.fullmatch(d.name) and d.is_dir() and not d.is_symlink()]
    except OSError:  # an unreadable challenge folder is graded (and fails) as one unit, as before
        return []
    return sorted(found, key=lambda d: sample_number(d.name))


def select(found: Iterable[Submission], names: Iterable[str]) -> tuple[list[Submission], list[str]]:
    """(the submissions ``--model`` names select, the names that select none). A name is a unit's exact name or a
    model folder's, which selects every sample of that model."""
    wanted = set(names)
    chosen = [s for s in found if s.model in wanted or s.base_model in wanted]
    known = {n for s in chosen for n in (s.model, s.base_model)}
    return chosen, sorted(wanted - known)


def known_names(found: Iterable[Submission]) -> list[str]:
    """Every name ``--model`` accepts: model folders and the units of their samples, sorted."""
    return sorted({n for s in found for n in (s.model, s.base_model)})


@dataclass(frozen=True)
class Submission:
    """One model's attempt at one challenge, and where its entry points were found."""

    model: str
    challenge: str  # our challenge id, whatever the folder was called
    folder: Path
    entries: tuple[tuple[str, str], ...]  # (entry point, file relative to folder)
    alternatives: tuple[tuple[str, tuple[str, ...]], ...]  # files passed over, per entry point
    via_adapter: bool
    missing: tuple[str, ...]  # entry points no file defines
    problems: tuple[tuple[str, str], ...] = ()  # (file, why it was not read): syntax error, parse limit, a FIFO
    # Why nothing can run, when the folder holds no source file of the challenge's language (no .py; no .cu for CUDA):
    # "no code submitted: the folder holds PROMPT.md only (no .py file)". Empty when there is code.
    no_code: str = ""
    # Code lines of the adapter (adapter.py, or adapter.cu for CUDA) when one is used, for the report's "interface"
    # column: non-blank lines that are neither comments nor docstrings. None for a native submission.
    adapter_lines: int | None = None
    # What the model's task profile (plugins/discover/tasks.py) says about this challenge: the rules its prompt states
    # and the contract variant the entry points were resolved for. None: the default profile's.
    task: tasks.ChallengeTask | None = None
    # The runtime the folder is graded in (plugins/isolate/runtimes/): one of the challenge's, by the files it holds.
    runtime: str = "python"

    @property
    def challenge_task(self) -> tasks.ChallengeTask:
        """The task profile's view of this challenge (the default profile's when discovery set none)."""
        return self.task or tasks.built_in().of(self.challenge)

    @property
    def syntax_errors(self) -> tuple[tuple[str, str], ...]:
        """The (file, why) problems that are syntax errors: said once per challenge in the report, never per case."""
        return tuple(p for p in self.problems if "syntax error" in p[1])

    @property
    def base_model(self) -> str:
        """The model folder's name: ``model`` itself, or the part before the sample of a sample unit's name."""
        return split_sample(self.model)[0]

    @property
    def interface(self) -> str:
        """ "adapter" when an adapter file defines the entry points, else "native" (the records' ``runtime`` field)."""
        return "adapter" if self.via_adapter else "native"

    def describe(self) -> str:
        """How it was loaded, for the report: ``native: flash_attention_fwd from impl.py (also in x.py)``."""
        if self.no_code:  # neither native nor through an adapter: there is nothing to load
            return "no code"
        by_file: dict[str, list[str]] = {}
        for name, file in self.entries:
            by_file.setdefault(file, []).append(name)
        others = dict(self.alternatives)
        parts = []
        for file, names in by_file.items():
            also = sorted({o for name in names for o in others.get(name, ())})
            parts.append(f"{', '.join(names)} from {file}" + (f" (also in {', '.join(also)})" if also else ""))
        parts += [f"{name} not found" for name in self.missing]
        if self.problems:
            parts.append("not read: " + self.problem_text())
        return f"{self.interface}: " + "; ".join(parts)

    def problem_text(self, limit: int = 4) -> str:
        """``impl.py line 3: syntax error: invalid syntax, big.py over the parse limit…`` (the first ``limit``)."""
        shown = [problem_line(file, why) for file, why in self.problems]
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more


def problem_line(file: str, why: str) -> str:
    """One file that could not be read: ``impl.py line 3: syntax error: ...`` or ``big.py: over the parse limit``."""
    return f"{file} {why}" if why.startswith("line ") else f"{file}: {why}"


MAX_NAMES_SHOWN = 4


def no_code_message(folder: Path, suffix: str) -> str:
    """``no code submitted: the folder holds PROMPT.md only (no .py file)``: what the folder holds instead of code
    (hidden files and caches left out, as discovery leaves them out)."""
    held: list[str] = []
    for top, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
        held += [(Path(top).relative_to(folder) / f).as_posix() for f in sorted(files) if not f.startswith(".")]
        if len(held) > 1000:  # enough to say "and N more"; a prompt folder is small
            break
    if not held:
        holds = "the folder is empty"
    elif len(held) == 1:
        holds = f"the folder holds {held[0]} only"
    else:
        shown = held[:MAX_NAMES_SHOWN]
        more = f" and {len(held) - len(shown)} more files" if len(held) > len(shown) else ""
        holds = f"the folder holds {', '.join(shown)}{more}"
    return f"no code submitted: {holds} (no {suffix} file)"


def adapter_code_lines(folder: Path, rt: Runtime) -> int | None:
    """Code lines of the folder's adapter (the runtime's: ``adapter.cu`` for CUDA, else ``adapter.py``): non-blank
    lines left once comments (and Python docstrings) are removed. None when it cannot be read; text that does not parse
    is counted with only ``#`` lines left out."""
    try:
        text = read_source(folder / rt.adapter).decode(errors="replace")
    except Unreadable:
        return None
    if rt.entries_by == "extern-c":
        return sum(1 for line in C_COMMENT.sub(lambda m: "\n" * m[0].count("\n"), text).splitlines() if line.strip())
    code: set[int] = set()
    try:
        docstrings = {
            line
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
            for line in range(node.lineno, (node.end_lineno or node.lineno) + 1)
        }
        for token in tokenize.generate_tokens(io.StringIO(text).readline):
            if token.type not in _NOT_CODE:
                code.update(range(token.start[0], token.end[0] + 1))
    except (SyntaxError, tokenize.TokenError, ValueError, RecursionError):
        return sum(1 for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return len(code - docstrings)


_NOT_CODE = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}


def _code_suffixes(challenge: Challenge) -> str:
    """The files that count as code for a challenge, as "no ... file" names them: ``.py``, or ``.cu or .py``."""
    return " or ".join(dict.fromkeys(rt.suffix for rt in runtimes.of(challenge)))


def submissions_root(path: Path) -> Path:
    """Accept the submissions folder itself, or a repo clone that holds one under ``submissions/``."""
    nested = path / "submissions"
    if nested.is_dir() and not _model_dirs(path):
        return nested
    return path


def _model_dirs(root: Path) -> list[Path]:
    """Folders that hold at least one recognised challenge folder, under a name the grader takes (``names.py``: the
    others are named in a warning instead)."""
    if not root.is_dir():
        return []
    found = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))]
    return [d for d in found if folder_names.refusal(d.name) is None and _holds_challenge(d)]


def name_warnings(root: Path) -> list[str]:
    """One warning per model folder under ``root`` (one holding a challenge folder) that is not graded for its name,
    or graded under a name that looks like another's (``names.py``); each names the folder escaped."""
    found = []
    try:
        folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith((".", "_"))]
    except OSError:
        return []
    for folder in (d for d in folders if _holds_challenge(d)):
        shown = folder_names.shown(folder.name)
        if why := folder_names.refusal(folder.name):
            found.append(f"model folder {shown} is not graded: {why}; rename it to grade it")
        elif odd := folder_names.lookalike(folder.name):
            found.append(
                f"model folder {shown} is graded under its own name, which holds characters that look like '/' or "
                f"'.' ({odd}): it is not the model or sample it may read as"
            )
    return found


def _holds_challenge(folder: Path) -> bool:
    try:
        return any(c.is_dir() and challenge_for_folder(c.name) for c in folder.iterdir())
    except OSError:  # an unreadable model folder holds nothing the grader can read
        return False


def discover(root: Path, profiles: ProfileFinder | None = None) -> list[Submission]:
    """Every (model, challenge) folder under ``root``, one unit per sample folder where it holds several (module
    docstring), sorted by model, sample number, then challenge order. Each model's task profile comes from
    ``profiles`` (default: a model folder's own ``kernelgrade-task.toml``, then ``root``'s or its repo's, then the
    default profile); an unusable profile file raises :class:`reference.tasks.TaskError`."""
    profiles = profiles or ProfileFinder(repo_roots(root))
    order = {c.id: i for i, c in enumerate(all_challenges())}
    found: dict[tuple[str, str], list[Submission]] = {}
    for model_dir in _model_dirs(root):
        profile = profiles.for_model(model_dir)
        # Our id sorts before a scaffold alias, so if a model has both folders the one named by our id is graded.
        folders = sorted(
            model_dir.iterdir(), key=lambda f: (getattr(challenge_for_folder(f.name), "id", None) != f.name, f.name)
        )
        for folder in folders:
            challenge = challenge_for_folder(folder.name) if folder.is_dir() else None
            if challenge is None or (model_dir.name, challenge.id) in found:
                continue
            samples = sample_folders(folder)
            if len(samples) > 1:
                units = [(sample_unit(model_dir.name, s.name), s) for s in samples]
            else:  # a model with one sample folder is just that model, graded from the sample folder
                units = [(model_dir.name, samples[0] if samples else folder)]
            task = profile.of(challenge.id)
            found[model_dir.name, challenge.id] = [_submission(name, challenge, where, task) for name, where in units]
    subs = [s for group in found.values() for s in group]
    return sorted(subs, key=lambda s: (s.base_model, sample_number(split_sample(s.model)[1]), order[s.challenge]))


def _submission(model: str, challenge: Challenge, folder: Path, task: tasks.ChallengeTask) -> Submission:
    """One graded unit: the entry points of the task's contract variant found in ``folder`` (a challenge folder, or
    one of its sample folders)."""
    names = (challenge.id, *challenge.folder_names)
    entry_points = challenge.entry_points_of(task.contract)
    rt = runtimes.for_folder(challenge, folder)
    if rt.entries_by == "extern-c":  # a CUDA source to build, found by its extern "C" definitions
        res = resolve_cuda(folder, entry_points, names)
    else:
        res = resolve(folder, entry_points, names, challenge.aliases)
    return Submission(
        model=model,
        challenge=challenge.id,
        folder=folder.resolve(),
        entries=tuple(res.chosen.items()),
        alternatives=tuple(res.others.items()),
        via_adapter=res.via_adapter,
        missing=res.missing,
        problems=tuple(res.problems.items()),
        no_code=no_code_message(folder, _code_suffixes(challenge)) if res.no_code else "",
        adapter_lines=adapter_code_lines(folder, rt) if res.via_adapter else None,
        runtime=rt.name,
        task=task,
    )

"""Find submissions laid out as ``<root>/<model>/<challenge folder>/``; a model-comparison repo's clone works too."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plugins.discover.entry_points import SKIP_DIRS, resolve, resolve_cuda
from reference.challenges import all_challenges, challenge_for_folder


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

    @property
    def runtime(self) -> str:
        return "adapter" if self.via_adapter else "native"

    def describe(self) -> str:
        """How it was loaded, for the report: ``native: flash_attention_fwd from impl.py (also in x.py)``."""
        if self.no_code:
            return f"{self.runtime}: no code"
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
        return f"{self.runtime}: " + "; ".join(parts)

    def problem_text(self, limit: int = 4) -> str:
        """``impl.py line 3: syntax error: invalid syntax, big.py over the parse limit…`` (the first ``limit``)."""
        shown = [f"{file} {why}" if why.startswith("line ") else f"{file}: {why}" for file, why in self.problems]
        more = f" and {len(shown) - limit} more" if len(shown) > limit else ""
        return ", ".join(shown[:limit]) + more

    def missing_message(self) -> str:
        """Why the submission cannot run: the entry points no file defines, and the files that could not be read."""
        if not self.problems:
            return f"no Python file defines {', '.join(self.missing)}"
        return f"{self.problem_text()}; no readable Python file defines {', '.join(self.missing)}"


SOURCE_SUFFIX = {"python": ".py", "cuda": ".cu"}  # per runtime, the files that count as code
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


def submissions_root(path: Path) -> Path:
    """Accept the submissions folder itself, or a repo clone that holds one under ``submissions/``."""
    nested = path / "submissions"
    if nested.is_dir() and not _model_dirs(path):
        return nested
    return path


def _model_dirs(root: Path) -> list[Path]:
    """Folders that hold at least one recognised challenge folder."""
    if not root.is_dir():
        return []
    return [
        d
        for d in sorted(root.iterdir())
        if d.is_dir()
        and not d.name.startswith((".", "_"))
        and any(c.is_dir() and challenge_for_folder(c.name) for c in d.iterdir())
    ]


def discover(root: Path) -> list[Submission]:
    """Every (model, challenge) folder under ``root``, sorted by model then challenge order."""
    order = {c.id: i for i, c in enumerate(all_challenges())}
    found: dict[tuple[str, str], Submission] = {}
    for model_dir in _model_dirs(root):
        # Our id sorts before a scaffold alias, so if a model has both folders the one named by our id is graded.
        folders = sorted(
            model_dir.iterdir(), key=lambda f: (getattr(challenge_for_folder(f.name), "id", None) != f.name, f.name)
        )
        for folder in folders:
            challenge = challenge_for_folder(folder.name) if folder.is_dir() else None
            if challenge is None or (model_dir.name, challenge.id) in found:
                continue
            names = (challenge.id, *challenge.folder_names)
            if challenge.runtime == "cuda":  # a CUDA source to build, found by its extern "C" definitions
                res = resolve_cuda(folder, challenge.entry_points, names)
            else:
                res = resolve(folder, challenge.entry_points, names, challenge.aliases)
            found[model_dir.name, challenge.id] = Submission(
                model=model_dir.name,
                challenge=challenge.id,
                folder=folder.resolve(),
                entries=tuple(res.chosen.items()),
                alternatives=tuple(res.others.items()),
                via_adapter=res.via_adapter,
                missing=res.missing,
                problems=tuple(res.problems.items()),
                no_code=no_code_message(folder, SOURCE_SUFFIX.get(challenge.runtime, ".py")) if res.no_code else "",
            )
    return sorted(found.values(), key=lambda s: (s.model, order[s.challenge]))

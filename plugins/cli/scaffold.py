"""``kernelgrade new MODEL``: a folder per challenge holding the prompt part of the challenge's spec as ``PROMPT.md``,
and the model folder's ``kernelgrade-task.toml`` naming the task profile of those prompts (``kernelgrade``).

The spec of challenge ``<id>`` is ``docs/challenges/<id>.md`` in the checkout (the command runs from a checkout or an
editable install, so the docs are beside the code). The prompt is what the spec holds above its
``<!-- prompt ends here`` line; the notes below it (cases, demos) are for graders and never reach a model. Every spec
is read before anything is written: a missing spec, or one without a prompt above the marker, stops the command with
its name, and no folder is left half made.
"""

from __future__ import annotations

import shutil
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from plugins.cli import REPO
from reference import tasks
from reference.challenges import all_challenges

SPECS = REPO / "docs" / "challenges"
PROMPT = "PROMPT.md"
# The model folder's task profile: the prompts written here are ours, so the rules they state are the built-in
# kernelgrade profile's (plugins/discover/tasks.py reads it; a repo or --task may say otherwise).
TASK_TEXT = f"""# The task profile this model is graded by (reference/tasks/): the rules the prompts it was given state.
# kernelgrade new wrote kernelgrade's own prompts (docs/challenges/<id>.md) beside it.
task = "{tasks.DEFAULT}"
"""
MAX_NAME_BYTES = 255  # NAME_MAX of common file systems


class ScaffoldError(Exception):
    """Why nothing was created (shown as one line, exit status 1)."""


@dataclass(frozen=True)
class Created:
    challenge: str
    title: str
    prompt: Path


def spec_path(challenge_id: str) -> Path:
    return SPECS / f"{challenge_id}.md"


def check_model_name(name: str) -> None:
    """A model name is one folder name that discovery will find: not empty, no ``/``, no leading ``.`` (hidden, and
    ``..``) or ``_`` (discovery skips both), no control or invisible characters, at most 255 bytes."""
    if not name or not name.strip():
        raise ScaffoldError("the model name is empty")
    if "/" in name or "\\" in name or "\0" in name:
        raise ScaffoldError(f"the model name {name!r} must be one folder name (no '/' or '\\')")
    if name.startswith((".", "_")):
        raise ScaffoldError(f"the model name {name!r} starts with {name[0]!r}: discovery skips such folders")
    if any(unicodedata.category(ch).startswith("C") for ch in name):
        raise ScaffoldError(f"the model name {name!r} holds control or invisible characters")
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        raise ScaffoldError(f"the model name is longer than {MAX_NAME_BYTES} bytes")


# A spec is the prompt, then this marker line, then notes for graders (case tables, demos, measured figures) that a
# model must not see: the hidden cases' sizes are among them.
PROMPT_END = b"<!-- prompt ends here"


def prompt_of(spec: bytes) -> bytes:
    """The part of a spec a model is given: everything above the prompt-end marker, byte for byte (b"" without one)."""
    head, marker, _ = spec.partition(PROMPT_END)
    return head.rstrip() + b"\n" if marker and head.strip() else b""


def read_specs() -> dict[str, tuple[str, bytes]]:
    """``{challenge id: (title, prompt bytes)}`` for every challenge, or :class:`ScaffoldError` naming the ones whose
    spec is missing, empty or has no prompt-end marker (then it is unclear what a model may see: nothing is written)."""
    specs: dict[str, tuple[str, bytes]] = {}
    missing = []
    for challenge in all_challenges():
        path = spec_path(challenge.id)
        text = prompt_of(path.read_bytes()) if path.is_file() else b""
        if not text.strip():
            state = "has no prompt above a '<!-- prompt ends here' line" if path.is_file() else "is missing"
            shown = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            missing.append(f"{challenge.id} ({shown} {state})")
        specs[challenge.id] = (challenge.title, text)
    if missing:
        raise ScaffoldError("no spec to use as the prompt for " + ", ".join(missing) + "; nothing was created")
    return specs


def create(model: str, root: Path) -> list[Created]:
    """Make ``root/model/<id>/PROMPT.md`` for every challenge; refuses an existing ``root/model`` (file or folder)."""
    check_model_name(model)
    specs = read_specs()
    target = root / model
    try:
        root.mkdir(parents=True, exist_ok=True)
        target.mkdir()  # fails if anything of that name exists: never merged into, never overwritten
    except FileExistsError:
        raise ScaffoldError(f"{target} already exists: choose another name, or remove it first") from None
    except OSError as exc:
        raise ScaffoldError(f"cannot create {target}: {exc.strerror or exc}") from None
    created = []
    try:
        for challenge_id, (title, text) in specs.items():
            folder = target / challenge_id
            folder.mkdir()
            (folder / PROMPT).write_bytes(text)
            created.append(Created(challenge_id, title, folder / PROMPT))
        (target / tasks.FILE_NAME).write_text(TASK_TEXT)
    except OSError as exc:
        shutil.rmtree(target, ignore_errors=True)  # ours alone: made by the mkdir above
        raise ScaffoldError(f"cannot write under {target}: {exc.strerror or exc}") from None
    return created

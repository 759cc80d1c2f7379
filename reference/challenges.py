"""Every challenge the grader knows, found in ``reference/``: a contract module there that defines ``CHALLENGE``.

Adding ``reference/<id>.py`` with a module-level ``CHALLENGE = Challenge(...)`` adds the challenge: no list to edit,
no count to change. Modules are found by reading their source (``ast``), so helper modules (models, corpora, kernels)
are never imported to find out that they are not contracts. The folder names each contract accepts include the public
challenge scaffold's (``backwards``, ``fuse``, ``kv``), so a clone of a model-comparison repo is graded in place.
Reports list challenges in the order of their ids.
"""

from __future__ import annotations

import ast
import functools
import importlib
from collections import Counter
from pathlib import Path
from types import ModuleType

from reference.contract import Challenge

_HERE = Path(__file__).resolve().parent


def _defines_challenge(path: Path) -> bool:
    """Whether the module assigns ``CHALLENGE`` at its top level (read, not run)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    targets = [t for n in tree.body if isinstance(n, ast.Assign) for t in n.targets]
    targets += [n.target for n in tree.body if isinstance(n, ast.AnnAssign)]
    return any(isinstance(t, ast.Name) and t.id == "CHALLENGE" for t in targets)


@functools.cache
def challenge_ids() -> tuple[str, ...]:
    """Every challenge id, in report order (sorted): the contract modules of ``reference/``."""
    return tuple(sorted(p.stem for p in _HERE.glob("*.py") if not p.stem.startswith("_") and _defines_challenge(p)))


def reference_module(challenge_id: str) -> ModuleType:
    """The contract module of a challenge; KeyError for an id that is none."""
    if challenge_id not in challenge_ids():
        raise KeyError(challenge_id)
    return importlib.import_module(f"reference.{challenge_id}")


def all_challenges() -> tuple[Challenge, ...]:
    """Every challenge, in report order."""
    return tuple(reference_module(cid).CHALLENGE for cid in challenge_ids())


def cases_by_category(challenge_id: str) -> dict[str, int]:
    """How many hidden cases of each category the challenge has (the report tells a category with no case from one
    whose cases did not run)."""
    return dict(Counter(case.category for case in reference_module(challenge_id).CASES))


def challenge_for_folder(folder_name: str) -> Challenge | None:
    """The challenge a submission folder belongs to, by our id or a scaffold alias."""
    for challenge in all_challenges():
        if folder_name in challenge.folder_names:
            return challenge
    return None

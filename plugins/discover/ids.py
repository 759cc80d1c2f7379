"""Test ids of graded tests, and the way back from a node id to the (model, challenge, case) it grades.

A graded test's id is ``<model>/<case>``. pytest escapes non-ASCII and control characters in ids (``é`` becomes
``\\xe9``, a backslash is doubled), which could make two models' ids equal (a model named ``é`` and one named
``\\xe9``); pytest would then append numbers to tell them apart. So the id is made here, already in a form pytest keeps
as it is (printable ASCII, no backslash) and unique.

The xdist controller never collects: when a worker dies, all it has is the node id of the test that was running. It
maps that id back with :class:`NodeMap`, built from the same discovery and the same id function, never by splitting the
id at ``/`` or ``]`` (a model name may hold both, and spaces, and anything else but ``/``; the name of one sample of
several, ``model/sample-2``, holds a ``/`` too: see :mod:`plugins.discover.submissions`).
"""

from __future__ import annotations

import importlib.util
import sys
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from plugins.discover.submissions import Submission
from reference.challenges import reference_module
from reference.contract import Case


class GradedCase(NamedTuple):
    submission: Submission
    case_index: int
    case: Case


_PLAIN = frozenset(chr(c) for c in range(0x20, 0x7F)) - {"\\"}
_QUOTE_SAFE = "".join(sorted(_PLAIN - {"%"}))


def _plain(text: str) -> bool:
    """Printable ASCII without a backslash: exactly the ids pytest keeps as they are (it doubles backslashes)."""
    return all(ch in _PLAIN for ch in text)


def model_ids(models: Iterable[str]) -> dict[str, str]:
    """A unique id part per model name that pytest keeps as it is: a plain name is its own id; any other is
    percent-encoded (``modèle`` -> ``mod%C3%A8le``), with ``~2``, ``~3``… added if that spelling is taken."""
    names = sorted(set(models))
    taken = {m for m in names if _plain(m)}  # plain names keep their spelling; encoded ones yield to them
    ids = {m: m for m in taken}
    for name in (m for m in names if not _plain(m)):
        base = urllib.parse.quote(name.encode("utf-8", "surrogateescape"), safe=_QUOTE_SAFE)
        candidate, n = base, 1
        while candidate in taken:
            n += 1
            candidate = f"{base}~{n}"
        taken.add(candidate)
        ids[name] = candidate
    return ids


def graded_params(submissions: list[Submission], challenge: str) -> list[tuple[str, GradedCase]]:
    """(test id, graded case) for every selected submission of ``challenge`` and every case of its table that belongs
    to the contract variant the submission's task profile names (cases of other variants are not collected)."""
    reference = reference_module(challenge)
    if reference is None:  # no contract yet: no graded test either
        return []
    ids = model_ids(s.model for s in submissions)
    return [
        (f"{ids[sub.model]}/{case.id}", GradedCase(sub, index, case))
        for sub in submissions
        if sub.challenge == challenge
        for index, case in enumerate(reference.CASES)
        if sub.challenge_task.collects(case)
    ]


def split_nodeid(nodeid: str) -> tuple[str, str] | None:
    """``(test file, param id)`` of ``path.py::test_name[param id]``; the id is everything between the first ``[``
    after the function name and the final ``]``, whatever it holds."""
    path, sep, rest = nodeid.partition("::")
    name, bracket, tail = rest.partition("[")
    if not sep or not bracket or not tail.endswith("]") or "::" in name:
        return None
    return path, tail[:-1]


class NodeMap:
    """Node id -> graded case, on the controller, for every selected submission."""

    def __init__(self, submissions: list[Submission], challenges: Iterable[str], rootpath: Path):
        self.rootpath = rootpath
        self._by_id: dict[str, list[GradedCase]] = {}
        self._module_challenge: dict[str, str | None] = {}
        for challenge in challenges:
            for test_id, graded in graded_params(submissions, challenge):
                self._by_id.setdefault(test_id, []).append(graded)

    def lookup(self, nodeid: str) -> GradedCase | None:
        parts = split_nodeid(nodeid)
        if parts is None:
            return None
        candidates = self._by_id.get(parts[1], [])
        if len(candidates) > 1:  # one model, one case id in two challenges: the test file says which
            challenge = self._challenge_of(parts[0])
            candidates = [c for c in candidates if c.submission.challenge == challenge]
        return candidates[0] if len(candidates) == 1 else None

    def _challenge_of(self, path: str) -> str | None:
        if path not in self._module_challenge:
            module = _test_module(self.rootpath / path)
            reference = getattr(module, "REFERENCE", None)
            self._module_challenge[path] = reference.CHALLENGE.id if reference else None
        return self._module_challenge[path]


def _test_module(path: Path) -> ModuleType | None:
    """The graded test module at ``path`` (trusted: one of ours under ``tests/``), imported once if pytest has not."""
    resolved = path.resolve()
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) and Path(module.__file__).resolve() == resolved:
            return module
    spec = importlib.util.spec_from_file_location(f"_kernelgrade_test_{abs(hash(str(resolved)))}", resolved)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # an unimportable module simply resolves nothing
        return None
    return module

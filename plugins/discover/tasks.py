"""Which task profile grades each model (:mod:`reference.tasks`), found once per model folder.

Precedence, first found wins:

1. ``--task=NAME|PATH``: one profile for every model of the run;
2. the model folder's ``kernelgrade-task.toml`` (``kernelgrade new`` writes one naming ``kernelgrade``);
3. the submissions root's, or the repo root's when ``--submissions-dir`` is a clone holding ``submissions/`` (a
   model-comparison repo carries its own ``kernelgrade-task.toml`` at its root);
4. the built-in default, ``kernelgrade``.

A file that cannot be used is a :class:`reference.tasks.TaskError` (a usage error of the run, one line).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from reference import tasks


def repo_roots(root: Path) -> tuple[Path, ...]:
    """The folders whose ``kernelgrade-task.toml`` speaks for every model under submissions root ``root``: the root
    itself, and the repo holding it when it is a ``submissions/`` folder."""
    return (root, root.parent) if root.name == "submissions" else (root,)


class ProfileFinder:
    """Profiles per model folder, each file read once; ``override`` is ``--task``'s profile when given."""

    def __init__(self, roots: Iterable[Path] = (), override: tasks.TaskProfile | None = None):
        self.roots = tuple(dict.fromkeys(roots))  # in order, each once (the submissions root may be the repo root)
        self.override = override
        self._files: dict[Path, tasks.TaskProfile] = {}

    def for_model(self, model_dir: Path) -> tasks.TaskProfile:
        if self.override is not None:
            return self.override
        for folder in (model_dir, *self.roots):
            path = folder / tasks.FILE_NAME
            if path.is_file():
                return self._file(path)
        return tasks.built_in()

    def _file(self, path: Path) -> tasks.TaskProfile:
        if path not in self._files:
            self._files[path] = tasks.load_file(path)
        return self._files[path]

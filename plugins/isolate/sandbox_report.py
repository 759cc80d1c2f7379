"""What the reports say about the sandbox: how strongly submissions were contained here, and what their copies lack.

Registered by ``plugins/isolate/plugin.py`` on the run's first process (the one that writes the reports). It adds
``results.json["sandbox"]``::

    {"level": "namespaces" | "uid" | "process-group", "namespaces": bool, "separate_user": bool, "cgroup": bool,
     "memory_peak": bool, "warnings": [str, ...], "copy_notes": {"<model>/<challenge>": [str, ...]},
     "writable_space": str, "freezer": "cgroup.freeze" | "SIGSTOP",
     "gpu": {"bwrap": bool, "user_namespace": bool, "cgroup": bool} (GPU runs only)}

``writable_space`` says what caps a child's writes here (``diskcap.py``), ``freezer`` how the run's other children
are stopped while a case is timed (``fairness.py``).

and a ``Sandbox`` section in ``grades.md`` when there is a warning or a note. A warning means the grades of this run
rest on weaker containment than the README's threat model assumes (see ``containment.py``); a note names a file of a
submission's folder that was not copied (a FIFO, a device, a link out of the folder, a file over the size cap).
"""

from __future__ import annotations

from typing import Any

from plugins.isolate import containment, diskcap
from plugins.isolate.runspace import RunSpace
from plugins.report.inert import markdown


class SandboxReport:
    """The two grader hooks, bound to the run's folder and its submissions."""

    def __init__(self, space: RunSpace, submissions: list[Any], cfg: Any):
        self.space, self.cfg = space, cfg
        manifest = space.manifest()  # read now: the folder is gone by the time reports are written
        self.notes = {
            f"{s.model}/{s.challenge}": manifest[str(s.folder)]["notes"]
            for s in submissions
            if manifest.get(str(s.folder), {}).get("notes")
        }

    def summary(self) -> dict[str, Any]:
        level = containment.probe()
        facts = level.to_dict() | {"copy_notes": self.notes}
        facts["writable_space"] = diskcap.describe(level.level == "namespaces")
        facts["freezer"] = "cgroup.freeze" if level.cgroup_base is not None else "SIGSTOP"
        if level.level != "namespaces":
            facts["warnings"].append(f"a child's writable space: {facts['writable_space']}")
        if self.cfg.device == "cuda":  # GPU children may run with less (containment.gpu_mode)
            mode = containment.gpu_mode(level, self.space.cgroup_parent(level), self.cfg.repo, self.cfg.gpu)
            facts["gpu"] = {
                "bwrap": mode.userns is not None,
                "user_namespace": bool(mode.userns),
                "cgroup": mode.cgroup,
            }
            facts["warnings"] += [mode.warning] if mode.warning else []
            if mode.userns is None and level.level == "namespaces":
                facts["warnings"].append(f"a GPU child's writable space: {diskcap.describe(False)}")
        return facts

    def pytest_grader_update_summary(self, summary: dict[str, Any], config: Any) -> None:
        del config
        summary["sandbox"] = self.summary()

    def pytest_grader_report_sections(self, summary: dict[str, Any], config: Any) -> list[tuple[str, str]] | None:
        del config
        facts = summary.get("sandbox") or self.summary()
        lines = [f"- warning: {markdown(w)}" for w in facts["warnings"]]
        # Model names and file names come from the submissions: inert Markdown, like every other report string.
        lines += [f"- {markdown(at)}: {markdown(note)}" for at, notes in sorted(self.notes.items()) for note in notes]
        if not lines:
            return None
        head = f"Containment here: {facts['level']}."
        return [("Sandbox", head + "\n\n" + "\n".join(lines))]

"""What the reports say about the sandbox: how strongly submissions were contained here, and what their copies lack.

Registered by ``plugins/isolate/plugin.py`` on the run's first process (the one that writes the reports). It adds
``results.json["sandbox"]``::

    {"level": "namespaces" | "uid" | "process-group", "namespaces": bool, "separate_user": bool, "cgroup": bool,
     "memory_peak": bool, "warnings": [str, ...], "copy_notes": {"<model>/<challenge>": [str, ...]},
     "writable_space": str, "freezer": "cgroup.freeze" | "SIGSTOP",
     "gpu": {"rung": str, "bwrap": bool, "user_namespace": bool, "nobody": bool, "cgroup": bool, "binds": [str, ...],
             "tried": [str, ...]} | {"rung": null, "note": str} (GPU runs only)}

``gpu`` is the rung GPU children had in this run (``gpu_rung.py``, probed once per run and kept in the run's folder):
what bwrap bound for the driver, and why each stronger rung failed. On a GPU run where no GPU child ran (no CUDA or
torch submission selected), it says so instead; every other child had the level above, as on a CPU run.

``writable_space`` says what caps a child's writes here (``diskcap.py``), ``freezer`` how the run's other children
are stopped while a case is timed (``fairness.py``).

and a ``Sandbox`` section in ``grades.md`` when there is a warning or a note. A warning means the grades of this run
rest on weaker containment than the README's threat model assumes (see ``containment.py``); a note names a file of a
submission's folder that was not copied (a FIFO, a device, a link out of the folder, a file over the size cap).
"""

from __future__ import annotations

from typing import Any

from plugins.base.inert import markdown
from plugins.isolate import containment, diskcap, gpu_rung
from plugins.isolate.runspace import RunSpace


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
        if self.cfg.on_gpu:  # GPU children may run with less (gpu_rung.py)
            facts["gpu"] = self.gpu_facts()
            warning = facts["gpu"].pop("warning", None)
            facts["warnings"] += [warning] if warning else []
            if facts["gpu"].get("bwrap") is False and level.level == "namespaces":
                facts["warnings"].append(f"a GPU child's writable space: {diskcap.describe(False)}")
        return facts

    def gpu_facts(self) -> dict[str, Any]:
        """The GPU children's rung as this run's first GPU child found it (never probed here: a run without GPU
        children starts no CUDA for its report)."""
        try:
            mode = gpu_rung.GpuMode.from_json(gpu_rung.record_path(self.space.root).read_text())
        except OSError:
            mode = None
        if mode is None:
            return {"rung": None, "note": "no GPU child ran: every child was contained as on a CPU run"}
        return mode.to_dict() | {"warning": mode.warning}

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

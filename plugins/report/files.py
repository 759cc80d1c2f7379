"""Write the report files from a summary: ``grades.md``, ``results.json``, the pictures and the badges, each replaced
atomically.

Used at the end of a run and by :mod:`plugins.report.recover`. A file is written to a temporary name and renamed, so a
reader (or a second Ctrl-C) never finds half a report. Report files get the mode a plain ``open()`` would give them
(0644 under the usual umask 022), not ``mkstemp``'s private 0600: a CI uploader or a web server running as another
user must be able to read them. A badge that cannot be written is reported, and the other
reports are still written.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from plugins.grade.journal import json_safe
from plugins.report import badges as badge_files
from plugins.report import markdown, pictures


def file_mode() -> int:
    """0666 less the process's umask: what ``open(path, "w")`` creates (the umask can only be read by setting it)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` in one rename, with the mode of :func:`file_mode`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name[:40]}.", suffix=".tmp")
    try:
        os.fchmod(fd, file_mode())
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(
    summary: dict[str, Any], folder: Path, sections: list[tuple[str, str]], badges: bool = True
) -> tuple[list[Path], list[str]]:
    """The report files of ``summary`` in ``folder``: grades.md, results.json, the pictures beside them and (if
    ``badges``) the badges; returns (paths written, warnings). A picture or badge that cannot be written costs no other
    report."""
    written = [folder / "grades.md", folder / "results.json"]
    atomic_write(written[0], markdown.render(summary, sections) + "\n")
    atomic_write(written[1], json.dumps(json_safe(summary), indent=1, allow_nan=False) + "\n")
    warnings: list[str] = []
    try:  # the heatmap and the speed chart
        for name, text in pictures.picture_files(summary).items():
            atomic_write(folder / name, text)
            written.append(folder / name)
    except OSError as exc:
        warnings.append(f"pictures not written: {exc}")
    if not badges:  # a recovered run's letters are not ones to show as badges
        return written, warnings
    try:
        written += badge_files.write_badges(summary, folder / "badges")
    except OSError as exc:
        warnings.append(f"badges not written: {exc}")
    return written, warnings

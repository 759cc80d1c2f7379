"""Badges written offline: an SVG per model with its overall letter, and a shields.io endpoint JSON beside it.

File names come from :func:`plugins.base.inert.file_stem`: unique per model name and short enough for any file
system, so ``has space`` and ``has_space`` get two files and a 255-byte name does not stop the other reports.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from plugins.base import inert

COLOURS = {"A": "#4c1", "B": "#97ca00", "C": "#dfb317", "D": "#fe7d37", "F": "#e05d44"}
_CHAR_PX = 7  # average width of an 11px Verdana character, close enough for short labels


def colour(letter: str) -> str:
    return COLOURS.get(letter[:1], "#9f9f9f")


def svg(label: str, value: str, fill: str) -> str:
    """A flat two-part badge: grey label on the left, coloured value on the right."""
    label, value = inert.label(label), inert.label(value)
    left, right = 10 + _CHAR_PX * len(label), 10 + _CHAR_PX * len(value)
    label, value = escape(label), escape(value)
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + right}" height="20" role="img" '
        f'aria-label="{label}: {value}"><title>{label}: {value}</title>'
        f'<rect width="{left}" height="20" fill="#555"/><rect x="{left}" width="{right}" height="20" fill="{fill}"/>'
        f'<g fill="#fff" text-anchor="middle" font-family="Verdana,Geneva,DejaVu Sans,sans-serif" font-size="11">'
        f'<text x="{left / 2}" y="14">{label}</text><text x="{left + right / 2}" y="14">{value}</text></g></svg>\n'
    )


def write_badges(summary: dict, folder: Path) -> list[Path]:
    """``<stem>.svg`` and ``<stem>.json`` for every model in the run (``stem`` from :func:`inert.file_stem`); returns
    the SVG paths."""
    folder.mkdir(parents=True, exist_ok=True)
    for stale in [*folder.glob("*.svg"), *folder.glob("*.json")]:  # models of an earlier run must not linger
        stale.unlink()
    written = []
    for model, data in summary["models"].items():
        letter = data["overall"]
        fill = colour(letter)
        if not data.get("complete", True):  # a letter of a run that stopped early is not one to show as final
            letter, fill = f"{letter} incomplete", colour("")
        stem = inert.file_stem(model)
        path = folder / f"{stem}.svg"
        path.write_text(svg(model, letter, fill))
        endpoint = {"schemaVersion": 1, "label": inert.visible(model), "message": letter, "color": fill}
        (folder / f"{stem}.json").write_text(json.dumps(endpoint) + "\n")
        written.append(path)
    return written

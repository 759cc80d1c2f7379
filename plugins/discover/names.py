"""Which model folder names the grader grades, and which it names in a warning instead.

A model's name is its folder's name, used everywhere: records, node ids, reports, badges, xdist's messages. So:

- refused (not graded; a warning in the reports and on the terminal names the folder, escaped): a name that is not
  valid UTF-8 (no text can carry it faithfully: xdist and JSON need text), and a name holding a line break or a tab
  (it would start a new line, or a new cell, in every line-based view: a forged row of the terminal's grade table);
- graded under its own name, with a warning: a name holding characters that look like ``/`` or like ``.`` sequences
  (``demo∕sample-2`` reads as a sample of ``demo``; ``‥`` as ``..``), shown with those characters escaped;
- graded as any other: control characters that are not line breaks, leading dashes, spaces, markup and long names
  (up to the file system's 255 bytes). Every report shows them inert (``plugins/base/inert.py``).
"""

from __future__ import annotations

import os
import unicodedata

# Characters that read as "/" without NFKC folding them to it (those that do are caught by the fold itself).
_SLASH_LOOKALIKES = frozenset("\u2044\u2215\u2571\u29f8\u27cb\u3033")
_LINE_BREAKS = frozenset("\n\r\t\v\f\x1c\x1d\x1e\x85\u2028\u2029")


def shown(name: str) -> str:
    """The name as quoted printable ASCII, so leading dashes and spaces show: a valid name with every non-ASCII or
    control character as a Python escape (``'demo\\u2215sample-2'``), any other as its bytes (``b'bad-\\xff'``)."""
    raw = os.fsencode(name)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return repr(raw)
    return ascii(name)


def refusal(name: str) -> str | None:
    """Why a model folder of this name is not graded, or None (module docstring)."""
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        return "its name is not valid UTF-8"
    if any(ch in _LINE_BREAKS for ch in name):
        return "its name holds a line break or a tab"
    return None


def lookalike(name: str) -> str | None:
    """What the name holds that looks like ``/`` or a ``.`` sequence, or None."""
    folded = unicodedata.normalize("NFKC", name)
    odd = sorted({ch for ch in name if ch in _SLASH_LOOKALIKES or (not ch.isascii() and "/" in _fold(ch))})
    dots = sorted({ch for ch in name if not ch.isascii() and "." in _fold(ch)})
    if odd or (dots and ".." in folded):
        return ", ".join(f"U+{ord(ch):04X}" for ch in [*odd, *dots])
    return None


def _fold(ch: str) -> str:
    return unicodedata.normalize("NFKC", ch)

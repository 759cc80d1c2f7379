"""Make text that came from a submission inert in each place it is shown: terminal, Markdown, HTML and file names.

Model names are folder names and may hold any byte but ``/``; messages, tracebacks and printed output are whatever the
submission chose. Each writer passes such text through the function for its format:

- ``visible``: control characters (C0 but newline and tab, DEL, C1), bidirectional overrides, zero-width and other
  invisible format characters become visible escapes (``\\x1b``, ``\\u202e``), so no terminal sequence runs and no
  name hides or reorders its letters. Every other function starts from it.
- ``terminal``: ``visible`` (the terminal has no other markup).
- ``markdown``: one line of Markdown text: the punctuation that means something inside a line escaped with a
  backslash (links, images, emphasis, code spans, table cells, strikethrough, math), ``&``, ``<`` and ``>`` as
  entities, autolink triggers (``://``, ``www.``, ``@``) broken.
- ``html``: ``html.escape`` with quotes, after ``visible``.
- ``file_stem``: a file name stem that is unique per name and at most ``MAX_STEM_BYTES`` bytes: a name made of safe
  ASCII is used as it is; any other gets an underscore prefix (which safe stems never have) and a hash of the name.
"""

from __future__ import annotations

import hashlib
import html as html_module
import re
import unicodedata

MAX_STEM_BYTES = 100  # far under NAME_MAX (255 bytes) once ".svg" or ".json" is added
MAX_LABEL_CHARS = 60  # badge labels are cut here (with an ellipsis); the JSON endpoint keeps the full name
_SAFE_STEM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_KEEP = {"\n", "\t"}
# CommonMark lets any ASCII punctuation be backslash-escaped; these are the ones with a meaning inside a line of text
# or a GFM table cell (code spans, emphasis, links and images, strikethrough, cell breaks, GitHub's $math$). Our text
# never starts a line, so "-", "+", "#" and "1." need nothing; "(" and ")" only form a link right after "]", which is
# always escaped, so they stay readable. "&", "<" and ">" become entities instead.
_MARKDOWN_PUNCT = set("\\`*_[]!|~$")
# GFM turns bare URLs, www. addresses and e-mail addresses into links; an escaped character inside the trigger stops it.
_AUTOLINK = re.compile(r"(?i)://|www\.|@")


def _hidden(ch: str) -> bool:
    """True for characters a reader cannot see or that change how the rest is displayed."""
    if ch in _KEEP:
        return False
    category = unicodedata.category(ch)
    # Cc: C0, DEL and C1 controls (terminal escapes); Cf: bidi overrides, zero-width joiners, soft hyphen, BOM;
    # Zl/Zp: line and paragraph separators, which some viewers treat as line breaks.
    return category in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def visible(text: object) -> str:
    """``text`` with every invisible or control character written as an escape."""
    s = str(text)
    if s.isprintable() or not any(_hidden(ch) for ch in s):
        return s
    return "".join(_escaped(ch) if _hidden(ch) else ch for ch in s)


def terminal(text: object) -> str:
    return visible(text)


def one_line(text: object) -> str:
    """``visible`` text with line breaks and tabs as spaces (table cells, list items)."""
    return visible(text).replace("\r", " ").replace("\n", " ").replace("\t", " ")


def markdown(text: object) -> str:
    """One line of Markdown that renders exactly as ``text`` reads: no link, emphasis, code span, HTML or cell break."""
    out = []
    line = one_line(text)
    for i, ch in enumerate(line):
        if ch == "_" and 0 < i < len(line) - 1 and line[i - 1].isalnum() and line[i + 1].isalnum():
            out.append(ch)  # an underscore inside a word never starts emphasis: flash_attention stays as it is
        elif ch == "&":
            out.append("&amp;")
        elif ch == "<":
            out.append("&lt;")
        elif ch == ">":
            out.append("&gt;")
        elif ch in _MARKDOWN_PUNCT:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return _AUTOLINK.sub(_break_autolink, "".join(out))


def _break_autolink(match: re.Match[str]) -> str:
    trigger = match.group(0)
    return trigger[:3] + "\\." if trigger[0] in "wW" else "\\" + trigger


def html(text: object) -> str:
    return html_module.escape(visible(text), quote=True)


def file_stem(name: str) -> str:
    """A collision-free, length-safe file name stem for a model name (see the module docstring)."""
    if _SAFE_STEM.fullmatch(name) and len(name) <= MAX_STEM_BYTES:
        return name
    digest = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", name.encode("ascii", "ignore").decode())[:40].strip("._-")
    return f"_{readable}.{digest}" if readable else f"_{digest}"


def label(name: str) -> str:
    """A display label of bounded length (badges)."""
    shown = visible(name)
    return shown if len(shown) <= MAX_LABEL_CHARS else shown[: MAX_LABEL_CHARS - 1] + "…"

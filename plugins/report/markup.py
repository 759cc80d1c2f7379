"""The Markdown of a report section (``pytest_grader_report_sections``: built-in and users' plugins write Markdown once)
as HTML for report.html, so that every section grades.md shows is in the page too.

Only what the sections use: paragraphs, ``- `` bullet lists, pipe tables, ``> `` quotes, ``**bold**`` and `` `code` ``.
Everything is escaped first (a section may quote a submission's name or message; raw HTML in the Markdown shows as
text), except the character references the Markdown already held (``wording.escape`` writes ``<`` as ``&lt;``); then
the few marks become tags, and a backslash escape shows its character. No link or image syntax is honoured.
"""

from __future__ import annotations

import re

from plugins.base import inert

_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])")
# A backslash escape in the escaped HTML: any ASCII punctuation (inert.markdown escapes marks so), or one of the
# entities inert.html made of < > & " '.
_ESCAPED = re.compile(r"\\(&lt;|&gt;|&amp;|&quot;|&#x27;|[!-/:-@\[-`{-~])")
# A character reference the Markdown already held (inert.markdown writes < > & so), escaped once more by inert.html.
_DOUBLED = re.compile(r"&amp;(lt|gt|amp|quot|#\d{1,7}|#x[0-9a-fA-F]{1,6});")
_BULLET = re.compile(r"^\s*[-*] ")
_RULE = re.compile(r"^\|?\s*:?-{3,}:?\s*(\|\s*:?-{3,}:?\s*)*\|?$")


def inline(text: str) -> str:
    """One line of Markdown as HTML: escaped, backslash escapes as character references (so no mark sees them), then
    code, bold and italic marks."""
    html = _DOUBLED.sub(r"&\1;", inert.html(text))
    html = _ESCAPED.sub(lambda m: m.group(1) if m.group(1).startswith("&") else f"&#{ord(m.group(1))};", html)
    html = _CODE.sub(r"<code>\1</code>", html)
    html = _BOLD.sub(r"<b>\1</b>", html)
    return _ITALIC.sub(r"<i>\1</i>", html)


def _cells(line: str) -> list[str]:
    body = line.strip().removeprefix("|").removesuffix("|")
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", body)]


def to_html(markdown: str) -> str:
    """A section's Markdown body as HTML blocks."""
    out: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif _table_at(lines, i):
            head = "".join(f"<th>{inline(c)}</th>" for c in _cells(line))
            i += 2
            rows = []
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in _cells(lines[i])) + "</tr>")
                i += 1
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        elif _BULLET.match(line):
            items = []
            while i < len(lines) and _BULLET.match(lines[i]):
                items.append(f"<li>{inline(_BULLET.sub('', lines[i]))}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
        elif line.startswith(">"):
            quoted = []
            while i < len(lines) and lines[i].startswith(">"):
                quoted.append(inline(lines[i].lstrip(">").strip()))
                i += 1
            out.append(f"<blockquote>{' '.join(quoted)}</blockquote>")
        elif re.match(r"#{1,6} ", line):
            level = min(6, len(line) - len(line.lstrip("#")) + 2)  # a section's own headings sit under its <h3>
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
            i += 1
        else:
            para = []
            while i < len(lines) and lines[i].strip() and not _starts_block(lines, i):
                para.append(inline(lines[i].strip()))
                i += 1
            out.append(f"<p>{' '.join(para)}</p>")
    return "".join(out)


def _table_at(lines: list[str], i: int) -> bool:
    """A pipe table starts at line ``i``: a row, then the rule under its header."""
    return lines[i].lstrip().startswith("|") and i + 1 < len(lines) and bool(_RULE.match(lines[i + 1].strip()))


def _starts_block(lines: list[str], i: int) -> bool:
    return _table_at(lines, i) or bool(re.match(r"\s*[-*] |>|#{1,6} ", lines[i]))

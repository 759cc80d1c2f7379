"""``kernelgrade check`` as terminal text. Every string that came from a submission (model and file names, function
names and signatures, printed output, messages) goes through ``plugins/base/inert.py`` ``terminal()``, so no
escape sequence a submission wrote runs in the reader's terminal."""

from __future__ import annotations

from plugins.base.inert import terminal
from plugins.cli import shown_path
from plugins.cli.check import FolderCheck
from plugins.cli.probe import ImportReport
from plugins.isolate import runtimes

MAX_OUTPUT_LINES = 12  # of what an import printed; the JSON output has the whole tail
MAX_LINE_CHARS = 160  # per line shown of it (a flood is one long line)


def folder_text(result: FolderCheck) -> str:
    lines = [f"{terminal(result.model)} / {result.challenge}   {terminal(shown_path(result.folder))}"]
    if result.no_code:
        lines.append(f"  {terminal(result.no_code)}")
    width = max(len(e.name) for e in result.entries) if result.entries else 0
    for entry in result.entries:
        where = terminal(entry.file) + (f" (also in {terminal(', '.join(entry.also))})" if entry.also else "")
        lines.append(f"  {entry.name:<{width}}  {entry.status:<7}  {where}".rstrip())
        for miss in result.near.get(entry.name, []):
            d = miss.definition
            lines.append(f"      near miss {miss.score:.2f}  {terminal(d.file)}:{d.line}  {terminal(d.signature)}")
        if entry.status == "missing" and not result.near.get(entry.name) and not result.no_code:
            lines.append("      no similar name in the folder")
    for declaration in result.c_contract.values():
        lines.append(f'  contract: extern "C" {declaration}')
    rt = runtimes.runtime(result.runtime)
    if rt.entries_by == "extern-c" and not result.no_code:
        shown = [f"{terminal(d.file)}:{d.line} {terminal(d.signature)}" for d in result.c_functions]
        lines.append('  extern "C" functions found: ' + ("; ".join(shown) or "none"))
    if result.adapter_lines is not None:
        lines.append(f"  {rt.adapter}: {result.adapter_lines} code lines")
    lines += [f"  warning: {terminal(w)}" for w in result.warnings]
    if result.problems:
        lines += [f"  not read: {terminal(file)}: {terminal(why)}" for file, why in result.problems]
    lines.append("  " + (import_text(result.imported) if result.imported else result.import_note))
    if result.task:
        lines.append(f"  task profile: {terminal(result.task)}")
    verdict = "ready" if result.ok else "not ready: " + _why_not(result)
    lines.append(f"  {verdict}")
    if result.skeleton_note:
        lines.append(f"  {terminal(result.skeleton_note)}")
    if result.skeleton:
        how = "lines to add to" if result.skeleton_adds else "save as"
        lines.append(f"  adapter skeleton ({how} {result.skeleton_file} in the folder):")
        lines += ["    | " + line if line else "    |" for line in terminal(result.skeleton).rstrip("\n").split("\n")]
    return "\n".join(lines)


def _why_not(result: FolderCheck) -> str:
    if result.no_code:
        return "no code"
    missing = [e.name for e in result.entries if e.status == "missing"]
    reasons = [f"{', '.join(missing)} not found"] if missing else []
    if result.imported is not None and result.imported.status != "ok":
        reasons.append(f"the import failed ({result.imported.status})")
    for call in result.imported.hung_or_failed if result.imported else []:
        what = "hangs" if call["status"] == "timeout" else f"failed ({call['status']})"
        reasons.append(f"a tiny call of {', '.join(call['entries'])} {what}")
    return "; ".join(reasons)


def import_text(report: ImportReport) -> str:
    files = terminal(", ".join(report.files))
    head = f"import of {files}: "
    if report.status == "ok":
        head += f"ok in {report.seconds:.2f} s (a sandbox child importing nothing took {report.start_seconds:.2f} s)"
    else:
        head += f"FAILED ({report.status}) after {report.seconds:.2f} s: {terminal(report.message)}"
    parts = [head]
    for stream in ("stdout", "stderr"):
        text = getattr(report, stream)
        if text:
            shown = text.rstrip("\n").split("\n")
            cut = f"\n      [... {len(shown) - MAX_OUTPUT_LINES} lines before]" if len(shown) > MAX_OUTPUT_LINES else ""
            body = "\n".join("      " + _cut(terminal(line)) for line in shown[-MAX_OUTPUT_LINES:])
            parts.append(f"    printed to {stream} at import:{cut}\n{body}")
    if report.written:
        parts.append("    changed its folder at import: " + terminal(", ".join(report.written)))
    if report.clean:
        parts.append("    no side effects: printed nothing, wrote nothing in its folder")
    parts += [tiny_call_text(call) for call in report.calls]
    parts.append(f"    (isolation: {report.isolation})")
    return "\n".join(parts)


def tiny_call_text(call: dict) -> str:
    """``tiny call of flash_attention_fwd (case b2-h3-n128-d32-t32-causal): answered in 0.04 s``, or why not."""
    head = f"    tiny call of {', '.join(call['entries'])}" + (f" (case {call['case']})" if call["case"] else "")
    if call["status"] == "ok":
        return f"{head}: answered in {call['seconds']:.2f} s (not judged: the grading run does that)"
    if call["status"] == "not tried":
        return f"{head}: not tried: {terminal(call['message'])}"
    if call["status"] == "timeout":
        return f"{head}: HANGS: {terminal(call['message'])}"
    verdict = "FAILED" if call["status"] in ("crash", "oom") else "answered with an error"
    return f"{head}: {verdict} ({call['status']}) after {call['seconds']:.2f} s: {_cut(terminal(call['message']))}"


def _cut(line: str) -> str:
    return line if len(line) <= MAX_LINE_CHARS else f"{line[:MAX_LINE_CHARS]}[... {len(line) - MAX_LINE_CHARS} chars]"


def summary_text(results: list[FolderCheck]) -> str:
    ready = sum(r.ok for r in results)
    return f"{ready} of {len(results)} challenge folder{'s' if len(results) != 1 else ''} ready"

"""Adapter skeletons: ``adapter.py`` (or ``adapter.cu``) text that maps what a folder defines onto the contract.

An adapter wins for every entry point (``plugins/discover/entry_points.py``), so a new ``adapter.py`` re-exports the
entry points that were found natively and defines each missing one with the contract's exact parameters (from
``signatures.py``), calling the nearest candidate (``nearmiss.py``). A call whose mapping is a guess carries a ``TODO``
comment naming the candidate's own signature. An existing adapter gets only the lines to add.
"""

from __future__ import annotations

import keyword
import re
import textwrap
from pathlib import PurePosixPath

from plugins.cli.nearmiss import Definition, NearMiss
from plugins.cli.signatures import Signature, c_param_types, param_list

WIDTH = 116  # comment lines of the skeleton, so the file it becomes passes the 120-column lint


def _comment(text: str, indent: str, marker: str = "#") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=f"{indent}{marker} ", subsequent_indent=f"{indent}{marker} ")


def _module(rel: str) -> str | None:
    """The dotted module name of a file relative to the folder top, or None when a part is not an identifier."""
    parts = PurePosixPath(rel).with_suffix("").parts
    if all(p.isidentifier() and not keyword.iskeyword(p) for p in parts):
        return ".".join(parts)
    return None


_LOADER_IMPORTS = "import importlib.util\nfrom pathlib import Path"
_LOADER = '''def _load(relpath):
    """A module by its file path (its name is not an importable identifier)."""
    spec = importlib.util.spec_from_file_location(Path(relpath).stem.replace("-", "_"), Path(__file__).parent / relpath)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module'''


class _Imports:
    """The skeleton's imports: one ``from module import ...`` line per module (sorted as isort would), re-exports of
    entry points found natively marked so a linter does not call them unused."""

    def __init__(self) -> None:
        self.modules: dict[str, set[str]] = {}
        self.reexported: set[str] = set()
        self.loaded: list[str] = []  # files whose names are not importable identifiers, loaded by path

    def name(self, rel: str, name: str, alias: str = "", reexport: bool = False) -> str:
        """Make ``name`` from file ``rel`` available; returns the name to use in code."""
        local = alias or name
        module = _module(rel)
        if module is None:
            line = f"{local} = _load({rel!r}).{name}"
            if line not in self.loaded:
                self.loaded.append(line)
            return local
        self.modules.setdefault(module, set()).add(name if local == name else f"{name} as {local}")
        if reexport:
            self.reexported.add(module)
        return local

    def header(self) -> str:
        lines = []
        for module in sorted(self.modules):
            names = ", ".join(sorted(self.modules[module], key=_isort_key))
            note = "  # noqa: F401 - re-exported" if module in self.reexported else ""
            lines.append(f"from {module} import {names}{note}")
        if not self.loaded:
            return "\n".join(lines)
        blocks = [_LOADER_IMPORTS, "\n".join(lines)] if lines else [_LOADER_IMPORTS]
        return "\n\n".join(blocks) + "\n\n\n" + _LOADER + "\n\n\n" + "\n".join(self.loaded)


def _isort_key(name: str) -> tuple[int, str]:
    """isort's order by type: CONSTANTS, then Classes, then functions."""
    bare = name.split(" as ")[0]
    return (0 if bare.isupper() else 1 if bare[:1].isupper() else 2, bare)


def _params(definition: Definition) -> list[str]:
    """A Python candidate's parameter names, without ``self``/``cls`` (read back from its signature text)."""
    names = []
    for part in param_list(definition.signature).split(","):
        name = part.split("=")[0].split(":")[0].strip().lstrip("*")
        if name and name not in ("self", "cls", "/"):
            names.append(name)
    return names


def _python_body(sig: Signature, best: NearMiss | None, imports: _Imports) -> list[str]:
    args = ", ".join(sig.arg_names())
    lines = _comment(f"contract: {sig.line}", "    ")
    if best is None:
        todo = f"TODO: nothing in this folder looks like {sig.name}; write it here, or import what does it"
        lines += _comment(todo, "    ")
        return [*lines, f"    raise NotImplementedError({sig.name!r})"]
    d = best.definition
    if d.kind == "method":
        cls, method = d.name.split(".", 1)
        local = imports.name(d.file, cls)
        call = f"{local}()({args})" if method == "__call__" else f"{local}().{method}({args})"
        note = (
            f"TODO: a guess: {d.file} defines {d.signature}, a method of class {cls}: construct {cls} as its "
            "__init__ requires, and check the arguments and the result against the contract"
        )
    elif d.kind == "class":
        local = imports.name(d.file, d.name)
        call = f"{local}({args})"
        note = f"TODO: a guess: {d.file} defines {d.signature}; call whatever of it does {sig.name}"
    else:
        local = imports.name(d.file, d.name)
        call = f"{local}({args})"
        if _params(d) == sig.arg_names():
            note = f"{d.file} defines {d.signature}: the contract's parameters; check the result"
        else:
            note = (
                f"TODO: a guess: {d.file} defines {d.signature}; check the arguments' order and meaning, and that "
                "the result is what the contract says"
            )
    return [*lines, *_comment(note, "    "), f"    return {call}"]


def python_adapter(
    challenge: str,
    found: list[tuple[str, str, str]],
    missing: list[tuple[Signature, NearMiss | None]],
    existing: bool,
) -> str:
    """``adapter.py`` text: ``found`` is (entry point, file, the name that file defines for it), ``missing`` the
    contract signature and nearest candidate of each entry point no file provides. With ``existing``, only what to add
    to the folder's adapter."""
    imports = _Imports()
    if not existing:
        for entry, file, spelling in found:
            imports.name(file, spelling, alias=entry, reexport=True)
    functions = []
    for sig, best in missing:
        body = _python_body(sig, best, imports)
        functions.append("\n".join([f"def {sig.name}({sig.params}):", *body]))
    if existing:
        intro = f"# Add to adapter.py ({challenge}): the entry points it does not define yet."
    else:
        intro = (
            f'"""adapter.py for {challenge}: the names the grader calls, mapped onto this folder\'s code (a skeleton\n'
            "from kernelgrade check: resolve each TODO). An adapter.py wins for every entry point, so the ones found\n"
            'natively are imported here too."""'
        )
    head = "\n\n".join(p for p in (intro, imports.header()) if p)
    return "\n\n\n".join([head, *functions]).rstrip() + "\n"


def cuda_adapter(challenge: str, sig: Signature, best: NearMiss | None, sources: list[str]) -> str:
    """``adapter.cu`` text for a CUDA entry point: includes the submission's source and defines the contract's C
    function, calling the nearest candidate: a host function, or a ``__global__`` kernel launched on ``stream``. When
    the candidate's parameter types are the contract's (the stream left out for a kernel), the arguments are filled
    in; otherwise they are a TODO."""
    include = best.definition.file if best else (sources[0] if sources else "YOUR_SOURCE.cu")
    lines = [
        f"// adapter.cu for {challenge}: the contract's C entry point on top of this folder's code (a skeleton from",
        "// kernelgrade check: resolve each TODO). The grader compiles this file alone, so it includes the source.",
        f'#include "{include}"',
        "",
        f'extern "C" {sig.returns} {sig.name}({sig.params}) {{',
    ]
    names = re.findall(r"(\w+)\s*(?:,|$)", sig.params)  # the contract's parameter names, in order
    types = c_param_types(sig.params)
    if best is None:
        lines += _comment("TODO: nothing in this folder looks like the entry point; launch the kernel here", "  ", "//")
        lines.append("  return (int)cudaErrorNotSupported;")
        return "\n".join([*lines, "}"]) + "\n"
    d = best.definition
    found = c_param_types(param_list(d.signature))
    where = f"{d.file} line {d.line} defines {d.signature}"
    if d.kind == "kernel":
        kept = [(n, t) for n, t in zip(names, types, strict=False) if t != "cudaStream_t"]
        same = found == [t for _, t in kept]
        args = ", ".join(n for n, _ in kept) if same else "/* TODO: arguments */"
        todo = "choose the grid and block size" + ("" if same else ", and map the arguments")
        lines += _comment(f"TODO: a guess: {where}; {todo}", "  ", "//")
        lines.append(f"  {d.name}<<<rows, 256, 0, stream>>>({args});")
    elif found == types:
        lines += _comment(f"{where}: the contract's parameter types; check that it returns 0 on success", "  ", "//")
        call = f"{d.name}({', '.join(names)})"
        lines.append(f"  return {call};" if d.signature.split("(")[0].split()[:1] == ["int"] else f"  {call};")
    else:
        note = f"TODO: a guess: {where}; map the arguments, and make it queue its work on `stream`"
        lines += _comment(note, "  ", "//")
        lines.append(f"  {d.name}(/* TODO: arguments */);")
    if not lines[-1].lstrip().startswith("return"):
        lines.append("  return (int)cudaGetLastError();  // 0 when the work was queued")
    return "\n".join([*lines, "}"]) + "\n"


def spelling(defined: set[str], entry: str, aliases: tuple[str, ...]) -> str:
    """The name a file defines for an entry point: the contract's own, else the first accepted alias it defines."""
    return next((name for name in (entry, *aliases) if name in defined), entry)

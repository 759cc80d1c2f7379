"""What a folder defines instead of the contract's names: functions, classes and methods read from the source (``ast``
for Python, a light C reader for CUDA), never imported, and scored by how much their names look like an entry point.

Similarity works on canonical name tokens: ``camelCase`` and ``snake_case`` are split, compounds and abbreviations are
spelled out (``layernorm`` and ``ln`` are ``layer norm``, ``bwd`` is ``backward``, ``attn`` is ``attention``), and the
score is the larger of the tokens' overlap (Jaccard) and ``difflib``'s ratio of the joined tokens, case-insensitive.
A method counts with its class's tokens, so ``FlashAttention.forward`` matches ``flash_attention_fwd``.
"""

from __future__ import annotations

import ast
import difflib
import re
from dataclasses import dataclass
from pathlib import Path

from plugins.discover.entry_points import C_COMMENT, Unreadable, looks_like_test, python_files, read_source

THRESHOLD = 0.6  # below this a name is unrelated ("main", "helper", "forward" against flash_attention_fwd)
MAX_SHOWN = 3
CUDA_SUFFIXES = (".cu", ".cuh", ".h", ".hpp", ".cpp")
_SPELLED = {
    "bwd": ("backward",),
    "bw": ("backward",),
    "back": ("backward",),
    "fwd": ("forward",),
    "fw": ("forward",),
    "attn": ("attention",),
    "layernorm": ("layer", "norm"),
    "ln": ("layer", "norm"),
    "topk": ("top", "k"),
    "kvcache": ("kv", "cache"),
    "beamsearch": ("beam", "search"),
    "softmaxtopk": ("softmax", "top", "k"),
    "quantize": ("ternarize",),
    "quant": ("ternarize",),
    "fn": (),
    "func": (),
    "impl": (),
}


@dataclass(frozen=True)
class Definition:
    """A function, class or method a submission file defines: ``name`` as code reaches it (``Cls.method`` for a
    method), its ``signature`` text, and ``kind``: function, class, method, or for C: host, kernel, extern-c."""

    file: str
    name: str
    signature: str
    kind: str
    line: int

    @property
    def in_test(self) -> bool:
        return looks_like_test(Path(self.file))


@dataclass(frozen=True)
class NearMiss:
    definition: Definition
    score: float


def tokens(name: str) -> tuple[str, ...]:
    """Canonical lower-case tokens of an identifier (see the module docstring)."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1_\2", name))
    out: list[str] = []
    for word in re.split(r"[^A-Za-z0-9]+", words.lower()):
        if word:
            out.extend(_SPELLED.get(word, (word,)))
    return tuple(out)


def similarity(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if not ta or not tb:
        return 0.0
    jaccard = len(set(ta) & set(tb)) / len(set(ta) | set(tb))
    ratio = difflib.SequenceMatcher(None, "".join(ta), "".join(tb)).ratio()
    return max(jaccard, ratio)


def python_definitions(folder: Path) -> list[Definition]:
    """Top-level functions and classes of every Python file, and the public methods of each class (``__call__``
    included), with their signatures from the AST. Files that do not parse are skipped (discovery reports them)."""
    found: list[Definition] = []
    for rel in python_files(folder):
        try:
            tree = ast.parse(read_source(folder / rel), filename=str(rel))
        except (Unreadable, SyntaxError, ValueError, RecursionError, MemoryError):
            continue
        file = rel.as_posix()
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found.append(Definition(file, node.name, _def_text(node.name, node), "function", node.lineno))
            elif isinstance(node, ast.ClassDef):
                found.append(Definition(file, node.name, _class_text(node), "class", node.lineno))
                for item in node.body:
                    if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and _public_method(item.name):
                        name = f"{node.name}.{item.name}"
                        found.append(Definition(file, name, _def_text(name, item), "method", item.lineno))
    return found


def _public_method(name: str) -> bool:
    return name == "__call__" or not name.startswith("_")


def _def_text(name: str, node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    returns = f" -> {ast.unparse(node.returns)}" if node.returns else ""
    return f"{name}({ast.unparse(node.args)}){returns}"


def _class_text(node: ast.ClassDef) -> str:
    init = next((n for n in node.body if isinstance(n, ast.FunctionDef) and n.name == "__init__"), None)
    return f"class {node.name}({ast.unparse(init.args) if init else ''})"


_C_STRING = re.compile(r'"(?:[^"\\\n]|\\.)*"')
_C_ATTRIBUTE = re.compile(r"__launch_bounds__\s*\([^()]*\)|__attribute__\s*\(\([^()]*(?:\([^()]*\))*[^()]*\)\)")
_C_KEYWORDS = {"if", "for", "while", "switch", "return", "catch", "sizeof", "else", "do", "defined"}
_C_FUNCTION = re.compile(
    r"(?P<prefix>(?:[A-Za-z_][\w:<>,]*[\s*&]+)+?)(?P<name>[A-Za-z_]\w*)\s*"
    r"\((?P<params>[^;{}()]*(?:\([^()]*\)[^;{}()]*)*)\)\s*(?:const\s*)?(?:noexcept\s*)?\{"
)


def c_definitions(folder: Path) -> list[Definition]:
    """Function definitions in the folder's CUDA/C++ sources, each marked ``extern-c`` (C linkage: after ``extern "C"``
    or inside an ``extern "C" { }`` block), ``kernel`` (``__global__``) or ``host``. Read as text with comments
    removed; a definition made by a macro is not seen (as in discovery)."""
    found: list[Definition] = []
    for suffix in CUDA_SUFFIXES:
        for rel in python_files(folder, suffix):
            try:
                raw = read_source(folder / rel).decode(errors="replace")
            except Unreadable:
                continue
            found.extend(_c_functions(rel.as_posix(), raw))
    return found


def _c_functions(file: str, raw: str) -> list[Definition]:
    # Comments and string literals blanked to spaces (keeping offsets), so neither can fake a definition.
    text = C_COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), raw)
    text = _C_ATTRIBUTE.sub(lambda m: " " * len(m.group(0)), text)
    text = re.sub(r"(?m)^[ \t]*#.*$", lambda m: " " * len(m.group(0)), text)  # preprocessor lines
    extern_c = _extern_c_blocks(text)
    text_no_strings = _C_STRING.sub(lambda m: '"C"' if m.group(0) == '"C"' else " " * len(m.group(0)), text)
    out = []
    for match in _C_FUNCTION.finditer(text_no_strings):
        name, prefix = match.group("name"), " ".join(match.group("prefix").split())
        if name in _C_KEYWORDS or prefix.split()[-1:] in (["return"], ["else"]) or "=" in prefix:
            continue
        start = match.start("name")
        line = text.count("\n", 0, start) + 1
        preceding = text_no_strings[max(0, match.start() - 12) : match.start()]
        if any(a <= start < b for a, b in extern_c) or re.search(r'extern\s+"C"\s*$', preceding):
            kind = "extern-c"
        elif "__global__" in prefix:
            kind = "kernel"
        elif "__device__" in prefix and "__host__" not in prefix:
            kind = "device"
        else:
            kind = "host"
        prefix = re.sub(r'^.*extern\s+"C"\s*', "", prefix)
        params = " ".join(match.group("params").split())
        out.append(Definition(file, name, f"{prefix} {name}({params})".strip(), kind, line))
    return out


def _extern_c_blocks(text: str) -> list[tuple[int, int]]:
    spans = []
    for match in re.finditer(r'extern\s+"C"\s*\{', text):
        depth, i = 1, match.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((match.end(), i))
    return spans


def near_misses(entry: str, definitions: list[Definition], exclude: set[str] = frozenset()) -> list[NearMiss]:
    """The definitions most like ``entry``, best first: score, then code before the model's tests, host code before
    kernels, functions and methods before classes, then shallower files; names in ``exclude`` (the contract's other
    entry points) are left out."""
    scored = [NearMiss(d, round(similarity(entry, d.name), 2)) for d in definitions if d.name not in exclude]
    good = [m for m in scored if m.score >= THRESHOLD]
    good.sort(key=lambda m: (-m.score, *_rank(m.definition)))
    return good[:MAX_SHOWN]


def _rank(d: Definition) -> tuple[bool, bool, bool, int]:
    return d.in_test, d.kind in ("kernel", "device"), d.kind == "class", d.file.count("/")

"""The contract's signature of each entry point, as its contract module states it (data, one source).

- Python entry points: the module's ``SIGNATURES``, ``{entry point: "name(args) -> returns"}`` (e.g.
  ``flash_attention_fwd(Q, K, V, tile_size, causal=True) -> O``); ``name(*args)`` for one it does not state.
- CUDA entry points: the module's ``C_SIGNATURES`` (the declaration the CUDA loader passes arguments by).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

from reference.challenges import reference_module

_OPEN, _CLOSE = "([{", ")]}"


@dataclass(frozen=True)
class Signature:
    """One entry point as the contract states it: ``params`` is a Python (or C) parameter list, ``returns`` the
    contract's words for the result, ``line`` the whole contract line."""

    name: str
    params: str
    returns: str
    line: str

    def arg_names(self) -> list[str]:
        """The parameter names in order (``causal=True`` gives ``causal``)."""
        try:
            args = ast.parse(f"def f({self.params}): pass").body[0].args
        except SyntaxError:
            return []
        return [a.arg for a in (*args.posonlyargs, *args.args)]


def _balanced(text: str, start: int) -> int:
    """The index just past the bracket group opening at ``text[start]``, or -1."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] in _OPEN:
            depth += 1
        elif text[i] in _CLOSE:
            depth -= 1
            if depth == 0:
                return i + 1
    return -1


def parse_line(line: str, name: str) -> Signature | None:
    """A contract line ``name(params) -> returns`` as a :class:`Signature`; None when it does not start with
    ``name(`` and close its bracket."""
    match = re.match(rf"\s*{re.escape(name)}\(", line)
    end = _balanced(line, match.end() - 1) if match else -1
    if not match or end < 0:
        return None
    params = " ".join(line[match.end() : end - 1].split())
    arrow = re.match(r"\s*->", line[end:])
    returns = " ".join(line[end + arrow.end() :].split()) if arrow else ""
    return Signature(name, params, returns, f"{name}({params})" + (f" -> {returns}" if returns else ""))


def python_signature(challenge_id: str, name: str) -> Signature:
    """The contract's signature of a Python entry point, from its module's ``SIGNATURES``; ``name(*args)`` when the
    module states none (or a line that does not parse)."""
    line = getattr(reference_module(challenge_id), "SIGNATURES", {}).get(name, "")
    found = parse_line(line, name)
    return found or Signature(name, "*args", "", f"{name}(*args)")


def c_signature(challenge_id: str, name: str) -> Signature | None:
    """The C declaration of a CUDA entry point, from the reference's ``C_SIGNATURES`` (``int f(const float* x)``)."""
    module = reference_module(challenge_id)
    declaration = getattr(module, "C_SIGNATURES", {}).get(name) if module else None
    if not declaration:
        return None
    match = re.match(r"\s*(.*?)\b" + re.escape(name) + r"\s*\((.*)\)\s*$", declaration, re.DOTALL)
    if not match:
        return None
    params = " ".join(match.group(2).split())
    return Signature(name, params, match.group(1).strip(), " ".join(declaration.split()))


def param_list(signature: str) -> str:
    """The parameter list of a signature as written (``f(a, b=(1, 2)) -> int`` gives ``a, b=(1, 2)``): the text
    between the first ``(`` and the last ``)``."""
    return signature.split("(", 1)[1].rsplit(")", 1)[0]


def c_param_types(params: str) -> list[str]:
    """Parameter types of a C parameter list with the names dropped: ``const float* x, int n`` -> ``[const float*,
    int]`` (spacing normalised, so ``float *x`` and ``float* x`` compare equal)."""
    types = []
    for part in (p.strip() for p in params.split(",")):
        if not part or part == "void":
            continue
        part = re.sub(r"\b(?:__restrict__|__restrict|restrict)\b", " ", part)
        part = re.sub(r"\s*\*\s*", "* ", part).strip()
        part = re.sub(r"\s*\[\s*\w*\s*\]$", "*", part)  # float x[] is float*
        tokens = part.split()
        if len(tokens) > 1 and re.fullmatch(r"\w+", tokens[-1]) and tokens[-1] not in _C_TYPE_WORDS:
            tokens = tokens[:-1]
        types.append(" ".join(tokens).replace("* ", "*").replace(" *", "*").strip())
    return types


_C_TYPE_WORDS = {"int", "float", "double", "char", "long", "short", "unsigned", "signed", "bool", "void", "size_t"}

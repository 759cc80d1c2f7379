"""The shapes every challenge's reference module is written in.

A challenge's reference module (``reference/<id>.py``) is its contract. It exposes, at module level:

- ``CHALLENGE``: a :class:`Challenge` naming the id, the folder names accepted for it and the entry points.
- ``CASES``: a tuple of :class:`Case`, each with a readable id, a rubric category and the trap it guards against.
- ``make_inputs(case, rng) -> dict[str, np.ndarray]``: fresh random inputs (runs in the grader).
- ``expected(case, inputs) -> Expected``: the float64 truth and the bound for each output (runs in the grader).
- ``drive(run, inputs, params) -> dict``: calls the submission's entry points; runs *inside the sandbox child*, so it
  imports nothing beyond NumPy and the standard library and receives the submission's functions through ``run``.
  Nothing it computes is trusted for a verdict (the submission can reach and patch it).

Optional, for figures the grader measures itself (run in the grader):

- ``child_inputs(case, inputs) -> dict``: the inputs that cross to the child (default: all of them).
- ``services(case, inputs) -> {name: function}``: grader functions (arrays -> arrays) the driver calls during a request
  through ``run.service(name, arrays)``, such as a served model; the grader counts the calls per name.
- ``measured_figures(case, service_calls, checkpoints) -> (figures, details)``: figures from the grader's own record of
  a request (calls per service; the child tree's memory at each ``run.checkpoint(label)`` as ``{"label", "bytes"}``),
  checked like outputs under ``Expected.bounds``.

The grader compares every output named in ``Expected.values`` with the one comparator, applies the memory budget and
times speed cases; a reference module holds no checking code of its own.

This module imports nothing but the standard library because the sandbox child loads it before any submission code.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Rubric categories, in the order reports list them.
CATEGORIES = ("core", "edge", "precision", "memory", "speed", "robustness")

# Where a checked property comes from. "task": the task as the models were given it states it. "added": we check it
# though the task never stated it (dtype preservation, strided inputs, extreme inputs beyond the task's range).
ORIGINS = ("task", "added")
# A rule the task never stated may cost a submission at most this category's points, never a core, edge or precision
# point (Case refuses anything else).
ADDED_CATEGORY = "robustness"


@dataclass(frozen=True)
class Challenge:
    """One challenge: its id (used in reports, ``reference/<id>.py`` and ``tests/``) and how submissions meet it."""

    id: str
    title: str
    folder_names: tuple[str, ...]  # accepted names of ``submissions/<model>/<folder>/``: the id and scaffold aliases
    entry_points: tuple[str, ...] = ()  # empty while the challenge has no contract in this grader yet
    # How the sandbox child loads a submission: "python" imports its files; other runtimes (a CUDA build, torch on the
    # GPU, MLX) each have a loader in plugins/isolate/loaders/<runtime>.py beside the Python one.
    runtime: str = "python"
    # Accepted spellings of an entry point, found without an adapter: {"layer_norm_forward": ("layernorm_forward",)}.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    """One hidden input configuration.

    ``params`` holds only JSON values (it travels to the sandbox child); ``guards`` names the trap or property the case
    exists for, so a report can say which traps a submission fell into. ``origin`` (see ORIGINS) says whether the task
    states that property or we added it; an added one must be a robustness case.
    """

    id: str
    category: str
    guards: str
    params: Mapping[str, Any]
    origin: str = "task"
    rules: tuple[str, ...] = ()  # named rules beyond the challenge's core maths (the module's RULES says each)

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"case {self.id}: unknown category {self.category!r}")
        if self.origin not in ORIGINS:
            raise ValueError(f"case {self.id}: unknown origin {self.origin!r}")
        if self.origin == "added" and self.category != ADDED_CATEGORY:
            raise ValueError(
                f"case {self.id}: a property the task never stated can only be a {ADDED_CATEGORY} case, "
                f"not {self.category!r}"
            )

    @property
    def is_speed(self) -> bool:
        return self.category == "speed"


@dataclass(frozen=True)
class Tolerance:
    """The error bound for one float output, as data with its reason.

    An element passes when ``|got - want| <= atol + rtol * |want|`` where
    ``atol = max(atol_floor * scale, baseline_factor * baseline_error)``: ``scale`` is ``max(1, max|want|)`` so the
    floor follows the output's magnitude, and ``baseline_error`` is the max error of a straightforward implementation in
    the input's own precision, measured on the same input against the same float64 truth (the rule flash-attention's
    own tests use: the code under test may be a small factor worse than a same-precision baseline, never more).
    """

    atol_floor: float
    rtol: float
    baseline_factor: float
    reason: str


@dataclass(frozen=True)
class Bound:
    """A resolved bound for one output of one case (what the comparator applies)."""

    atol: float
    rtol: float
    dtype: str | None  # the dtype the output must have; None accepts any floating dtype


@dataclass(frozen=True)
class Exact:
    """A discrete output (token ids, indices, ternary codes, counts) that must equal the truth element for element.

    ``unit`` names what one row along axis 0 stands for ("configuration", "row"): a failure then says how many rows
    matched ("31/240 configurations matched") besides the first mismatching elements. Any integer or boolean dtype is
    accepted; floats must hold whole numbers.
    """

    unit: str = ""


@dataclass(frozen=True)
class TopK:
    """Top-k indices per row, exact up to ties; the truth is the row's scores (rows, V), whose order is the one asked.

    Tie rule: with ``s_k`` the k-th largest score of a row, a returned row of k indices passes when they are distinct,
    within ``[0, V)``, include every index whose score is above ``s_k``, take the rest from those equal to ``s_k`` (any
    of them), and list their scores in non-increasing order (tied scores in any order).
    """

    unit: str = "row"


@dataclass(frozen=True)
class AtMost:
    """A measured figure (forwards per call, bytes per token, bits per byte) that must not exceed ``limit``; ``what``
    says what the figure is and why the limit is what it is. The grader measures it (``measured_figures``) or derives
    it from outputs (``Expected.derive``); a figure computed in the child is never trusted."""

    limit: float
    what: str


@dataclass(frozen=True)
class Expected:
    """What the grader keeps secret from the submission: float64 truths and their bounds, one per output name."""

    values: Mapping[str, Any]  # name -> np.ndarray (float64 for a Bound, integers for Exact, unused for AtMost)
    bounds: Mapping[str, Bound | Exact | AtMost]
    extra: Mapping[str, Any] = field(default_factory=dict)  # e.g. the memory budget in bytes
    # Figures the grader computes itself, in its own process, from what the submission returned (held-out loss of
    # returned weights, say, on data that never entered the child): ``derive(outputs) -> (figures, details)``. The
    # figures join the outputs and are checked like them (under ``bounds``); ``details`` (plain JSON values: tables,
    # samples) go into the case record for reports and are never scored. It must not raise on malformed outputs.
    derive: Callable[[Mapping[str, Any]], tuple[dict[str, Any], dict[str, Any]]] | None = None


class ContractError(Exception):
    """The submission ran but broke the contract (wrong output type, too few outputs, modified its inputs)."""

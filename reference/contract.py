"""The shapes every challenge's reference module is written in.

A challenge's reference module (``reference/<id>.py``) is its contract. It exposes, at module level:

- ``CHALLENGE``: a :class:`Challenge` naming the id, the folder names accepted for it and the entry points.
- ``SIGNATURES``: ``{entry point: its contract line}``, ``name(args) -> returns`` as prompts, skeletons and
  ``kernelgrade check`` show it, for every entry point of every contract variant that Python code answers (a CUDA C++
  entry point has its ``extern "C"`` declaration in ``C_SIGNATURES`` instead).
- ``CASES``: a tuple of :class:`Case`, each with a readable id, a rubric category and the trap it guards against.
- ``RULES``: ``{rule name: one line saying what the rule is}``, beside the case table: the rules beyond the
  challenge's core maths that its cases depend on (``Case.rules``). A task profile (``reference/tasks/``) says which
  of them the prompt a model was given states; a case that depends on an unstated one is "beyond the task".
- ``SETTINGS`` (optional): ``{name: Setting}``, values a task profile may set for the challenge; the grader hands
  them to the module in ``case.params`` (``expected`` and ``drive`` read ``case.params[name]`` / ``params[name]``).
- ``make_inputs(case, rng) -> dict[str, np.ndarray]``: fresh random inputs (runs in the grader).
- ``expected(case, inputs) -> Expected``: the float64 truth and the bound for each output (runs in the grader).
- ``drive(run, inputs, params) -> dict``: calls the submission's entry points; runs *inside the sandbox child*, so it
  imports nothing beyond NumPy and the standard library and receives the submission's functions through ``run``.
  Nothing it computes is trusted for a verdict (the submission can reach and patch it).
- ``SPEED_BASELINE`` (with speed cases timed against NumPy): ``{entry point: name of this module's function}``, what
  a speed case's submission is timed against (in a child of its own, beside the submission's). A module whose child
  times its own baselines (``speed_baselines``, as the CUDA loader does) has none.

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

import functools
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Rubric categories, in the order reports list them.
CATEGORIES = ("core", "edge", "precision", "memory", "speed", "robustness")

# Where a checked property comes from, as case records say it: "task" (the prompt the model was given states every rule
# the case depends on) or "added" (the case depends on a rule that prompt never stated: "beyond the task").
ORIGINS = ("task", "added")
# A rule's name: lower-case words joined by hyphens (``tie-order``, ``float32-stays-float32``).
RULE_NAME = re.compile(r"[a-z0-9]+(-[a-z0-9]+)*")


@dataclass(frozen=True)
class Challenge:
    """One challenge: its id (used in reports, ``reference/<id>.py`` and ``tests/``) and how submissions meet it."""

    id: str
    title: str
    folder_names: tuple[str, ...]  # accepted names of ``submissions/<model>/<folder>/``: the id and scaffold aliases
    entry_points: tuple[str, ...] = ()  # empty while the challenge has no contract in this grader yet
    # The runtimes a submission may be written for (plugins/isolate/runtimes/), in order of preference: "python"
    # imports its files and calls them on NumPy arrays; "cuda" builds a .cu source and calls its C functions on device
    # buffers; "triton" calls a Python function on torch CUDA tensors. A folder is graded in the first runtime whose
    # source files it holds.
    runtimes: tuple[str, ...] = ("python",)
    # Accepted spellings of an entry point, found without an adapter: {"layer_norm_forward": ("layernorm_forward",)}.
    aliases: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Contract variants: variant name -> its entry points, the first the default. Empty: one contract, entry_points.
    # Only the KV cache has variants ("grader-model", "own-model"); a task profile says which one a model answered.
    contracts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @property
    def default_contract(self) -> str:
        """The variant used where no task profile names one: the first of ``contracts``, or "" with none."""
        return next(iter(self.contracts), "")

    def entry_points_of(self, contract: str = "") -> tuple[str, ...]:
        """The entry points of a contract variant ("" is the default one); ``entry_points`` without variants."""
        if not self.contracts:
            return self.entry_points
        return self.contracts[contract or self.default_contract]


@dataclass(frozen=True)
class Case:
    """One hidden input configuration.

    ``params`` holds only JSON values (it travels to the sandbox child); ``guards`` names the trap or property the case
    exists for, so a report can say which traps a submission fell into. ``category`` is the case's category under our
    own prompts (the ``kernelgrade`` task profile).

    ``rules`` names the rules beyond the challenge's core maths that the case depends on (each defined in its module's
    ``RULES``): keeping float32 as float32, an order among equal scores, an acceptance rule. Under a task profile that
    does not state all of them the case is "beyond the task": it still runs and is shown as such, but is not scored (a
    rule the prompt did not state is no fault). ``contract`` names the contract variant the case belongs to ("" =
    every variant) and ``calls`` the entry points it calls (empty = every entry point of its variant), so that a
    missing entry point fails only the cases that call it.
    """

    id: str
    category: str
    guards: str
    params: Mapping[str, Any]
    rules: tuple[str, ...] = ()
    contract: str = ""
    calls: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.category not in CATEGORIES:
            raise ValueError(f"case {self.id}: unknown category {self.category!r}")
        for name, names in (("rules", self.rules), ("calls", self.calls)):
            if not isinstance(names, tuple) or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"case {self.id}: {name} must be a tuple of names, got {names!r}")
        bad = [r for r in self.rules if not RULE_NAME.fullmatch(r)]
        if bad:
            raise ValueError(f"case {self.id}: rule names are lower-case words joined by hyphens, not {bad}")
        if not isinstance(self.contract, str):
            raise ValueError(f"case {self.id}: contract must be a variant's name, got {self.contract!r}")

    @property
    def is_speed(self) -> bool:
        return self.category == "speed"


@dataclass(frozen=True)
class Setting:
    """A value a task profile may set for one challenge (``reference/tasks/*.toml``); the module reads it from
    ``case.params[name]``. ``choices`` lists the values allowed (empty: any value of the default's type)."""

    default: Any
    what: str
    choices: tuple[Any, ...] = ()


def governed_checks(rule_checks: Mapping[str, tuple[str, ...]], unstated: Iterable[str]) -> frozenset[str] | None:
    """The checks (``Expected.values`` names) that rules a task profile does not state govern, from a module's
    ``RULE_CHECKS`` (rule -> the checks it decides); None when one of them governs the whole case (no entry: the
    default). The rest of such a case's checks are the task's: it is graded on those, the others are notes."""
    governed: set[str] = set()
    for rule in unstated:
        if rule not in rule_checks:
            return None
        governed |= set(rule_checks[rule])
    return frozenset(governed)


def undefined_rules(cases: Iterable[Case], rules: Mapping[str, str]) -> dict[str, list[str]]:
    """``{case id: [rules it names that RULES does not define]}`` for the cases that name any (empty when all are
    defined): a module's case table and its ``RULES`` must agree."""
    return {c.id: bad for c in cases if (bad := [r for r in c.rules if r not in rules])}


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
class Verified:
    """A property the grader verifies itself, by recomputation in its own process (``Expected.derive``), one row per
    ``unit``: the derived figure is a sequence of reasons, "" where the row holds and otherwise what is wrong with it
    in words ("accepted token 2 (id 17) is not the target's greedy token 5"). It passes when every row holds.

    For outputs with more than one right answer (beams of equal score, an acceptance rule that allows more than it
    guarantees): the grader checks the property every right answer has instead of one answer's exact values.
    """

    unit: str = "configuration"


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


def copied_bytes(inputs: Mapping[str, Any]) -> int:
    """The bytes of the device copy a GPU runtime times beside the kernel, the bandwidth behind the read-once floor:
    the child copies its largest input (``plugins/isolate/runtimes/cuda.py`` and ``triton.py``)."""
    return max(int(a.nbytes) for a in inputs.values())


def read_once_floor(copy_times: Sequence[float], copied_bytes: int, read_bytes: int) -> float:
    """Seconds to read ``read_bytes`` once at the device's copy bandwidth measured in the same run: a copy of
    ``copied_bytes`` reads and writes each byte once, so the bandwidth is 2 * copied_bytes / median(copy time)."""
    return read_bytes * statistics.median(copy_times) / (2 * copied_bytes)


def read_once_check(read_bytes: int, copied_bytes: int) -> Callable[[Mapping[str, Any]], tuple[dict, dict]]:
    """``Expected.derive`` for a GPU speed case: ``floor_over_time``, the read-once floor over the submission's median
    time, recomputed in the grader from the raw times the child returned (``time_copy``, ``time_submission``) and the
    sizes the grader knows; absent when those times are missing or unusable, and then the check fails as missing
    (the judge never takes a figure of that name from the child)."""
    return functools.partial(_floor_over_time, read_bytes, copied_bytes)


def _floor_over_time(read_bytes: int, copied_bytes: int, outputs: Mapping[str, Any]) -> tuple[dict, dict]:
    try:
        copy = [float(t) for t in outputs["time_copy"]]
        mine = statistics.median(float(t) for t in outputs["time_submission"])
        return {"floor_over_time": read_once_floor(copy, copied_bytes, read_bytes) / mine}, {}
    except (KeyError, TypeError, ValueError, ZeroDivisionError, statistics.StatisticsError):
        return {}, {}


class ContractError(Exception):
    """The submission ran but broke the contract (wrong output type, too few outputs, modified its inputs)."""

"""Validation of the options that are read as text: numbers, ``--shard`` and ``--task``.

A value that breaks its rule is a ``pytest.UsageError`` (exit 4, one line naming the option and the rule); it never
touches the reports folder, which holds the last run that graded.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from reference.tasks import BUILT_IN

_SHARD_SHAPE = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")
MAX_SHARDS = 10_000  # far beyond any roster; a typo such as 1/30000000 must not build a plan that large
SHARD_WORDS = f"I/N, whole numbers with 1 <= I <= N <= {MAX_SHARDS} (shards count from 1: 1/3, 2/3, 3/3)"


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/3"`` -> ``(2, 3)``; raises ValueError for any other shape (the range is :func:`shard_in_range`)."""
    match = _SHARD_SHAPE.fullmatch(text)
    if not match:
        raise ValueError(f"not of the form {SHARD_WORDS}")
    return int(match.group(1)), int(match.group(2))


def shard_in_range(shard: tuple[int, int]) -> bool:
    index, count = shard
    return 1 <= index <= count <= MAX_SHARDS


# option -> (parse, rule it must meet, the rule in words); parse errors and broken rules are usage errors (exit 4).
_NUMBERS: dict[str, tuple[Callable[[str], Any], Callable[[Any], bool], str]] = {
    "call_timeout": (float, lambda v: math.isfinite(v) and v > 0, "a finite number of seconds > 0"),
    "memory_limit_mb": (int, lambda v: v > 0, "a whole number of MiB > 0"),
    "seed": (int, lambda v: v >= 0, "a whole number >= 0"),
    "speed_repeats": (int, lambda v: v >= 1, "a whole number >= 1"),
    "speed_max_trials": (int, lambda v: v >= 1, "a whole number >= 1"),
    "keep_runs": (int, lambda v: v >= 1, "a whole number >= 1"),
    "gpu_memory_fraction": (float, lambda v: math.isfinite(v) and 0 < v <= 1, "a number in (0, 1]"),
    "shard": (parse_shard, shard_in_range, SHARD_WORDS),
}


def checked_options(config: pytest.Config) -> dict[str, Any]:
    """The numeric options parsed and checked; a bad one raises a usage error that names it and the rule."""
    values: dict[str, Any] = {}
    for name, (parse, rule, words) in _NUMBERS.items():
        raw = getattr(config.option, name)
        if raw is None:
            values[name] = None
            continue
        try:
            value = parse(str(raw).strip())
            ok = rule(value)
        except (ValueError, OverflowError):
            ok = False
        if not ok:
            flag = "--" + name.replace("_", "-")
            raise pytest.UsageError(f"{flag}={raw}: must be {words}")
        values[name] = value
    return values


def task_option(value: str | None) -> str | None:
    """``--task`` as given for a built-in profile's name (or a name that is no file: the usage error then shows it as
    given), else the file's absolute path."""
    if value is None or value in BUILT_IN or not Path(value).expanduser().exists():
        return value
    return str(Path(value).expanduser().resolve())

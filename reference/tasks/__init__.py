"""Task profiles: what the prompts a model was given state, per challenge (``reference/tasks/<name>.toml``).

A case names the rules it depends on beyond its challenge's core maths (``Case.rules``, defined in the module's
``RULES``). A profile lists, per challenge, the rules its prompt set states, may name the contract variant the
submissions answer (``contract``, for a challenge with ``Challenge.contracts``) and may set the values a reference
module reads (its ``SETTINGS``). Under a profile, a case whose rules are not all stated is *beyond the task*: it runs,
is shown as such, and is scored as a robustness case; a case of another contract variant is not collected.

A profile file (TOML)::

    name = "my-prompts"                       # optional: the file's stem otherwise
    description = "the prompts of repo X"     # optional, one line
    [beam_search]                             # a challenge id; a challenge left out states none of its rules
    rules = ["tie-order"]
    [kv_cache]
    rules = []
    contract = "own-model"

or, to use a built-in profile by name (what ``kernelgrade new`` writes into a model folder)::

    task = "kernelgrade"

Built in: ``kernelgrade`` (our prompts, ``docs/challenges/<id>.md``; the default) and ``scaffold`` (the widely used
public prompts of the same challenges). Every error is a :class:`TaskError` with a one-line message: a profile
is checked strictly (unknown challenge, rule, key or value), since a typo would silently demote or promote cases.
"""

from __future__ import annotations

import functools
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from reference.challenges import all_challenges, reference_module
from reference.contract import Case, Setting

FOLDER = Path(__file__).resolve().parent
BUILT_IN = ("kernelgrade", "scaffold")
DEFAULT = "kernelgrade"
FILE_NAME = "kernelgrade-task.toml"  # a model folder's or a repo's own profile (or the name of a built-in one)
BUILT_IN_SOURCE = "built in"
_TOP_KEYS = ("name", "description")
_RESERVED = ("rules", "contract")


class TaskError(ValueError):
    """A profile that cannot be used: its message is one line naming the file (or name) and what is wrong."""


@dataclass(frozen=True)
class ChallengeTask:
    """What one profile says about one challenge: the rules its prompt states, the contract variant, the settings."""

    profile: str  # the profile's name
    source: str  # "built in", or the file it was read from
    rules: frozenset[str] = frozenset()
    contract: str = ""  # the variant the submissions answer ("" for a challenge with one contract)
    settings: tuple[tuple[str, Any], ...] = ()  # every SETTINGS entry of the module, the profile's value or default

    def beyond(self, case: Case) -> tuple[str, ...]:
        """The rules ``case`` depends on that this profile's prompt does not state (empty: the case is the task's)."""
        return tuple(r for r in case.rules if r not in self.rules)

    def collects(self, case: Case) -> bool:
        """Whether ``case`` belongs to this profile's contract variant (a case of every variant always does)."""
        return not case.contract or case.contract == self.contract

    def apply(self, case: Case) -> Case:
        """The case as the module sees it under this profile: the settings added to its params."""
        return replace(case, params={**case.params, **dict(self.settings)}) if self.settings else case

    @property
    def settings_tag(self) -> str:
        """Text that tells apart the truths of one case under different settings ("" without settings)."""
        return ";".join(f"{k}={v!r}" for k, v in self.settings)


@dataclass(frozen=True)
class TaskProfile:
    """A whole profile: per challenge with a contract, a :class:`ChallengeTask`."""

    name: str
    source: str
    description: str = ""
    challenges: Mapping[str, ChallengeTask] = field(default_factory=dict)

    def of(self, challenge_id: str) -> ChallengeTask:
        return self.challenges.get(challenge_id) or ChallengeTask(self.name, self.source)

    @property
    def shown(self) -> str:
        """``scaffold`` for a built-in profile, ``scaffold (path/kernelgrade-task.toml)`` for one from a file."""
        return self.name if self.source == BUILT_IN_SOURCE else f"{self.name} ({self.source})"


def built_in(name: str = DEFAULT) -> TaskProfile:
    """A built-in profile by name."""
    if name not in BUILT_IN:
        raise TaskError(f"no built-in task profile named {name!r} (built in: {', '.join(BUILT_IN)})")
    return _cached(name)


@functools.cache
def _cached(name: str) -> TaskProfile:
    """Each built-in profile is read once per process."""
    return parse(_read(FOLDER / f"{name}.toml"), name, BUILT_IN_SOURCE)


def load(spec: str) -> TaskProfile:
    """``--task=NAME|PATH``: a built-in profile by name, else a profile file."""
    if spec in BUILT_IN:
        return built_in(spec)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise TaskError(f"{spec}: neither a built-in task profile ({', '.join(BUILT_IN)}) nor a file")
    return load_file(path)


def load_file(path: Path) -> TaskProfile:
    """A profile file: a whole profile, or ``task = NAME`` naming a built-in one (then reported as from this file)."""
    data = _read(path)
    if "task" in data:
        extra = sorted(set(data) - {"task", "description"})
        if extra:
            raise TaskError(f"{path}: task = NAME uses a built-in profile as it is; remove {', '.join(extra)}")
        if not isinstance(data["task"], str):
            raise TaskError(f"{path}: task must be a built-in profile's name ({', '.join(BUILT_IN)})")
        try:
            named = built_in(data["task"])
        except TaskError as exc:
            raise TaskError(f"{path}: {exc}") from None
        return _read_from(named, str(path))
    return parse(data, path.stem, str(path))


def _read_from(profile: TaskProfile, source: str) -> TaskProfile:
    """A built-in profile as named by a file: the same rules, reported as coming from that file."""
    challenges = {cid: replace(task, source=source) for cid, task in profile.challenges.items()}
    return replace(profile, source=source, challenges=challenges)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise TaskError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{path}: not valid TOML ({exc})") from None


def parse(data: Mapping[str, Any], default_name: str, source: str) -> TaskProfile:
    """A profile from parsed TOML, checked strictly; ``source`` names it in every error."""
    graded = {c.id: c for c in all_challenges() if c.entry_points}
    unknown = [k for k in data if k not in _TOP_KEYS and k not in graded]
    if unknown:
        raise TaskError(
            f"{source}: unknown challenge or key {unknown[0]!r} (challenges: {', '.join(graded)}; keys: name, "
            "description)"
        )
    name = data.get("name", default_name)
    description = data.get("description", "")
    if not isinstance(name, str) or not name.strip() or not name.isprintable():
        raise TaskError(f"{source}: name must be a non-empty line of text")
    if not isinstance(description, str):
        raise TaskError(f"{source}: description must be text")
    challenges = {cid: _challenge(data.get(cid, {}), cid, name, source) for cid in graded}
    return TaskProfile(name, source, description, challenges)


def _challenge(table: Any, cid: str, name: str, source: str) -> ChallengeTask:
    where = f"{source}: [{cid}]"
    if not isinstance(table, Mapping):
        raise TaskError(f"{where} must be a table")
    module = reference_module(cid)
    known_rules: Mapping[str, str] = getattr(module, "RULES", {})
    settings: Mapping[str, Setting] = getattr(module, "SETTINGS", {})
    unknown = [k for k in table if k not in _RESERVED and k not in settings]
    if unknown:
        keys = ", ".join((*_RESERVED, *settings))
        raise TaskError(f"{where}: unknown key {unknown[0]!r} (keys: {keys})")
    rules = table.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) for r in rules):
        raise TaskError(f"{where}: rules must be a list of rule names")
    if bad := [r for r in rules if r not in known_rules]:
        raise TaskError(f"{where}: unknown rule {bad[0]!r} (its rules: {', '.join(known_rules) or 'none'})")
    return ChallengeTask(
        name,
        source,
        frozenset(rules),
        _contract(table, module.CHALLENGE, where),
        tuple((k, _setting(table, k, s, where)) for k, s in settings.items()),
    )


def _contract(table: Mapping[str, Any], challenge: Any, where: str) -> str:
    if "contract" not in table:
        return challenge.default_contract
    value = table["contract"]
    if not challenge.contracts:
        raise TaskError(f"{where}: the challenge has one contract; remove contract = {value!r}")
    if value not in challenge.contracts:
        raise TaskError(f"{where}: unknown contract {value!r} (its contracts: {', '.join(challenge.contracts)})")
    return value


def _setting(table: Mapping[str, Any], key: str, setting: Setting, where: str) -> Any:
    if key not in table:
        return setting.default
    value = table[key]
    if type(value) is not type(setting.default) or (setting.choices and value not in setting.choices):
        allowed = ", ".join(map(repr, setting.choices)) if setting.choices else f"a {type(setting.default).__name__}"
        raise TaskError(f"{where}: {key} = {value!r} is not allowed ({setting.what}: {allowed})")
    return value

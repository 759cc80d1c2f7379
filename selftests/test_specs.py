"""Challenge specs (``docs/challenges/<id>.md``): the prompt a model is given, checked against the contract modules.

Each spec starts with the prompt: the task, the contract, the allowed frameworks and what the grader checks. A marker
line ends it; below it are notes for graders (case tables, demos, measured figures) that a model is not given. So the
checks here read the prompt part only:

- it has the three sections (that it writes the contract exactly, every entry point, folder name and spelling, is
  checked with every other part of the contract in ``test_contracts.py``);
- it is self-contained: no link to another file and no path into the grader (``reference/``, ``selftests/``, demos),
  since a model given the prompt has none of them;
- it leaks no hidden case. Case ids spell their sizes (``b1-h2-n300-d64-t97-causal``), so no id with a digit may
  appear; and no *trap size* may appear as a number: any number in a case id above 16 that is not a power of two (the
  odd sizes chosen to break kernels, such as 97, 300, 1023 or 1025), unless the contract itself states it (the one
  such number is softmax_topk's bound on V). Small numbers and powers of two are left out because they are generic
  (B, H > 1; D = 64; the task's N = 4096) and would make the check flag ordinary prose.
"""

from __future__ import annotations

import re

import pytest

from plugins.cli import scaffold
from reference.challenges import all_challenges, reference_module

SECTIONS = ("## Contract", "## Allowed frameworks", "## What the grader checks")
# Numbers from case ids that the contract states, so a prompt may say them: softmax_topk's largest V.
STATED = {"softmax_topk": {"151936"}}
GENERIC_BELOW = 16


def prompt_of(challenge_id: str) -> str:
    """The prompt part of a challenge's spec, read the way ``kernelgrade new`` reads it into ``PROMPT.md``."""
    spec = scaffold.spec_path(challenge_id).read_bytes()
    marker = scaffold.PROMPT_END.decode()
    assert spec.count(scaffold.PROMPT_END) == 1, f"{challenge_id}.md: one line starting {marker!r} must end the prompt"
    return scaffold.prompt_of(spec).decode()


def trap_sizes(challenge_id: str) -> set[str]:
    """Numbers spelt in the challenge's case ids that are hidden trap sizes (see the module docstring)."""
    numbers = {n for case in reference_module(challenge_id).CASES for n in re.findall(r"\d+", case.id)}
    odd = {n for n in numbers if int(n) > GENERIC_BELOW and int(n) & (int(n) - 1)}
    return odd - STATED.get(challenge_id, set())


CHALLENGES = [c for c in all_challenges() if c.entry_points]


def test_every_challenge_has_a_spec():
    """Each graded challenge has docs/challenges/<id>.md with the prompt sections, in the same shape."""
    assert {c.id for c in CHALLENGES} == {c.id for c in all_challenges()}, "a challenge without a contract"
    for challenge in CHALLENGES:
        prompt = prompt_of(challenge.id)
        assert prompt.startswith("# ") and challenge.id in prompt.splitlines()[0], challenge.id
        positions = [prompt.find(s) for s in SECTIONS]
        assert -1 not in positions and positions == sorted(positions), (challenge.id, positions)


@pytest.mark.parametrize("challenge", CHALLENGES, ids=lambda c: c.id)
def test_prompt_is_self_contained(challenge):
    """No Markdown link and no path into the grader: a model given the prompt has nothing else."""
    prompt = prompt_of(challenge.id)
    assert not re.search(r"\]\((?!https?://)[^)]*\)", prompt), f"{challenge.id}: links a file"
    for inside in ("reference/", "selftests/", "plugins/", "submissions/", "demo-"):
        assert inside not in prompt, f"{challenge.id}: the prompt points into the grader ({inside})"


@pytest.mark.parametrize("challenge", CHALLENGES, ids=lambda c: c.id)
def test_prompt_leaks_no_hidden_case(challenge):
    """No case id that spells sizes and no trap size from the cases appears in the prompt."""
    prompt = prompt_of(challenge.id)
    module = reference_module(challenge.id)
    leaked_ids = [c.id for c in module.CASES if re.search(r"\d", c.id) and c.id in prompt]
    assert not leaked_ids, f"{challenge.id}: case ids in the prompt: {leaked_ids}"
    traps = trap_sizes(challenge.id)
    leaked = sorted(n for n in traps if re.search(rf"(?<![\w.]){n}(?![\w])", prompt))
    assert not leaked, f"{challenge.id}: hidden sizes in the prompt: {leaked}"


def test_leak_check_is_not_vacuous():
    """The trap sizes exist (the flash cases' uneven tiles among them), and the full docs do show them below the
    marker, so the check would catch a prompt that copied the grader notes."""
    assert {"97", "300", "1025", "59"} <= trap_sizes("flash_attention")
    assert all(trap_sizes(c.id) for c in CHALLENGES)
    notes = scaffold.spec_path("softmax_topk").read_text().split(scaffold.PROMPT_END.decode(), 1)[1]
    assert any(c.id in notes for c in reference_module("softmax_topk").CASES if re.search(r"\d", c.id))

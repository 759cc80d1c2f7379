"""The ternary-training challenge's additions to the grader: ``--train-data`` and the report sections. (A submission
importing MLX where MLX is absent is skipped by its runtime, ``plugins/isolate/runtimes/``.)

- ``--train-data PATH`` (declared in ``plugins/config/``) is checked here and handed to the grader-side half of the
  challenge (:mod:`reference.ternary_grading`) in every process that draws inputs, xdist workers included.
- ``grades.md`` gets two sections built from the case records' details, which the grader measured itself: the coverage
  table (which weight kinds the forward pass really uses in ternary form, per model and coverage case) and the
  training figures (held-out bits per byte against the unigram baseline and the entropy floor, the loss before and
  after, the batches the grader served against the budget, the training wall time, greedy samples).
"""

from __future__ import annotations

from typing import Any

import pytest

from plugins.base.wording import escape
from plugins.base.wording import markdown_table as table
from plugins.config import grader_config
from reference import qwen3_tiny, ternary_grading
from reference import ternary_training as tt

CHALLENGE = tt.CHALLENGE.id


def pytest_configure(config: pytest.Config) -> None:
    path = grader_config(config).train_data
    if path is not None and not path.is_file():
        raise pytest.UsageError(f"--train-data {path}: no such file")
    if path is not None and path.stat().st_size < 4 * tt.EVAL_LENGTH * tt.TRAIN_SAMPLE_WINDOWS:
        raise pytest.UsageError(f"--train-data {path}: too short to split (at least 8 KiB of text)")
    ternary_grading.use_train_data(path)


# --- grades.md --------------------------------------------------------------------------------------------------------


def pytest_grader_report_sections(summary: dict[str, Any], config: pytest.Config) -> list[tuple[str, str]] | None:
    records = [c for c in summary["cases"] if c["challenge"] == CHALLENGE]
    if not records:
        return None
    sections = [("Ternary training: coverage", coverage_section(records))]
    training = [r for r in records if r["case"].startswith("train-")]
    if training:
        sections.append(("Ternary training: held-out results", training_section(training)))
    return sections


def _cell(entry: dict[str, Any]) -> str:
    """One kind in one coverage case: ternary, or how the grader saw it fail.

    The probe decides whether the forward depends on more than our projection; the exported weight then says why:
    not ternary at all (full precision), ternary on another grid (another quantizer), or ours while the forward uses
    something else (an export that is not what the forward uses).
    """
    forward, export, ternary = entry.get("forward"), entry.get("export"), entry.get("ternary")
    if forward is None or export is None:
        return "not measured"
    if forward <= tt.PROBE_LIMIT and export <= tt.TERNARY_LIMIT:
        return "ternary"
    if ternary is None or ternary > tt.TERNARY_LIMIT:
        return f"full precision (Δ {forward:.2g})" if forward > tt.PROBE_LIMIT else "exported weight not ternary"
    if export > tt.TERNARY_LIMIT:
        return f"ternary, not our projection ({export:.2g})"
    return f"forward uses latent values (Δ {forward:.2g})"


def coverage_section(records: list[dict[str, Any]]) -> str:
    """Rows: model and coverage case; columns: weight kinds."""
    kinds = list(qwen3_tiny.KINDS)
    rows = []
    for rec in (r for r in records if r["case"].startswith("cov-")):
        coverage = rec.get("details", {}).get("coverage")
        if not coverage:
            rows.append([rec["model"], rec["case"], *[rec["outcome"]] * len(kinds)])
            continue
        if rec["details"].get("tied"):  # the head is the embedding table: its export is the table's
            shared = coverage["embed_tokens"]
            coverage = coverage | {
                "lm_head": coverage["lm_head"] | {"export": shared["export"], "ternary": shared["ternary"]}
            }
        cells = [_cell(coverage[k]) if k in coverage else "n/a" for k in kinds]
        rows.append([rec["model"], rec["case"], *cells])
    intro = (
        "What the forward pass really uses, measured by the grader. A kind is *ternary* when permuting its latent "
        "values within a group and a code (our projection unchanged) moves the submission's log-probs by at most "
        f"{tt.PROBE_LIMIT:g} and its exported weight equals our projection (relative error at most "
        f"{tt.TERNARY_LIMIT:g}); otherwise the exported weight tells why: *full precision* (not ternary), *ternary, "
        "not our projection* (another scale or grouping) or *forward uses latent values* (the export is not what "
        "the forward uses). Δ is the largest log-prob change under the probe. In a tied model the head is the "
        "embedding table."
    )
    return intro + "\n\n" + table(["model", "case", *kinds], rows)


def _steps(details: dict[str, Any]) -> str:
    """The grader's count of served batches against the budget, with any refused requests."""
    if "steps" not in details:
        return "—"
    refused = f", {details['refused']} refused" if details.get("refused") else ""
    return f"{details['steps']} / {details['max_steps']}{refused}"


def _training_outcome(rec: dict[str, Any]) -> str:
    """The outcome, saying so when the wall-clock safety limit stopped the training."""
    timed_out = rec["outcome"] == "timeout"
    return f"{rec['outcome']} (safety limit, {tt.TRAIN_SAFETY_S:g} s)" if timed_out else rec["outcome"]


def training_section(records: list[dict[str, Any]]) -> str:
    """Held-out bits per byte against the limit, the unigram baseline and the floor; loss; time; samples."""
    rows, samples = [], []
    for rec in records:
        d = rec.get("details") or {}
        held = d.get("held_out_bits")
        loss = f"{d['train_bits_initial']:.3f} → {d['train_bits_final']:.3f}" if "train_bits_final" in d else "—"
        floor = d.get("floor_bits")
        rows.append([
            rec["model"], _training_outcome(rec), f"{held:.3f}" if held is not None else "—",
            f"{d['limit_bits']:.3f}" if "limit_bits" in d else "—",
            f"{d['unigram_bits']:.3f}" if "unigram_bits" in d else "—",
            f"{floor:.3f}" if floor is not None else "unknown" if d else "—", loss,
            f"{rec['seconds']:.1f}" if rec.get("seconds") is not None else "—", _steps(d),
        ])  # fmt: skip
        for s in d.get("samples") or []:
            samples.append([rec["model"], s["prompt"], s["continuation"]])
    corpus = next((r["details"]["corpus"] for r in records if (r.get("details") or {}).get("corpus")), "—")
    text = (
        f"Corpus: {escape(corpus)}. Bits per byte of the grader's own float64 forward on the weights each submission "
        "exported, over held-out text it never saw; the limit closes half of the gap from the unigram baseline to the "
        "floor (or is the baseline when the floor is unknown). Loss: bits per byte on a training sample, our "
        "projection of the initial weights → the trained weights. Steps: the batches the grader served, of the "
        "budget (it serves every batch and refuses any past the budget; a refused request fails the case). The "
        f"budget is in steps, not seconds: train s is shown only, and {tt.TRAIN_SAFETY_S:g} s of wall time is a "
        "safety limit, never reached by a trainer that keeps to its budget.\n\n"
    )
    headers = ["model", "outcome", "held-out bpb", "limit", "unigram", "floor", "train loss", "train s", "steps"]
    text += table(headers, rows)
    if samples:
        text += "\n\nGreedy samples (grader's forward on the exported weights, prompts from the held-out split):\n\n"
        text += table(["model", "prompt", "continuation"], samples)
    return text

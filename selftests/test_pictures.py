"""The report's pictures: grade heatmap, speed chart and trap tables, on a hand-made summary and one scoped grading run.

The hand-made summary holds one of every cell kind (a letter of each band, an incomplete grade, "built", a status no
code knows yet, a missing folder, a challenge the run stopped before) and a hostile model name, so each property is
checked against a figure written here rather than one the code under test computed.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from plugins.grade.rubric import BUILT_ONLY
from plugins.report import pictures

IMG = "<img src=x onerror=alert(1)>"
SVG_NS = "{http://www.w3.org/2000/svg}"


def _grade(letter: str, points: float, complete: bool = True) -> dict[str, Any]:
    return {"letter": letter, "points": points, "complete": complete, "categories": {}, "failed": [], "notes": []}


def _case(model: str, challenge: str, index: int, guards: str, outcome: str, **speed: float) -> dict[str, Any]:
    return {
        "model": model, "challenge": challenge, "case": f"case-{index}", "case_index": index, "category": "edge",
        "guards": guards, "outcome": outcome, "speed": dict(speed) or None,
    }  # fmt: skip


@pytest.fixture
def summary() -> dict[str, Any]:
    """Three models on two challenges; a fourth model the run stopped before."""
    models = {
        "good": {"challenges": {"alpha": _grade("A+", 99.0), "beta": _grade("B-", 81.0, complete=False)}},
        IMG: {"challenges": {"alpha": _grade("F", 7.0), "beta": _grade(BUILT_ONLY, 100.0)}},
        "empty": {"challenges": {"alpha": _grade("no code", 0.0)}},
    }
    cases = [
        _case("good", "alpha", 0, "uneven final tile", "passed"),
        _case("good", "alpha", 1, "one-row final tile", "passed"),
        _case("good", "alpha", 2, "speed", "passed", ratio=2.0, median_s=1.0, spread_s=0.1),
        _case(IMG, "alpha", 0, "uneven final tile", "wrong"),
        _case(IMG, "alpha", 1, "one-row final tile", "skipped"),
        _case(IMG, "alpha", 2, "speed", "passed", ratio=0.5, median_s=2.0, spread_s=0.0),
    ]
    return {
        "challenges": [{"id": c, "title": c, "graded": True} for c in ("alpha", "beta")],
        "models": models,
        "ranking": [{"model": m} for m in models],
        "not_run": [{"model": "late", "challenge": "alpha", "selected_cases": 3}],
        "cases": cases,
        "options": {"measure_speed": True, "seed": 1},
    }


def _cell_fills(svg: str) -> list[str]:
    return [r.get("fill") for r in ET.fromstring(svg).iter(f"{SVG_NS}rect")][1:]  # the first is the background


def test_heatmap_cells_letters_and_colours(summary: dict[str, Any]) -> None:
    """Each cell shows its letter (``*`` when incomplete) in its band's colour; every non-letter status is grey."""
    models, challenges, cells = pictures.heatmap_cells(summary)
    assert (models, challenges) == (["good", IMG, "empty", "late"], ["alpha", "beta"])
    assert [[c["status"] for c in row] for row in cells] == [
        ["A+", "B-"], ["F", BUILT_ONLY], ["no code", "—"], ["not run", "—"]
    ]  # fmt: skip
    svg = pictures.heatmap_svg(summary)
    assert _cell_fills(svg) == ["#1a9850", "#91cf60", "#d73027", *[pictures.NEUTRAL] * 5]
    texts = [t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")]
    assert {"A+", "B-*", "F", "built", "no code", "—", "not run"} <= set(texts)
    assert pictures.grade_colour("D") == "#fdae61" and pictures.grade_colour("A-") == "#1a9850"
    assert pictures.grade_colour("some status added later") == pictures.NEUTRAL


def test_hostile_model_name_is_text_everywhere(summary: dict[str, Any]) -> None:
    """The name ``<img src=x onerror=alert(1)>`` is escaped in both SVGs and both trap tables; the SVGs parse as XML."""
    escaped = "&lt;img src=x onerror=alert(1)&gt;"
    for svg in (pictures.heatmap_svg(summary), pictures.speed_svg(summary)):
        assert "<img" not in svg and escaped in svg
        names = [t.text for t in ET.fromstring(svg).iter(f"{SVG_NS}text")]
        assert any(IMG in (n or "") for n in names)  # the reader sees the name itself, as text
    assert "<img" not in pictures.traps_html(summary, "alpha") and escaped in pictures.traps_html(summary, "alpha")
    assert "<img" not in pictures.traps_markdown(summary, "alpha")
    assert escaped in pictures.traps_markdown(summary, "alpha")


def test_log_scale_positions(summary: dict[str, Any]) -> None:
    """Ratios sit on a log axis of whole decades: 1× at the middle of [0.1, 10], each decade the same width."""
    assert pictures.log_range([0.5, 2.0]) == (0.1, 10.0)
    assert pictures.log_range([1.0]) == (1.0, 10.0)
    assert pictures.log_range([0.004, 30.0]) == (0.001, 100.0)
    assert pictures.log_x(1.0, 0.1, 10.0, 100.0, 400.0) == pytest.approx(300.0)
    assert pictures.log_x(10.0, 0.1, 10.0, 100.0, 400.0) == pytest.approx(500.0)
    assert pictures.log_x(2.0, 1.0, 10.0, 0.0, 100.0) == pytest.approx(30.103, abs=1e-3)
    rows = pictures.speed_rows(summary)
    assert [(r["model"], r["cases"][0]["ratio"]) for r in rows] == [("good", 2.0), (IMG, 0.5)]
    good = rows[0]["cases"][0]  # spread 0.1 s of a 1 s median: 10 %, drawn as a factor 1.05 either side
    assert (good["spread"], good["low"], good["high"]) == pytest.approx((0.1, 2.0 / 1.05, 2.1))
    svg = pictures.speed_svg(summary)
    circles = [float(c.get("cx")) for c in ET.fromstring(svg).iter(f"{SVG_NS}circle")]
    left = float(re.search(r'<text x="([\d.]+)" y="18"', svg).group(1))  # the plot's left edge, where 0.1× is
    assert circles == pytest.approx([left + 520 * (1 + 0.30103) / 2, left + 520 * (1 - 0.30103) / 2], abs=0.1)
    assert "2.00×, spread 10%" in svg and "0.50×, spread 0%" in svg


def test_speed_chart_without_timed_cases(summary: dict[str, Any]) -> None:
    """Under --no-speed the chart says so instead of drawing an empty axis."""
    summary["cases"] = [c for c in summary["cases"] if not c["speed"]]
    summary["options"]["measure_speed"] = False
    svg = pictures.speed_svg(summary)
    assert "speed not measured (--no-speed)" in svg and "<circle" not in svg


def test_trap_states(summary: dict[str, Any]) -> None:
    """A failed case is "fell in", a passed one "avoided", one skipped or never run "not reached"."""
    models, traps, states = pictures.trap_table(summary, "alpha")
    assert models == ["good", IMG, "empty", "late"]
    assert traps == ["uneven final tile", "one-row final tile", "speed"]
    fell, avoided, unseen = pictures.FELL, pictures.AVOIDED, pictures.NOT_REACHED
    assert states == [[avoided, fell, unseen, unseen], [avoided, unseen, unseen, unseen], [avoided] * 2 + [unseen] * 2]
    assert pictures.trap_state(["passed", "wrong"]) == fell and pictures.trap_state([]) == unseen
    assert pictures.trap_state(["no_code"]) == unseen and pictures.trap_state(["passed", "skipped"]) == avoided
    assert pictures.traps_markdown(summary, "beta") == "" and pictures.traps_html(summary, "beta") == ""
    lines = pictures.traps_markdown(summary, "alpha").splitlines()
    assert lines[2] == "| uneven final tile | ✓ avoided | ✗ fell in | · not reached | · not reached |"


def test_pictures_of_a_grading_run(grade) -> None:
    """A scoped run writes heatmap.svg and speed.svg beside grades.md, and both reports carry the trap tables."""
    run = grade("--model", "demo-tiled,demo-buggy", "--no-speed", "-k", "not bwd and (n40- or n1025-)")
    reports = run.reports
    heatmap = (reports / "heatmap.svg").read_text()
    texts = [t.text for t in ET.fromstring(heatmap.split("\n", 1)[1]).iter(f"{SVG_NS}text")]
    assert {"demo-tiled", "demo-buggy", "A+"} <= set(texts)
    assert "speed not measured (--no-speed)" in (reports / "speed.svg").read_text()
    grades = (reports / "grades.md").read_text()
    assert "`heatmap.svg`" in grades and "](" not in grades  # named, never linked (see test_adversarial_reports)
    # demo-buggy drops the final partial key tile: wrong at N = 1025 (tile 128) and NaN at N = 40 (under one tile)
    assert "| trap | demo-tiled | demo-buggy |" in grades
    assert "| one-row final tile | ✓ avoided | ✗ fell in |" in grades
    # NaN where the truth is finite is named apart from an error over the bound, in the trap table and the message
    assert "| sequence shorter than one tile | ✓ avoided | ✗ non-finite (NaN/Inf) |" in grades
    nan_case = run.records()["demo-buggy", "flash_attention", "b1-h2-n40-d64-t64-causal"]
    assert nan_case["message"].startswith("O: non-finite (NaN/Inf) where the truth is finite: ")
    page = (reports / "report.html").read_text()
    assert page.count("<svg") >= 2 and 'class="kg-traps"' in page and "<script src=" not in page.split("kg-summary")[1]
    assert "wrote" in run.output and f"{reports / 'heatmap.svg'}" in run.output

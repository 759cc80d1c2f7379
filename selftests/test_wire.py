"""The wire and the text gate, driven directly: what a child's answer may hold is checked before the grader allocates
it, and every string from a child is cut and made valid UTF-8 before any record, xdist or report sees it.

The hostile answers here come from ``fixtures/adversarial`` (the same submissions the grading run of
``test_adversarial_wire.py`` holds) or are written straight into a pipe.
"""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from pathlib import Path

import execnet
import numpy as np
import pytest

from conftest import FIXTURES, REPO
from plugins.base import records
from plugins.discover import names
from plugins.isolate import runspace, wire
from plugins.isolate.sandbox import Limits, Program, Sandbox
from reference import flash_attention as fwd

ADVERSARIAL = FIXTURES.parent / "adversarial"
CASE = next(c for c in fwd.CASES if c.id == "b1-h2-n40-d64-t64-causal")
LIMITS = Limits(call_timeout_s=5, memory_bytes=1 << 30, device="cpu")
SURROGATES = "\udcff\ud800"


def attack(model: str):
    """Run CASE once against a fixture submission; (outcome, the grader's peak traced allocation in bytes)."""
    program = Program(
        "reference.flash_attention", (("flash_attention_fwd", "impl.py"),), ADVERSARIAL / model / "flash_attention"
    )
    sandbox = Sandbox(program, LIMITS, REPO)
    inputs = fwd.make_inputs(CASE, np.random.default_rng(0))
    tracemalloc.start()
    try:
        outcome = sandbox.run(inputs, dict(CASE.params), {})
        return outcome, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        sandbox.close()


def test_announced_8_gib_are_refused_before_any_allocation():
    """The answer's header announces an 8 GiB output: refused unread (the case is wrong at once, naming the cap),
    and the grader's own allocations stay under 16 MiB (it used to allocate the 8 GiB and read into them)."""
    outcome, peak = attack("wire-huge-array")
    assert outcome.status == "error" and outcome.kind == "contract" and "over the cap" in outcome.message, outcome
    assert peak < 16 * 2**20, peak


def test_error_text_of_the_child_is_cut_and_made_valid():
    """0.9 MiB of type, message and traceback: the outcome keeps a few KB, and says how much was cut."""
    outcome, _ = attack("wire-huge-text")
    assert outcome.status == "error" and "characters, cut to" in outcome.message + outcome.traceback
    assert len(outcome.message) <= records.MESSAGE_CHARS and len(outcome.traceback) <= records.TRACEBACK_CHARS


def test_outcome_takes_only_text_and_a_known_kind():
    """Lone surrogates become U+FFFD, a kind the child invents is an exception, and no figure of the child's is kept."""
    header = {"status": "error", "kind": "passed", "type": ["not", "text"], "message": "x" + SURROGATES}
    outcome = Sandbox._outcome(header | {"traceback": SURROGATES, "calls": [{"measured": True, "seconds": 0.0}]}, {})
    assert outcome.kind == "exception" and outcome.calls == []
    assert outcome.message == "['not', 'text']: x\ufffd\ufffd" and outcome.traceback == "\ufffd\ufffd"


def _message(header: dict, body: bytes = b"") -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + body


CAPS = wire.Caps(header_bytes=4096, payload_bytes=800, arrays=4)
REFUSED = {
    "header over its cap": struct.pack("<Q", 2**40),
    "too many arrays": _message({"arrays": [[f"a{i}", "<f8", [0]] for i in range(5)]}),
    "bytes over their cap": _message({"arrays": [["O", "<f8", [2**30]]]}),
    "bytes over their cap, all arrays together": _message({"arrays": [["a", "<f8", [60]], ["b", "<f8", [60]]]}),
    "a shape whose product wraps in int64": _message({"arrays": [["O", "<f8", [2**32, 2**32]]]}),
    "an empty array of a shape NumPy cannot make": _message({"arrays": [["O", "<f8", [2**32, 2**32, 0]]]}),
    "a negative dimension": _message({"arrays": [["O", "<f8", [-1]]]}),
    "a dimension that is not whole": _message({"arrays": [["O", "<f8", [1.5]]]}),
    "an object dtype": _message({"arrays": [["O", "|O", [1]]]}),
    "a record dtype": _message({"arrays": [["O", [["x", "<f8"]], [1]]]}),
    "a sub-array dtype": _message({"arrays": [["O", "(4,)<f8", [1]]]}),
    "a name with a lone surrogate": _message({"arrays": [["O\udcff", "<f8", [1]]]}, bytes(8)),
    "a name with a control character": _message({"arrays": [["O\n", "<f8", [1]]]}, bytes(8)),
    "a name too long": _message({"arrays": [["O" * 201, "<f8", [1]]]}, bytes(8)),
    "two arrays of one name": _message({"arrays": [["O", "<f8", [1]], ["O", "<f8", [1]]]}, bytes(16)),
    "a header that is not an object": _message([1, 2]),  # type: ignore[arg-type]
    "a header without arrays": _message({"status": "ok"}),
    "JSON nested past the recursion limit": struct.pack("<Q", 4000) + b"[" * 4000,
    "not JSON": struct.pack("<Q", 3) + b"\xff\xfe\x00",
}


@pytest.mark.parametrize("data", REFUSED.values(), ids=REFUSED.keys())
def test_a_message_against_the_rules_is_refused_unread(data):
    """Each rule of the wire, broken once, raises Refused (never another exception, never an allocation)."""
    read, write = os.pipe()
    try:
        os.write(write, data)
        with pytest.raises(wire.Refused):
            wire.recv(read, None, CAPS)
    finally:
        os.close(read)
        os.close(write)


def test_an_answer_within_the_caps_is_read():
    """The honest answer (names, dtypes, shapes and bytes within the caps) is read as it was sent; an empty array
    counts as if its empty dimensions were 1 (here 9 x 8 bytes), so no shape NumPy refuses gets through."""
    read, write = os.pipe()
    arrays = {
        "O": np.arange(6.0).reshape(2, 3),
        "tokens_alone": np.arange(4, dtype=np.int32),
        "empty": np.zeros((0, 9)),
    }
    try:
        os.write(write, wire.encode({"status": "ok"}, arrays))
        header, got = wire.recv(read, None, wire.Caps(4096, sum(a.nbytes for a in arrays.values()) + 72, 3))
    finally:
        os.close(read)
        os.close(write)
    assert header == {"status": "ok"} and all(
        np.array_equal(got[n], a) and got[n].dtype == a.dtype for n, a in arrays.items()
    )


def test_case_caps_grow_with_the_case():
    """A case's caps: four times its inputs' and truths' bytes plus the slack, and counts likewise."""
    inputs = {"Q": np.zeros((4, 8)), "K": np.zeros(3, dtype=np.float32)}
    caps = wire.case_caps(inputs, (np.zeros(5), None))
    assert caps == wire.Caps(wire.CHILD_HEADER_BYTES, 4 * (256 + 12 + 40) + wire.CASE_BYTES_SLACK, 4 * 4 + 16)


def test_a_record_holds_nothing_a_report_writer_could_choke_on():
    """Every string field, and every string and key nested in the dict and list fields, is cut to its limit and
    valid UTF-8; NumPy values become builtins: execnet (xdist's channel) and strict UTF-8 JSON both take the record."""
    huge = "y" * 10**6 + SURROGATES
    nested = {huge: [np.float32(1.5), np.int64(3), (huge, np.array([1, 2]))], "f": np.float64(2.0)}
    text_fields = ["model", "challenge", "case", "category", "guards", "outcome", "message", "runtime", "loaded"]
    text_fields += ["traceback", "stdout", "stderr", "nodeid", "origin"]
    record = records.CaseRecord(**dict.fromkeys(text_fields, huge), case_index=np.int64(2), checks=[nested],
                                speed=nested, details=nested, ran_on=nested, timing=nested, seconds=np.float64(1.0),
                                peak_bytes=np.int64(7))  # fmt: skip
    data = record.to_dict()
    execnet.dumps(data)
    json.dumps(data, ensure_ascii=False).encode("utf-8")
    for name in text_fields:
        assert len(data[name]) <= records.FIELD_CHARS.get(name, records.TEXT_CHARS), name
    assert type(data["case_index"]) is int and type(data["seconds"]) is float and type(data["checks"][0]["f"]) is float
    assert max(len(k) for k in data["details"]) <= records.KEY_CHARS
    assert records.CaseRecord.from_dict(json.loads(json.dumps(data))).to_dict() == data


def test_tail_fields_keep_the_end():
    """Tracebacks and printed output keep their last characters (the last frame, the last lines)."""
    record = records.CaseRecord("m", "c", "k", 0, "cat", "g", "error", traceback="a" * 10**5 + "THE END" + SURROGATES)
    assert record.traceback.endswith("THE END\ufffd\ufffd") and record.traceback.startswith("[... 100009 characters")
    assert len(record.traceback) == records.TRACEBACK_CHARS and record.sanitise().traceback == record.traceback


def test_copy_notes_are_few_short_and_valid(tmp_path):
    """50 FIFOs with names that are not UTF-8: a copy's notes are MAX_NOTES and one line counting the rest, each
    valid UTF-8 and short."""
    folder = tmp_path / "sub"
    folder.mkdir()
    for i in range(50):
        os.mkfifo(os.path.join(os.fsencode(folder), b"fifo-\xff-%d" % i + b"x" * 200))
    notes = runspace.copy_folder(folder, tmp_path / "copy")
    assert len(notes) == runspace.MAX_NOTES + 1 and "30 more" in notes[-1]
    assert all(len(n) <= runspace.NOTE_CHARS and n.encode("utf-8") for n in notes)


@pytest.mark.parametrize(
    ("name", "refused", "lookalike"),
    [
        (os.fsdecode(b"bad-\xff"), "not valid UTF-8", None),
        ("two\nlines", "line break", None),
        ("tab\there", "line break", None),
        ("ctl-\x1b[2J", None, None),
        ("--model=x", None, None),
        ("é" * 125, None, None),
        ("demo\u2215sample-2", None, "U+2215"),
        ("demo\uff0fsample-2", None, "U+FF0F"),
        ("\u2025", None, "U+2025"),
        ("v1\u2024 2", None, None),  # one dot leader, no "..": nothing it could pass for
    ],
)
def test_folder_names_are_refused_or_warned_about(name, refused, lookalike):
    """Which names are refused, which are graded with a look-alike warning, and how each is shown (ASCII only)."""
    why = names.refusal(name)
    assert (refused in why) if refused else why is None
    assert names.lookalike(name) == lookalike
    assert names.shown(name).isascii() and names.shown(name).isprintable()


def test_invalid_name_is_shown_as_its_bytes():
    assert names.shown(os.fsdecode(b"bad-\xff")) == "b'bad-\\xff'" and names.shown("é") == "'\\xe9'"


def test_discovery_skips_refused_folders_and_warns(tmp_path):
    """A refused folder is not a submission, and the warning names it; a folder holding no challenge is not named."""
    from plugins.discover.submissions import discover, name_warnings

    tiled = REPO / "submissions" / "demo-tiled" / "flash_attention"
    for name in (os.fsdecode(b"bad-\xff"), "ok", "x\u2215y"):
        target = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), os.fsencode(name), b"flash_attention")))
        target.mkdir(parents=True)
        (target / "flash_attention.py").write_bytes((tiled / "flash_attention.py").read_bytes())
    (tmp_path / "notes\nhere").mkdir()
    assert sorted(s.model for s in discover(tmp_path)) == ["ok", "x\u2215y"]
    warnings = name_warnings(tmp_path)
    assert len(warnings) == 2 and "b'bad-\\xff' is not graded" in warnings[0] and "U+2215" in warnings[1]

"""Discovery: folder names and aliases, entry-point resolution by reading source, and foreign trees."""

from __future__ import annotations

from pathlib import Path

from plugins.discover.entry_points import resolve
from plugins.discover.submissions import discover, submissions_root

FWD = ("flash_attention_fwd",)
BOTH = ("flash_attention_fwd", "flash_attention_bwd")
FN = "def {name}(*args):\n    return None\n"


def write(folder: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return folder


def test_adapter_wins(tmp_path):
    """An adapter.py provides every entry point it defines, even when other files define them too."""
    folder = write(
        tmp_path,
        {
            "impl.py": FN.format(name="flash_attention_fwd"),
            "adapter.py": "from impl import flash_attention_fwd as flash_attention_fwd\n",
        },
    )
    res = resolve(folder, FWD, ("flash_attention",))
    assert res.via_adapter and res.chosen == {"flash_attention_fwd": "adapter.py"}


def test_file_defining_all_entry_points_beats_partial_ones(tmp_path):
    """For the backward contract, the file with both functions is chosen for both."""
    folder = write(
        tmp_path,
        {
            "a_fwd_only.py": FN.format(name="flash_attention_fwd"),
            "z_both.py": FN.format(name="flash_attention_fwd") + FN.format(name="flash_attention_bwd"),
        },
    )
    res = resolve(folder, BOTH, ("flash_attention_bwd",))
    assert res.chosen == {"flash_attention_fwd": "z_both.py", "flash_attention_bwd": "z_both.py"}
    assert res.others["flash_attention_fwd"] == ("a_fwd_only.py",)


def test_model_tests_and_benchmarks_count_last(tmp_path):
    """A model's own test or benchmark script defining the name is passed over for the real implementation."""
    folder = write(
        tmp_path,
        {
            "test_flash.py": FN.format(name="flash_attention_fwd"),
            "bench_flash.py": FN.format(name="flash_attention_fwd"),
            "src/kernel.py": FN.format(name="flash_attention_fwd"),
        },
    )
    assert resolve(folder, FWD, ("flash_attention",)).chosen == {"flash_attention_fwd": "src/kernel.py"}


def test_choice_is_deterministic_and_prefers_shallow_then_named(tmp_path):
    """Ties go to the shallowest file, then the one named after the challenge, then alphabetical order."""
    folder = write(
        tmp_path,
        {name: FN.format(name="flash_attention_fwd") for name in ("b.py", "a.py", "flash_attention.py", "deep/a.py")},
    )
    assert resolve(folder, FWD, ("flash_attention",)).chosen["flash_attention_fwd"] == "flash_attention.py"
    (folder / "flash_attention.py").unlink()
    assert resolve(folder, FWD, ("flash_attention",)).chosen["flash_attention_fwd"] == "a.py"


def test_source_is_read_not_run(tmp_path):
    """Discovery parses files: code at import (exit, loops, prints) never runs, broken files are skipped."""
    folder = write(
        tmp_path,
        {
            "impl.py": "raise SystemExit('ran at import')\nwhile True:\n    pass\n"
            + FN.format(name="flash_attention_fwd"),
            "broken.py": "def flash_attention_fwd(:\n",
        },
    )
    assert resolve(folder, FWD, ("flash_attention",)).chosen == {"flash_attention_fwd": "impl.py"}


def test_missing_entry_point_is_reported(tmp_path):
    """A folder with no definition of an entry point says which one is missing."""
    folder = write(tmp_path, {"impl.py": FN.format(name="flash_attention_fwd")})
    assert resolve(folder, BOTH, ("flash_attention_bwd",)).missing == ("flash_attention_bwd",)


def test_scaffold_aliases_and_not_attempted(tmp_path):
    """Scaffold folder names map to our ids; unknown folders and files are ignored; absent folders are absent."""
    write(
        tmp_path,
        {
            "kimi/backwards/ln.py": "x = 1\n",
            "kimi/fuse/kernel.cu": "// cuda\n",
            "kimi/flash_attention/impl.py": FN.format(name="flash_attention_fwd"),
            "kimi/session_log.md": "notes\n",
            "kimi/data/blob.bin": "\0",
            "glm/kv/cache.py": "x = 1\n",
            "docs/readme.md": "not a model\n",
        },
    )
    found = {(s.model, s.challenge) for s in discover(tmp_path)}
    assert found == {
        ("kimi", "layer_norm_bwd"),
        ("kimi", "softmax_topk"),
        ("kimi", "flash_attention"),
        ("glm", "kv_cache"),
    }


def test_repo_clone_root_is_accepted(tmp_path):
    """Pointing at a clone whose submissions live under submissions/ finds them there."""
    write(
        tmp_path,
        {"README.md": "a repo\n", "submissions/kimi/flash_attention/impl.py": FN.format(name="flash_attention_fwd")},
    )
    assert submissions_root(tmp_path) == tmp_path / "submissions"
    assert [s.model for s in discover(submissions_root(tmp_path))] == ["kimi"]

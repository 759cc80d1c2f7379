"""An install that cannot hurt: kernelgrade installed editable from a clone into a fresh virtual environment, the
clone then deleted, leaves pytest working for an unrelated project in that environment.

Offline: the venv sees this interpreter's packages (``--system-site-packages``: pytest, setuptools) and pip builds
without isolation, so nothing is downloaded. The clone is of this repository's committed HEAD (``KERNELGRADE_CLONE_REV``
picks another revision: the commit before 6713a25, which still had the ``pytest11`` entry point, fails this test
with pytest's "Error while loading plugin", exit 3).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

from conftest import REPO


def sh(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False)


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to clone the repository")
def test_editable_install_of_a_deleted_clone_leaves_pytest_working(tmp_path):
    """Clone, install editable into a fresh venv, delete the clone: pytest on an unrelated project there passes, and
    nothing of kernelgrade is loaded into it."""
    clone = tmp_path / "clone"
    cloned = sh("git", "clone", "--quiet", "--no-hardlinks", REPO, clone)
    assert cloned.returncode == 0, cloned.stderr
    rev = os.environ.get("KERNELGRADE_CLONE_REV")
    if rev:
        assert sh("git", "-C", clone, "checkout", "--quiet", rev).returncode == 0
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True, with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = (python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index")
    installed = sh(*pip, "-e", clone)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (env_dir / "bin" / "kernelgrade").is_file()  # the command was installed
    shutil.rmtree(clone)
    project = tmp_path / "other-project"
    project.mkdir()
    (project / "test_other.py").write_text("def test_other():\n    assert 1 + 1 == 2\n")
    done = sh(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", project, cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout and "Error while loading plugin" not in done.stdout + done.stderr
    assert "kernelgrade" not in done.stdout + done.stderr  # no plugin of ours joined this project's run

"""What containing the CUDA build costs: the contained build against an uncontained one, cold and cached.

    python benchmarks/bench_build.py                                  # the demo, 5 rounds
    python benchmarks/bench_build.py --rounds 9 --baseline-repo /tmp/old   # also an older checkout's build.py

Each round times, in alternation and each cold build in a fresh cache folder:

- ``nvcc alone``: the build's nvcc command run directly in the folder, as the grader's user (what the build did before
  it was contained, less its cache key);
- ``baseline cold`` / ``baseline cached``: ``build()`` of the ``--baseline-repo`` checkout, when given;
- ``contained cold``: ``build()``: the copy, the key over the copy, nvcc in the build's containment, ``nm`` there, the
  signed cache entry;
- ``contained cached``: ``build()`` again: the key and the entry's verification;
- ``one empty step``: ``/bin/true`` run as a build step (a scratch copy of the folder, the launcher, the containment):
  the fixed cost per step, of which a cold build has two (nvcc, then ``nm``).

Prints the median, minimum and maximum of each; asserts nothing (timings are not pass/fail tests).
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugins.isolate import build, build_box, runspace  # noqa: E402

DEMO = REPO / "submissions" / "demo-tiled" / "softmax_topk"
SOURCE, EXPORTS = "softmax_topk.cu", ("softmax_topk",)


def nvcc_alone(out: Path) -> None:
    nvcc = build.nvcc_path()
    argv = [nvcc, f"-arch={build.gpu_arch()}", *build.NVCC_FLAGS, "-o", str(out / "library.so"), SOURCE]
    subprocess.run(argv, cwd=DEMO, capture_output=True, check=True)


def empty_step(folder: Path) -> None:
    """One step that does nothing, contained as a build step is: the fixed cost of the containment (a build has two)."""
    space = runspace.default()
    where = build_box.box(space.root)
    work = build_box.make_work(space, DEMO, where)
    try:
        build_box.run(["/bin/true"], work, where, build_box.BuildLimits(), space)
    finally:
        shutil.rmtree(work.scratch, ignore_errors=True)


def contained(cache: Path) -> None:
    result = build.build(DEMO, SOURCE, EXPORTS, cache=cache)
    if not result.ok:
        raise RuntimeError(result.message)


def baseline(module: ModuleType) -> Callable[[Path], None]:
    def run(cache: Path) -> None:
        if not module.build(DEMO, SOURCE, EXPORTS, cache=cache).ok:
            raise RuntimeError("the baseline build failed")

    return run


def load_baseline(repo: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location("baseline_build", repo / "plugins" / "isolate" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed(action: Callable[[Path], None], folder: Path) -> float:
    start = time.perf_counter()
    action(folder)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--baseline-repo", type=Path, help="a checkout whose plugins/isolate/build.py is compared")
    args = parser.parse_args()
    if build.nvcc_path() is None:
        sys.exit("no nvcc on this machine")
    print(f"containment: {build_box.box(runspace.default().root).describe()}")
    actions: dict[str, tuple[Callable[[Path], None], bool]] = {"nvcc alone": (nvcc_alone, False)}
    if args.baseline_repo:
        old = baseline(load_baseline(args.baseline_repo))
        actions |= {"baseline cold": (old, False), "baseline cached": (old, True)}
    actions |= {"contained cold": (contained, False), "contained cached": (contained, True)}
    actions["one empty step"] = (empty_step, False)
    times: dict[str, list[float]] = {name: [] for name in actions}
    for _ in range(args.rounds):
        with tempfile.TemporaryDirectory() as base:
            for name, (action, warm) in actions.items():
                folder = Path(base) / name.split()[0]
                folder.mkdir(exist_ok=True)
                if warm and not any(folder.iterdir()):
                    action(folder)  # fills this cache (only when the cold run did not)
                times[name].append(timed(action, folder))
    for name, values in times.items():
        print(f"{name:18s} median {statistics.median(values):7.3f} s  min {min(values):7.3f}  max {max(values):7.3f}")


if __name__ == "__main__":
    main()

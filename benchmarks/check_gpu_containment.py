"""What a sandbox child can see and do on a GPU host: a NumPy child's walls, and a CUDA kernel built and run inside.

    python benchmarks/check_gpu_containment.py            # on the GPU machine (bubblewrap on PATH); prints JSON lines

Three children are started the way a GPU grading run starts them (``--device=cuda``, ``plugins/isolate/sandbox.py``):

1. a NumPy child (flash attention): it reports from inside its uid, namespaces (compared with the grader's), whether it
   can see or write the run folder and the truths, the grader's process, the NVIDIA device files and a GPU;
2. a GPU child (a torch submission of ternary training): the same facts, then it compiles a CUDA kernel with nvcc in
   its own private /tmp, loads it with ctypes and runs it on the GPU, and runs a torch kernel;
3. the grader's own path for the CUDA challenge: demo-tiled's softmax + top-k built, one run case judged in the sandbox.

It prints the host's containment facts first (``containment.probe``, the GPU rung chosen and what it binds). It
asserts nothing: it is the record the README's threat model quotes, rerun on any new host.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from plugins.base.host import visible_gpus  # noqa: E402
from plugins.isolate import containment, runspace  # noqa: E402
from plugins.isolate.sandbox import Limits, Program, Sandbox  # noqa: E402

# Runs inside the child: every fact it can gather about its own walls, as one JSON line in an exception's message.
FACTS = textwrap.dedent(
    """
    import json, os, socket

    def _facts(run_root, grader_pid):
        def probe(call):
            try:
                return call()
            except Exception as exc:
                return f"refused: {type(exc).__name__}"
        def write(folder):  # the file stays: the grader then looks for it in the real folder
            def attempt():
                with open(os.path.join(folder, "planted.pkl"), "wb") as handle:
                    handle.write(b"x")
                return "written"
            return probe(attempt)
        namespaces = {n: probe(lambda n=n: os.readlink(f"/proc/self/ns/{n}")) for n in
                      ("user", "pid", "mnt", "net", "ipc", "uts", "cgroup")}
        nvidia = sorted(n for n in os.listdir("/dev") if n.startswith("nvidia"))
        return {
            "uid": os.getuid(), "gid": os.getgid(), "pid": os.getpid(), "ppid": os.getppid(),
            "uid_map": probe(lambda: " ".join(open("/proc/self/uid_map").read().split())),
            "namespaces": namespaces,
            # bwrap recreates the path to the child's own folder on an empty private tmpfs: the real run folder is
            # the one that holds the manifest.
            "sees_run_manifest": os.path.exists(os.path.join(run_root, "manifest.json")),
            "run_folder_listing": probe(lambda: sorted(os.listdir(run_root))[:8]),
            "run_folder_write": write(run_root),
            "truths_write": write(os.path.join(run_root, "truths")),
            "sees_grader_process": os.path.exists(f"/proc/{grader_pid}"),
            "root_write": write("/"),
            "cwd_write": write("."),
            "nvidia_device_files": nvidia,
            "nvidiactl_opens": probe(lambda: os.close(os.open("/dev/nvidiactl", os.O_RDWR)) or "opened"),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "network_interfaces": probe(lambda: sorted(name for _, name in socket.if_nameindex())),
            "hostname": socket.gethostname(),
        }
    """
)

KERNEL = r"""
extern "C" __global__ void add_one(float* x, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) x[i] += 1.0f;
}
extern "C" int run(int n, float* out) {
    float* d; if (cudaMalloc(&d, n * sizeof(float)) != cudaSuccess) return 1;
    cudaMemset(d, 0, n * sizeof(float));
    add_one<<<(n + 255) / 256, 256>>>(d, n);
    if (cudaMemcpy(out, d, n * sizeof(float), cudaMemcpyDeviceToHost) != cudaSuccess) return 2;
    cudaFree(d); return cudaGetLastError();
}
"""

# The GPU child: facts, then nvcc in its private /tmp, ctypes, one kernel launch; then a torch kernel.
GPU_CHILD = FACTS + textwrap.dedent(
    f"""
    import ctypes, subprocess, tempfile, time
    KERNEL = {KERNEL!r}

    def ternarize(w, group):
        facts = _facts(RUN_ROOT, GRADER_PID)
        folder = tempfile.mkdtemp()
        with open(os.path.join(folder, "k.cu"), "w") as handle:
            handle.write(KERNEL)
        start = time.monotonic()
        built = subprocess.run(["nvcc", "-O2", "-Xcompiler", "-fPIC", "-shared", "-o", "k.so", "./k.cu"],
                               cwd=folder, capture_output=True, text=True)
        facts["nvcc_in_sandbox"] = {{"exit": built.returncode, "seconds": round(time.monotonic() - start, 1),
                                    "log": (built.stdout + built.stderr)[-300:]}}
        if built.returncode == 0:
            out = (ctypes.c_float * 1000)()
            code = ctypes.CDLL(os.path.join(folder, "k.so")).run(1000, out)
            facts["kernel_in_sandbox"] = {{"status": code, "sum": sum(out)}}
        import torch
        facts["torch_cuda"] = torch.cuda.is_available()
        if facts["torch_cuda"]:
            x = torch.arange(1 << 20, device="cuda", dtype=torch.float64)
            facts["torch_kernel_sum"] = float((x * 2).sum())
            facts["gpu_name"] = torch.cuda.get_device_name()
        raise RuntimeError("FACTS" + json.dumps(facts))
    """
)

NUMPY_CHILD = FACTS + textwrap.dedent(
    """
    def flash_attention_fwd(Q, K, V, tile_size, causal=True):
        raise RuntimeError("FACTS" + json.dumps(_facts(RUN_ROOT, GRADER_PID)))
    """
)


def own_namespaces() -> dict[str, str]:
    return {n: os.readlink(f"/proc/self/ns/{n}") for n in ("user", "pid", "mnt", "net", "ipc", "uts", "cgroup")}


def child_facts(
    tmp: Path, name: str, driver: str, entry: str, source: str, case_id: str, limits: Limits, runtime: str = "python"
) -> Any:
    """Start one child of ``driver`` in ``runtime`` (the torch runtime is handed the GPU) whose ``entry`` reports its
    facts, run case ``case_id``, return what it said."""
    space = runspace.default()
    (space.root / "truths").mkdir(mode=0o700, exist_ok=True)
    folder = tmp / name
    folder.mkdir()
    header = f"RUN_ROOT = {str(space.root)!r}\nGRADER_PID = {os.getpid()}\n"
    (folder / "impl.py").write_text(header + source)
    reference = __import__(driver, fromlist=["CASES"])
    case = next(c for c in reference.CASES if c.id == case_id)
    inputs = reference.make_inputs(case, np.random.default_rng(0))
    sandbox = Sandbox(Program(driver, ((entry, "impl.py"),), folder, runtime), limits, REPO, space)
    try:
        outcome = sandbox.run(inputs, dict(case.params), {})
        rung = {"gpu_child": getattr(sandbox, "gpu", None), "rung": getattr(sandbox, "rung", None)}
    finally:
        sandbox.close()
    # The message is cut at 500 characters; the traceback's last line holds the whole of it.
    text = outcome.traceback.rpartition("FACTS")[2].strip()
    facts = json.loads(text) if text else {"outcome": outcome.status, "message": outcome.message[-800:]}
    planted = [space.root / "planted.pkl", space.root / "truths" / "planted.pkl"]
    facts["planted_in_the_real_run_folder"] = [str(p.relative_to(space.root)) for p in planted if p.exists()]
    for path in planted:
        path.unlink(missing_ok=True)
    if isinstance(facts, dict) and "namespaces" in facts:
        mine = own_namespaces()
        facts["namespaces_shared_with_grader"] = sorted(n for n, v in facts["namespaces"].items() if v == mine[n])
        del facts["namespaces"]
    return {**rung, **facts}


def cuda_challenge(limits: Limits) -> dict[str, Any]:
    """demo-tiled's softmax + top-k built and one run case judged in the sandbox, as a grading run does it."""
    from plugins.compare.judge import judge
    from plugins.discover.submissions import discover
    from plugins.isolate import gpu_cases
    from reference import softmax_topk as topk

    submission = next(
        s for s in discover(REPO / "submissions") if s.model == "demo-tiled" and s.challenge == "softmax_topk"
    )
    source = {f for _, f in submission.entries}.pop()
    space = runspace.default()
    space.copy_submissions([submission.folder])  # a grading run builds from its private copy, never the original
    result = gpu_cases.built(submission.folder, source, tuple(n for n, _ in submission.entries), space)
    if not result.ok:
        return {"build": result.message}
    case = next(c for c in topk.CASES if not c.params.get("build") and not c.is_speed)
    inputs = topk.make_inputs(case, np.random.default_rng(0))
    program = Program(
        topk.__name__, tuple((n, result.library.name) for n, _ in submission.entries), result.library.parent, "cuda"
    )
    sandbox = Sandbox(program, limits, REPO, space)
    try:
        outcome = sandbox.run(inputs, dict(case.params), {})
        rung = getattr(sandbox, "rung", None)
    finally:
        sandbox.close()
    record = judge(submission, case, topk.CASES.index(case), topk.expected(case, inputs), outcome)
    return {"case": case.id, "outcome": record.outcome, "message": record.message[-300:],
            "rung": rung}  # fmt: skip


def main() -> None:
    import tempfile

    gpus = visible_gpus()
    limits = Limits(
        call_timeout_s=180, memory_bytes=16 << 30, device="cuda" if gpus else "cpu", gpu=gpus[0] if gpus else None
    )
    level = containment.probe()
    print(json.dumps({"host": level.to_dict(), "gpus": gpus, "uid": os.getuid()}))
    if gpus and importlib.util.find_spec("plugins.isolate.gpu_rung"):
        from plugins.isolate import gpu_rung

        space = runspace.default()
        mode = gpu_rung.gpu_mode(level, space.cgroup_parent(level), REPO, limits.gpu, gpu_rung.record_path(space.root))
        print(json.dumps({"gpu_rung": mode.to_dict() | {"warning": mode.warning}}))
    with tempfile.TemporaryDirectory() as tmp:
        numpy = child_facts(Path(tmp), "numpy", "reference.flash_attention", "flash_attention_fwd", NUMPY_CHILD,
                            "b1-h2-n40-d64-t64-causal", limits)  # fmt: skip
        print(json.dumps({"numpy_child": numpy}))
        ternary = __import__("reference.ternary_training", fromlist=["CASES"])
        layer1 = next(c.id for c in ternary.CASES if c.params.get("layer") == 1)
        print(json.dumps({"gpu_child": child_facts(Path(tmp), "gpu", "reference.ternary_training", "ternarize",
                                                   GPU_CHILD, layer1, limits, "torch")}))  # fmt: skip
    if gpus:
        print(json.dumps({"cuda_challenge": cuda_challenge(limits)}))


if __name__ == "__main__":
    main()

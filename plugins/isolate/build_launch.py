"""Start one contained build step: ``python -I -S build_launch.py SPEC ARGV...``, run by the grader as its own user.

It makes the changes that must precede the step's first instruction, in this order, then execs ``ARGV``:

1. joins the build's cgroup (``cgroup``: a folder), while it may still write the grader's cgroup files;
2. leaves the network (``unshare_net``): a network namespace of its own whose only device is a loopback that is down
   (directly as root; through a user namespace of its own otherwise, where the kernel allows one);
3. sets the resource limits (``rlimits``: name -> value, soft and hard alike);
4. becomes ``uid``/``gid`` with no supplementary groups, where given;
5. execs ``ARGV`` with exactly the environment ``env``.

Stdlib only and without site packages (``-S``): nothing of the grader's environment runs here. A step this script
cannot start exits 126 with the reason on stderr, which is the step's log.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CANNOT_START = 126


def leave_network() -> None:
    """A network namespace of this process's own: as root directly, else inside a new user namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = CLONE_NEWNET if os.geteuid() == 0 else CLONE_NEWUSER | CLONE_NEWNET
    if libc.unshare(flags) != 0:
        raise OSError(ctypes.get_errno(), f"unshare: {os.strerror(ctypes.get_errno())}")


def main(spec: dict, argv: list[str]) -> None:
    if spec.get("cgroup"):
        with open(os.path.join(spec["cgroup"], "cgroup.procs"), "w") as procs:
            procs.write(str(os.getpid()))
    if spec.get("unshare_net"):
        leave_network()
    for name, value in spec.get("rlimits", {}).items():
        resource.setrlimit(getattr(resource, name), (value, value))
    if spec.get("uid") is not None:
        os.setgroups([])
        os.setgid(spec["gid"])
        os.setuid(spec["uid"])
    os.execve(argv[0], argv, spec["env"])


if __name__ == "__main__":
    try:
        main(json.loads(sys.argv[1]), sys.argv[2:])
    except (OSError, ValueError, KeyError, IndexError) as exc:
        sys.stderr.write(f"kernelgrade: the build step could not start: {exc}\n")
        sys.exit(CANNOT_START)

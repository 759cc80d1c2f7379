"""``kernelgrade``: scaffold a model's prompts, check a submission against the contracts, grade.

    kernelgrade new MODEL [--submissions-dir=PATH]     submissions/MODEL/<challenge>/PROMPT.md for every challenge
    kernelgrade check PATH [--json] [--no-import]      entry points, near misses, import side effects, adapter skeleton
    kernelgrade grade [PYTEST ARGS...]                 python -m pytest from the checkout, with these arguments

It runs from a checkout of the grader, or from an editable install of one (``pip install -e .``): the specs, the
contracts and the grading suite are read from the checkout. ``python -m plugins.cli.main`` is the same command.
Exit status: ``new`` 0 or 1 (nothing created); ``check`` 0 when every entry point of every folder is found and its
files import cleanly, 1 otherwise, 2 when PATH holds no challenge folder; ``grade`` pytest's own.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from plugins.cli import REPO, shown_path

# The --help text: the module docstring's first line is reST (``kernelgrade``), which a terminal shows as is.
DESCRIPTION = "kernelgrade: scaffold a model's prompts, check a submission against the contracts, grade."
# Options of the grading run that take a path: made absolute before pytest runs from the checkout.
PATH_OPTIONS = ("--submissions-dir", "--reports-dir", "--rubric", "--train-data", "--baseline", "--judge-grades")


def _parser() -> argparse.ArgumentParser:
    from plugins.cli.tinycall import TINY_CALL_LIMIT_S
    from plugins.config import DEFAULT_CALL_TIMEOUT_S  # here, not on top: it loads pytest, which `grade` runs apart

    parser = argparse.ArgumentParser(prog="kernelgrade", description=DESCRIPTION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    new = commands.add_parser("new", help="create submissions/MODEL/<challenge>/PROMPT.md for every challenge")
    new.add_argument("model", metavar="MODEL", help="the model's folder name")
    new.add_argument(
        "--submissions-dir", metavar="PATH", help=f"where model folders live (default: {REPO / 'submissions'})"
    )
    check = commands.add_parser("check", help="how the challenge folders under PATH meet the contracts")
    check.add_argument("path", metavar="PATH", help="submissions/MODEL, one challenge folder, or a foreign repo")
    check.add_argument("--json", action="store_true", help="print the findings as JSON")
    check.add_argument("--no-import", action="store_true", help="read the source only; do not import it")
    check.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_CALL_TIMEOUT_S,
        metavar="SECONDS",
        help=f"limit on one import (default: {DEFAULT_CALL_TIMEOUT_S:g}, the grading run's --call-timeout)",
    )
    check.add_argument(
        "--call-limit",
        type=float,
        default=TINY_CALL_LIMIT_S,
        metavar="SECONDS",
        help=f"limit on the one tiny call of each entry point made after the import (default: {TINY_CALL_LIMIT_S:g})",
    )
    commands.add_parser(
        "grade", help="python -m pytest from the checkout with the arguments that follow", add_help=False
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["grade"]:  # everything after "grade" belongs to pytest, --help included
        return grade(argv[1:])
    args = _parser().parse_args(argv)
    if args.command == "new":
        return new(args.model, Path(args.submissions_dir) if args.submissions_dir else None)
    limits = (args.timeout, args.call_limit)
    return check(Path(args.path), as_json=args.json, run_import=not args.no_import, limits=limits)


def new(model: str, submissions_dir: Path | None) -> int:
    from plugins.base.inert import terminal
    from plugins.cli.scaffold import ScaffoldError, create
    from plugins.discover.submissions import submissions_root
    from reference.tasks import FILE_NAME as TASK_FILE

    root = submissions_root(submissions_dir.expanduser()) if submissions_dir else REPO / "submissions"
    try:
        created = create(model, root)
    except ScaffoldError as exc:
        print(f"kernelgrade new: {terminal(exc)}", file=sys.stderr)
        return 1
    folder = terminal(shown_path(root / model))
    print(f"created {folder}/ with {len(created)} prompts and {TASK_FILE} (task profile kernelgrade):")
    width = max(len(c.challenge) for c in created)
    for c in created:
        print(f"  {c.challenge:<{width}}  {terminal(shown_path(c.prompt))}  ({c.title})")
    select = shlex.quote(f"--model={model}")  # a line to paste into a shell
    default_root = root.resolve() == (REPO / "submissions").resolve()
    if Path.cwd().resolve() == REPO:  # the README's own command works here
        where = "" if default_root else " " + shlex.quote(f"--submissions-dir={shown_path(root)}")
        grade_line = f"python -m pytest {select}{where}"
    else:  # pytest must run from the checkout: kernelgrade grade does that
        where = "" if default_root else " " + shlex.quote(f"--submissions-dir={root.resolve()}")
        grade_line = f"kernelgrade grade {select}{where}"
    print(
        "next:\n"
        "  1. give each PROMPT.md to the model, one conversation per challenge\n"
        "  2. save the code it writes beside the prompt (any file names; .cu for CUDA C++)\n"
        f"  3. kernelgrade check {folder}    (entry points found, near misses, an adapter skeleton)\n"
        f"  4. {terminal(grade_line)}    (grade it; reports in {terminal(shown_path(REPO / 'reports'))}/)"
    )
    return 0


def check(path: Path, as_json: bool, run_import: bool, limits: tuple[float, float]) -> int:
    """Check every folder under ``path``; ``limits``: (seconds for one import, seconds for one tiny call)."""
    from plugins.base.inert import terminal
    from plugins.cli.check import CheckError, check_folder, find
    from plugins.cli.render import folder_text, summary_text

    try:
        submissions = find(path)
    except CheckError as exc:
        print(f"kernelgrade check: {terminal(exc)}", file=sys.stderr)
        return 2
    results = []
    for sub in submissions:
        result = check_folder(sub, run_import=run_import, timeout_s=limits[0], call_limit_s=limits[1])
        results.append(result)
        if not as_json:
            print(folder_text(result) + "\n", flush=True)
    ok = all(r.ok for r in results)
    if as_json:
        print(json.dumps({"path": str(path), "ok": ok, "folders": [r.to_json() for r in results]}, indent=1))
    else:
        print(summary_text(results))
    return 0 if ok else 1


def grade(pytest_args: list[str]) -> int:
    """Run the grading suite from the checkout (see :func:`pytest_command`); pytest's exit status is returned."""
    if not (REPO / "pytest.ini").is_file():
        import pytest  # only for its exit status: the suite itself runs in its own process

        print(
            f"kernelgrade grade: no pytest.ini in {REPO}: run it from a checkout (or an editable install)",
            file=sys.stderr,
        )
        return int(pytest.ExitCode.USAGE_ERROR)  # the status pytest itself gives a run it cannot start
    try:
        return subprocess.call(pytest_command(pytest_args), cwd=REPO)
    except KeyboardInterrupt:
        return 130


def pytest_command(pytest_args: list[str]) -> list[str]:
    """``python -m pytest ARGS`` to run from the checkout: a path option, given as ``--option=PATH`` or as
    ``--option PATH``, becomes ``--option=ABSOLUTE-PATH`` (made absolute against the caller's folder, since pytest
    then runs from another one; joined with ``=``, since pytest itself takes a path after a space for a test path
    when it chooses its root folder, before it knows the grader's options). ``--baseline=last`` or a run number
    stays as it is."""
    fixed, args = [], list(pytest_args)
    while args:
        arg = args.pop(0)
        option, eq, value = arg.partition("=")
        if not eq and _takes_path(arg, args[0] if args else "") and args:
            option, eq, value = arg, "=", args.pop(0)
        if eq and _takes_path(option, value) and value:
            arg = f"{option}={_absolute(value)}"
        fixed.append(arg)
    return [sys.executable, "-m", "pytest", *fixed]


def _takes_path(option: str, value: str) -> bool:
    """Whether ``option`` with ``value`` names a path: the options of :data:`PATH_OPTIONS` (``--baseline`` unless
    ``last`` or a run number), and ``--task`` when the value reads as a path (a .toml, a separator, or a file that
    exists), so a mistyped path is reported as a missing file, not as an unknown profile name."""
    if option == "--baseline" and (value == "last" or value.isdigit()):
        return False
    if option == "--task":
        return value.endswith(".toml") or os.sep in value or os.path.exists(os.path.expanduser(value))
    return option in PATH_OPTIONS


def _absolute(value: str) -> str:
    return value if os.path.isabs(os.path.expanduser(value)) else str(Path(value).expanduser().resolve())


def run() -> int:
    """The console script: ``main`` with a closed pipe (``kernelgrade check ... | head``) ending quietly."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 1


if __name__ == "__main__":
    sys.exit(run())

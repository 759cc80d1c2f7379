#!/usr/bin/env bash
# Set up a fresh machine for kernelgrade: the Python packages, and the system tools the sandbox and the self-tests use.
#   bash setup.sh             what grading needs: requirements.txt, and bubblewrap (the sandbox; without it the grader
#                             falls back to weaker isolation and says so in every report)
#   bash setup.sh selftests   the same, plus Chromium (a self-test renders report.html in a real headless browser)
#   bash setup.sh slurm       the same as plain, plus a single-node Slurm on this machine (apt's slurm-wlm and munge,
#                             as root): the self-test selftests/test_slurm.py submits the sharded example to it
# System packages are installed only where apt-get is usable (root, Debian-like); elsewhere they are named, not forced.
set -euo pipefail
cd "$(dirname "$0")"
want=(bubblewrap)
[[ ${1:-} == selftests ]] && want+=(chromium)
missing=()
command -v bwrap >/dev/null || missing+=(bubblewrap)
[[ " ${want[*]} " == *" chromium "* ]] && ! command -v chromium >/dev/null && missing+=(chromium)
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  else
    echo "setup.sh: please install ${missing[*]} (not root, or no apt-get); continuing without" >&2
  fi
fi
python -m pip install --quiet --disable-pip-version-check -r requirements.txt
# The kernelgrade command (new, check, grade): this checkout, installed editable (no pytest plugin is installed). Offline
# with the setuptools already here, else through pip's build isolation; the two README commands do not need it.
python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e . 2>/dev/null ||
  python -m pip install --quiet --disable-pip-version-check --no-deps -e . ||
  echo "setup.sh: the kernelgrade command was not installed; python -m plugins.cli.main is the same" >&2
if [[ ${1:-} == slurm ]]; then
  bash docs/examples/slurm_single_node.sh
fi

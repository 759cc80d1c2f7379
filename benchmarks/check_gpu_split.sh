#!/bin/bash
# A host with several GPUs: grade the whole roster over all GPUs, then on GPU 0 only, and compare. Prints whether the
# grades and case outcomes are equal and how many cases and workers each GPU had (from the records' ran_on).
#   bash benchmarks/check_gpu_split.sh [WORKERS]        (default 16; reports in /tmp/kg-gpus-all and /tmp/kg-gpus-one)
set -u
W=${1:-16}
S=20261130
python3 -m pytest -n "$W" -q -p no:cacheprovider --seed=$S --no-speed --reports-dir=/tmp/kg-gpus-all | tail -1
CUDA_VISIBLE_DEVICES=0 python3 -m pytest -n "$W" -q -p no:cacheprovider --seed=$S --no-speed \
  --reports-dir=/tmp/kg-gpus-one | tail -1
python3 - <<'PY'
import collections
import json

every = json.load(open("/tmp/kg-gpus-all/results.json"))
one = json.load(open("/tmp/kg-gpus-one/results.json"))


def grades(s):
    return {(m, c): (g["letter"], g.get("points")) for m, d in s["models"].items() for c, g in d["challenges"].items()}


def outcomes(s):
    return {(c["model"], c["challenge"], c["case"]): c["outcome"] for c in s["cases"]}


print("grades equal:", grades(every) == grades(one), len(grades(every)), "graded pairs")
print("case outcomes equal:", outcomes(every) == outcomes(one), len(outcomes(every)), "cases")
for name, s in (("all GPUs", every), ("GPU 0 only", one)):
    cases = collections.Counter((c.get("ran_on") or {}).get("gpu") for c in s["cases"])
    workers = collections.defaultdict(set)
    for c in s["cases"]:
        where = c.get("ran_on") or {}
        workers[where.get("gpu")].add(where.get("worker"))
    print(name, "cases per GPU:", dict(cases), "workers per GPU:", {g: len(w) for g, w in workers.items()})
PY

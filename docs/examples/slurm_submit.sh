#!/bin/bash
# Grade the roster in 8 shards on a Slurm cluster, then merge them into reports/ once every shard has ended.
# Run from the grader's checkout: bash docs/examples/slurm_submit.sh
set -eu
mkdir -p logs  # Slurm does not create the folder of --output
shards=$(sbatch --parsable --export=ALL,SEED=20261130 docs/examples/slurm_grade_shards.sbatch)
# afterany, not afterok: a shard that was killed still leaves its cases.jsonl, and the merge marks the result incomplete.
sbatch --dependency="afterany:${shards%%;*}" --job-name=kernelgrade-merge --output=logs/merge.log \
    --wrap "python -m plugins.report.merge reports shards/[0-9]*"

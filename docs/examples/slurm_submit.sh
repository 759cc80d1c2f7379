#!/bin/bash
# Grade the roster in shards on a Slurm cluster, then merge them into one set of reports once every shard has ended.
# Run from the grader's checkout: bash docs/examples/slurm_submit.sh
# Resources come from the environment, never from this file:
#   SHARDS          shards in the job array (default 8)
#   CPUS_PER_SHARD  cores per shard (default: the CPUs of the partition's first node, as sinfo says)
#   GPUS_PER_SHARD  GPUs per shard (default: 1 where the partition's nodes have a gpu gres, else 0: a CPU run)
#   SEED            the inputs' seed, the same for every shard (default 20261130)
#   SHARDS_DIR, REPORTS, LOGS   where the shards' reports, the merged reports and the logs go (shards, reports, logs)
#   GRADE_ARGS      extra pytest arguments for every shard (say --submissions-dir=PATH)
# Prints the two job ids (the array's, then the merge's) on its last line.
set -eu
shards=${SHARDS:-8}
cpus=${CPUS_PER_SHARD:-$(sinfo -h -o %c | head -1)}
gpus=${GPUS_PER_SHARD:-$(sinfo -h -o %G | grep -q 'gpu' && echo 1 || echo 0)}
logs=${LOGS:-logs}
mkdir -p "$logs"  # Slurm does not create the folder of --output
resources=(--array="1-$shards" --cpus-per-task="$cpus" --output="$logs/shard-%a.log")
if [ "$gpus" -gt 0 ]; then resources+=(--gres="gpu:$gpus"); fi
array=$(sbatch --parsable --export="ALL,SEED=${SEED:-20261130}" "${resources[@]}" \
    docs/examples/slurm_grade_shards.sbatch)
# afterany, not afterok: a shard that was killed still leaves its cases.jsonl, and the merge marks the result incomplete.
merge=$(sbatch --parsable --dependency="afterany:${array%%;*}" --job-name=kernelgrade-merge \
    --output="$logs/merge.log" --wrap "python -m plugins.report.merge ${REPORTS:-reports} ${SHARDS_DIR:-shards}/[0-9]*")
echo "shards job ${array%%;*}, merge job ${merge%%;*}"

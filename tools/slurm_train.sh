#!/usr/bin/env bash
# Training on a SLURM cluster: tools/slurm_train.sh PARTITION JOB_NAME CONFIG [train.py args]
# GPUS (total tasks, default 8), GPUS_PER_NODE (tasks per node, default 8),
# CPUS_PER_TASK (default 5), SRUN_ARGS (extra srun arguments). On CPU-only
# nodes set GRES="" and the tasks run with gloo.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
GRES=${GRES-"--gres=gpu:${GPUS_PER_NODE}"}
SRUN_ARGS=${SRUN_ARGS:-""}
PYTHON=${PYTHON:-python}

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
srun -p "${PARTITION}" \
  --job-name="${JOB_NAME}" \
  ${GRES} \
  --ntasks="${GPUS}" \
  --ntasks-per-node="${GPUS_PER_NODE}" \
  --cpus-per-task="${CPUS_PER_TASK}" \
  --kill-on-bad-exit=1 \
  ${SRUN_ARGS} \
  "$PYTHON" -u "$(dirname "$0")/train.py" "${CONFIG}" --launcher slurm "${@:4}"

#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG N [train.py args]
# N processes per node: GPUs with nccl, or CPU processes with gloo where no GPU
# is visible. Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT. MAX_RESTARTS
# (default 0) restarts the job that many times after a failure (with --resume
# it goes on from the last checkpoint). Bad input ends the job with one
# "error: ..." line from rank 0 and status 2 (tools/dist_run.py).
set -e
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
MAX_RESTARTS=${MAX_RESTARTS:-0}
PYTHON=${PYTHON:-python}

if [[ -z $CONFIG || -z $NPROC ]]; then
  echo "usage: $0 CONFIG NUM_PROCESSES [train.py arguments]" >&2
  exit 2
fi
source "$(dirname "$0")/launch_args.sh"
check_launch_numbers "$0 $CONFIG 8"

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" "$(dirname "$0")/dist_run.py" \
  --nnodes="$NNODES" \
  --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" \
  --master_port="$PORT" \
  --max-restarts="$MAX_RESTARTS" \
  "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"

#!/usr/bin/env bash
# Distributed training with torchrun: tools/dist_train.sh CONFIG N [train.py args]
# N processes per node: GPUs with nccl, or CPU processes with gloo where no GPU
# is visible. Multi-node: NNODES, NODE_RANK, MASTER_ADDR, PORT.
set -e
CONFIG=$1
NPROC=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
PYTHON=${PYTHON:-python}

if [[ -z $CONFIG || -z $NPROC ]]; then
  echo "usage: $0 CONFIG NUM_PROCESSES [train.py arguments]" >&2
  exit 2
fi

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" -m torch.distributed.run \
  --nnodes="$NNODES" \
  --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" \
  --master_port="$PORT" \
  "$(dirname "$0")/train.py" "$CONFIG" --launcher pytorch "${@:3}"

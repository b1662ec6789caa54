#!/usr/bin/env bash
# Distributed testing with torchrun: tools/dist_test.sh CONFIG CHECKPOINT N [test.py args]
# Same variables as tools/dist_train.sh (NNODES, NODE_RANK, MASTER_ADDR, PORT).
set -e
CONFIG=$1
CHECKPOINT=$2
NPROC=$3
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
MAX_RESTARTS=0
PYTHON=${PYTHON:-python}

if [[ -z $CONFIG || -z $CHECKPOINT || -z $NPROC ]]; then
  echo "usage: $0 CONFIG CHECKPOINT NUM_PROCESSES [test.py arguments]" >&2
  exit 2
fi
source "$(dirname "$0")/launch_args.sh"
check_launch_numbers "$0 $CONFIG $CHECKPOINT 8"

PYTHONPATH="$(dirname "$0")/..":${PYTHONPATH:-} \
"$PYTHON" "$(dirname "$0")/dist_run.py" \
  --nnodes="$NNODES" \
  --node_rank="$NODE_RANK" \
  --master_addr="$MASTER_ADDR" \
  --nproc_per_node="$NPROC" \
  --master_port="$PORT" \
  "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" --launcher pytorch "${@:4}"

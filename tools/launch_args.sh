# Checks of the launchers' numeric arguments, sourced by tools/dist_train.sh
# and tools/dist_test.sh: a bad one stops the launcher with one line and
# status 2, as the Python tools do, before torchrun starts.

# check_value NAME VALUE PATTERN WHAT EXAMPLE: VALUE must match the regex
# PATTERN, which WHAT describes.
check_value() {
  if ! [[ $2 =~ ^($3)$ ]]; then
    echo "error: $1 must be $4, got '$2': e.g. $5" >&2
    exit 2
  fi
}

# check_launch_numbers USAGE_EXAMPLE: the process count NPROC (torchrun also
# takes auto, cpu, gpu) and the variables every launcher reads.
check_launch_numbers() {
  check_value NUM_PROCESSES "$NPROC" '[1-9][0-9]*|auto|cpu|gpu' \
    'a number of processes per node (1 or more)' "$1"
  check_value NNODES "$NNODES" '[1-9][0-9]*(:[1-9][0-9]*)?' \
    'a number of nodes (or MIN:MAX)' NNODES=2
  check_value NODE_RANK "$NODE_RANK" '[0-9]+' 'a whole number' NODE_RANK=0
  check_value PORT "$PORT" '[0-9]+' 'a port number' PORT=29500
  check_value MAX_RESTARTS "$MAX_RESTARTS" '[0-9]+' 'a whole number' \
    MAX_RESTARTS=3
}

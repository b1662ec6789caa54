#!/usr/bin/env bash
# Lint (flake8, isort, yapf) and run the test suite in the tested
# environment (set up first if needed).
#   tools/run_tests.sh [pytest arguments]
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LOCALVIT_VENV:-$ROOT/.venv}
bash "$ROOT/tools/setup_env.sh"
bash "$ROOT/tools/data/prepare_fashion_mnist.sh"
bash "$ROOT/tools/lint.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest tests -p no:cacheprovider --durations=15 "$@"

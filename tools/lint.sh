#!/usr/bin/env bash
# OpenMMLab's lint (flake8, isort, yapf; settings in setup.cfg) on the whole
# tree, as the pre-commit hooks run it. Exits non-zero on the first finding.
#   tools/lint.sh          check
#   tools/lint.sh --fix    rewrite imports and formatting in place
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LOCALVIT_VENV:-$ROOT/.venv}
cd "$ROOT"
mapfile -t FILES < <(git ls-files --cached --others --exclude-standard '*.py')
if [[ ${1:-} == --fix ]]; then
  "$VENV/bin/isort" -q "${FILES[@]}"
  "$VENV/bin/yapf" -i "${FILES[@]}"
fi
"$VENV/bin/flake8" "${FILES[@]}"
"$VENV/bin/isort" --check-only --diff -q "${FILES[@]}"
"$VENV/bin/yapf" --diff "${FILES[@]}"
echo "[lint] flake8, isort and yapf clean on ${#FILES[@]} files"

#!/usr/bin/env bash
# Create or update the virtual environment with the tested OpenMMLab stack.
#
#   tools/setup_env.sh            # .venv in the repository root
#   LOCALVIT_VENV=/path tools/setup_env.sh
#
# The stack is pinned in requirements/constraints.txt. mmcv 2.1.0 ships only an
# sdist, so its wheel is built once (with the C++ ops, and the CUDA ops when a
# GPU and nvcc are present) and cached outside the repository, keyed by the
# torch version, in ${LOCALVIT_CACHE:-~/.cache/localvit_mm}. A second run with
# nothing to do only checks a stamp and returns.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LOCALVIT_VENV:-$ROOT/.venv}
PYTHON=${PYTHON:-python3}
CACHE=${LOCALVIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/localvit_mm}
REQ=$ROOT/requirements
STEP="start"
HINT=""

step() { STEP=$1; HINT=$2; echo "[setup_env] $STEP"; }
trap 'echo "[setup_env] FAILED at step \"$STEP\". $HINT" >&2' ERR

stamp_of() {
  cat "$REQ"/*.txt "$ROOT/setup.py" "$ROOT"/localvit_mm/ops/csrc/* "${BASH_SOURCE[0]}" |
    sha256sum | cut -c1-16
}
STAMP_FILE=$VENV/.localvit_mm_stamp
if [[ -f $STAMP_FILE && $(cat "$STAMP_FILE") == "$(stamp_of)" ]] &&
   "$VENV/bin/python" -c "import torch, localvit_mm._ext, mmcv.ops" 2>/dev/null; then
  echo "[setup_env] $VENV is up to date"
  exit 0
fi

step "create the virtual environment at $VENV" \
  "Check that '$PYTHON -m venv' works (Debian: apt-get install python3-venv) and that the path is writable."
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
export PATH=$VENV/bin:$PATH
PIP=(python -m pip install --disable-pip-version-check -q)

step "install build tools (pip, setuptools<82, wheel, ninja)" \
  "setuptools must stay < 82: mmcv's setup.py and mmengine's 'pkg::' config lookup need pkg_resources."
"${PIP[@]}" --upgrade pip
"${PIP[@]}" -c "$REQ/constraints.txt" setuptools wheel ninja

step "install torch and torchvision" \
  "The registry build 'torch==2.13.0' (not the local +cpu wheel, which has no matching torchvision) must be reachable."
"${PIP[@]}" -c "$REQ/constraints.txt" torch torchvision

TORCH_VERSION=$(python -c "import torch; print(torch.__version__)")
PY_TAG=$(python -c "import sys; print(f'cp{sys.version_info[0]}{sys.version_info[1]}')")
if command -v nvcc >/dev/null && python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  OPS=cuda
  export FORCE_CUDA=1
else
  OPS=cpu
fi
WHEELS=$CACHE/mmcv/torch-$TORCH_VERSION-$PY_TAG-$OPS
MMCV_VERSION=$(sed -n 's/^mmcv==//p' "$REQ/constraints.txt")

if ! python -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null; then
  if ! ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
    step "build mmcv $MMCV_VERSION with $OPS ops (about 12 minutes on 2 cores, once per torch version)" \
      "Needs a C++17 compiler and the Python headers (apt-get install build-essential python3-dev); delete $WHEELS to retry from scratch."
    BUILD=$(mktemp -d)
    # -g0: Python's build flags ask for debug info (-g), which more than
    # doubles the compile time of mmcv's ops (25.7 s -> 10.5 s CPU for
    # roi_align.cpp) and adds nothing to a wheel nobody debugs; -O3 stays.
    CFLAGS="${CFLAGS:-} -g0" CXXFLAGS="${CXXFLAGS:-} -g0" \
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} python -m pip wheel -q --no-deps \
      --no-build-isolation --no-binary mmcv "mmcv==$MMCV_VERSION" -w "$BUILD"
    mkdir -p "$WHEELS"
    mv "$BUILD"/mmcv-*.whl "$WHEELS"/
    rm -rf "$BUILD"
  fi
  step "install the cached mmcv wheel from $WHEELS" "Delete $WHEELS to rebuild it."
  "${PIP[@]}" --no-deps --force-reinstall "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl
fi

step "install mmengine, mmpretrain, mmdet, mmsegmentation and the test tools" \
  "See requirements/constraints.txt for the tested versions."
"${PIP[@]}" -c "$REQ/constraints.txt" -r "$REQ/mminstall.txt" -r "$REQ/runtime.txt" \
  -r "$REQ/tests.txt" -r "$REQ/optional.txt"
# openmim's own requirements pin an old setuptools (through opendatalab) that
# mmcv and torch cannot use; mim itself needs only requirements/openmim.txt.
"${PIP[@]}" --no-deps -c "$REQ/constraints.txt" openmim
"${PIP[@]}" -c "$REQ/constraints.txt" -r "$REQ/openmim.txt"

step "install localvit_mm in editable mode (compiles its CPU kernels)" \
  "Needs a C++17 compiler; run 'pip install --no-build-isolation -e .' by hand to see the full error."
"${PIP[@]}" --no-deps --no-build-isolation -e "$ROOT"

step "check the imports" "An import failed: rerun this script; if it fails again, delete $VENV."
python - <<'PY'
import torch
import mmcv.ops, mmpretrain.models, mmdet.models, mmseg.models, localvit_mm
import localvit_mm._ext
from localvit_mm.ops import cpu_kernels
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.]])
keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), 0.5)[1]
assert keep.tolist() == [0], keep
print(f'[setup_env] torch {torch.__version__}, mmcv {mmcv.__version__} (ops ok), '
      f'localvit_mm {localvit_mm.__version__} (CPU kernels '
      f"{'in use' if cpu_kernels() else 'built, not used: no AVX2'})")
PY
stamp_of > "$STAMP_FILE"
echo "[setup_env] ready: source $VENV/bin/activate"

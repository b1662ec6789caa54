#!/usr/bin/env bash
# The main job: LocalViT-T against its DeiT-T baseline on real Fashion-MNIST,
# same budget, through the config system and the distributed launcher.
#
#   bash tools/quickstart.sh        # 2 CPU processes, or every visible GPU
#
# Sets up the environment and the data first. Prints the training progress,
# then a side-by-side table (top-1, params, MACs, img/s) and writes the
# validation curves to work_dirs/quickstart/curves.png. NPROC overrides the
# number of processes; WORK_DIR the output folder; TEST_IMAGES the number of
# test images the table's top-1 is measured on (default 2000; 10000 for the
# whole test split).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${LOCALVIT_VENV:-$ROOT/.venv}
OUT=${WORK_DIR:-$ROOT/work_dirs/quickstart}
TEST_IMAGES=${TEST_IMAGES:-2000}
cd "$ROOT"

bash tools/setup_env.sh
bash tools/data/prepare_fashion_mnist.sh
export PATH=$VENV/bin:$PATH PYTHON=$VENV/bin/python

GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
NPROC=${NPROC:-$([[ $GPUS -gt 0 ]] && echo "$GPUS" || echo 2)}
START=$SECONDS
for model in localvit-tiny deit-tiny; do
  config=configs/quickstart/${model}_2xb32_fashion-mnist.py
  echo "== training $model with $NPROC processes ($config); log in $OUT/$model"
  rm -rf "${OUT:?}/$model"
  tools/dist_train.sh "$config" "$NPROC" --work-dir "$OUT/$model" 2>&1 |
    grep --line-buffered -E "Iter\((train|val)\)|^Traceback|[A-Za-z]+Error: " |
    sed -u -E 's/^[0-9/]+ [0-9:]+ - mmengine - INFO - //'
done
echo "== trained both in $((SECONDS - START)) s; evaluating on $TEST_IMAGES test images"
python tools/analysis_tools/quickstart_report.py "$OUT/localvit-tiny" "$OUT/deit-tiny" \
  --max-test-images "$TEST_IMAGES" --out "$OUT/curves.png" --json "$OUT/report.json"
echo "== done in $((SECONDS - START)) s"

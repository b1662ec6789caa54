#!/usr/bin/env bash
# Prepare Fashion-MNIST (60k train + 10k test, 28x28 grey, 10 classes) for
# mmpretrain's FashionMNIST dataset from Debian's dataset-fashion-mnist package.
#
#   tools/data/prepare_fashion_mnist.sh [DATA_ROOT]   # default: data/fashion_mnist
#
# Idempotent: files already in place are kept.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DST=${1:-$ROOT/data/fashion_mnist}
SRC=/usr/share/datasets/fashion-mnist
FILES=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

if [[ ! -f $SRC/train-images-idx3-ubyte.gz ]]; then
  echo "[fashion-mnist] installing Debian's dataset-fashion-mnist"
  SUDO=""
  [[ $(id -u) == 0 ]] || SUDO=sudo
  if ! { $SUDO apt-get update -qq && $SUDO apt-get install -y -qq dataset-fashion-mnist >/dev/null; }; then
    echo "error: could not install dataset-fashion-mnist: run 'apt-get update && apt-get install dataset-fashion-mnist' as root, then rerun $0" >&2
    exit 1
  fi
fi

mkdir -p "$DST"
for name in "${FILES[@]}"; do
  if [[ ! -s $DST/$name ]]; then
    gunzip -c "$SRC/$name.gz" > "$DST/$name.tmp"
    mv "$DST/$name.tmp" "$DST/$name"
  fi
done
echo "[fashion-mnist] ready in $DST"

"""Write Fashion-MNIST test images as PNG files for the classification demo.

The files are named ``{index:05d}_{class}.png`` (index in the 10k test split,
true class in the name), 28x28 single-channel:

    python demo/fashion_mnist_to_png.py --num 10   # -> data/fashion_mnist/png

Prepare the data first with tools/data/prepare_fashion_mnist.sh. Reads the
idx files with numpy alone, so it starts in a fraction of a second.
"""
import argparse
import os
import os.path as osp

import numpy as np
from PIL import Image

# The dataset's label names, in label order (mmpretrain's FashionMNIST
# classes).
CLASSES = ('T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal',
           'Shirt', 'Sneaker', 'Bag', 'Ankle boot')


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        '--data-root',
        default='data/fashion_mnist',
        help='folder with the uncompressed t10k-*-ubyte files')
    parser.add_argument('--out', help='output folder (default: DATA_ROOT/png)')
    parser.add_argument(
        '--num', type=int, default=10, help='how many test images')
    parser.add_argument(
        '--start', type=int, default=0, help='index of the first one')
    return parser.parse_args()


def read_idx(path):
    """An idx file of unsigned bytes (magic 0x0000080N, N big-endian
    int32 sizes, the data) as an array."""
    with open(path, 'rb') as f:
        data = f.read()
    if data[:3] != b'\x00\x00\x08':
        raise SystemExit(f'error: {path} is not an idx file of bytes')
    shape = np.frombuffer(data, '>i4', count=data[3], offset=4)
    return np.frombuffer(data, np.uint8, offset=4 + 4 * data[3]).reshape(shape)


def file_name(index, label):
    """``00000_ankle-boot.png`` for test image 0 (an ankle boot)."""
    name = CLASSES[label].lower().replace('/', '-').replace(' ', '-')
    return f'{index:05d}_{name}.png'


def main():
    args = parse_args()
    out = args.out or osp.join(args.data_root, 'png')
    images = read_idx(osp.join(args.data_root, 't10k-images-idx3-ubyte'))
    labels = read_idx(osp.join(args.data_root, 't10k-labels-idx1-ubyte'))
    if not 0 <= args.start < args.start + args.num <= len(images):
        raise SystemExit(f'error: --start {args.start} --num {args.num} is '
                         f'outside the {len(images)} test images')
    os.makedirs(out, exist_ok=True)
    for index in range(args.start, args.start + args.num):
        path = osp.join(out, file_name(index, int(labels[index])))
        Image.fromarray(images[index]).save(path)
        print(path)


if __name__ == '__main__':
    main()

"""Classify images with mmpretrain's ``ImageClassificationInferencer``.

Prints the top class and its score for every image and, with ``--show-dir``,
saves each image with its prediction drawn on it (``NAME.png``).

Example (the quickstart's LocalViT-T on Fashion-MNIST test images written
by demo/fashion_mnist_to_png.py; 28x28 images drawn 8x larger):

    NAME=localvit-tiny_2xb32_fashion-mnist
    python tools/train.py configs/quickstart/$NAME.py   # -> work_dirs/$NAME
    python demo/fashion_mnist_to_png.py --num 10
    python demo/image_demo.py data/fashion_mnist/png \\
        configs/quickstart/$NAME.py \\
        --checkpoint work_dirs/$NAME/iter_100.pth \\
        --show-dir outputs/cls --rescale-factor 8
"""
import os.path as osp
import sys
from argparse import ArgumentParser

from mmengine.device import get_device
from mmengine.utils import mkdir_or_exist, scandir
from mmpretrain.apis import ImageClassificationInferencer
from mmpretrain.utils import progress

# Piped output gets clean lines: the progress bar's last frame would end
# without a newline, in front of the first result.
progress.disable_progress_bar = not sys.stdout.isatty()

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')


def parse_args():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'inputs', nargs='+', help='image files or folders of images')
    parser.add_argument('model', help='config file or model name')
    parser.add_argument('--checkpoint', help='checkpoint file')
    parser.add_argument('--show-dir', help='save the drawn images here')
    parser.add_argument(
        '--rescale-factor',
        type=float,
        help='draw the images this many times larger')
    parser.add_argument(
        '--device', help='e.g. cpu or cuda:0 (default: cuda if available)')
    return parser.parse_args()


def image_files(paths):
    """The files given, the image files of folders given (sorted)."""
    files = []
    for path in paths:
        if osp.isdir(path):
            names = sorted(scandir(path, suffix=IMG_EXTENSIONS))
            files += [osp.join(path, name) for name in names]
        else:
            files.append(path)
    return files


def main():
    args = parse_args()
    inferencer = ImageClassificationInferencer(
        args.model,
        pretrained=args.checkpoint or True,
        device=args.device or get_device())
    files = image_files(args.inputs)
    if args.show_dir:
        mkdir_or_exist(args.show_dir)  # the inferencer makes one level only
    results = inferencer(
        files, show_dir=args.show_dir, rescale_factor=args.rescale_factor)
    for path, result in zip(files, results):
        print(f'{osp.basename(path)}: {result.get("pred_class")} '
              f'(label {result["pred_label"]}, '
              f'score {result["pred_score"]:.3f})')


if __name__ == '__main__':
    main()

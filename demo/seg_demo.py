"""Segment images with mmseg's ``MMSegInferencer``.

Saves each image with its predicted mask blended over it to
``OUT_DIR/vis/NAME``, the label maps to ``OUT_DIR/pred/``, and prints the
share of pixels of every predicted class.

Example (Semantic FPN + LocalViT-PVT-T trained on labelme's masks, the two
held-out street frames):

    NAME=fpn_localvit-pvt-t_labelme
    python tools/train.py configs/segmentation/$NAME.py   # -> work_dirs/$NAME
    python demo/seg_demo.py data/labelme_seg/img_dir/val \\
        configs/segmentation/$NAME.py \\
        --checkpoint work_dirs/$NAME/iter_60.pth --out-dir outputs/seg
"""
import os.path as osp
from argparse import ArgumentParser

import numpy as np
from mmengine.utils import scandir
from mmseg.apis import MMSegInferencer

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')


def parse_args():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'inputs', nargs='+', help='image files or folders of images')
    parser.add_argument('model', help='config file')
    parser.add_argument('--checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out-dir', default='outputs', help='where vis/ and pred/ go')
    parser.add_argument(
        '--opacity', type=float, default=0.5, help='of the drawn mask')
    parser.add_argument(
        '--with-labels', action='store_true', help='write class names')
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
    inferencer = MMSegInferencer(
        args.model, args.checkpoint, device=args.device)
    classes = inferencer.model.dataset_meta['classes']
    files = image_files(args.inputs)
    predictions = inferencer(
        files,
        out_dir=args.out_dir,
        opacity=args.opacity,
        with_labels=args.with_labels)['predictions']
    if len(files) == 1:  # the inferencer unwraps a single result
        predictions = [predictions]
    for path, label_map in zip(files, predictions):
        labels, counts = np.unique(label_map, return_counts=True)
        shares = ', '.join(
            f'{classes[label]} {100 * count / label_map.size:.1f}%'
            for label, count in zip(labels, counts))
        print(f'{osp.basename(path)}: {shares}')


if __name__ == '__main__':
    main()

"""Detect objects in images with mmdet's ``DetInferencer``.

Saves each image with its boxes (and masks, for instance segmentation
models) drawn to ``OUT_DIR/vis/NAME``, the predictions to
``OUT_DIR/preds/NAME.json``, and prints how many boxes each image has above
the score threshold.

Example (RetinaNet + LocalViT-PVT-T trained on deepforest's tree crowns, a
tile of the held-out scene):

    NAME=retinanet_localvit-pvt-t_fpn_deepforest
    python tools/train.py configs/detection/$NAME.py   # -> work_dirs/$NAME
    python demo/det_demo.py \\
        data/deepforest/images/2019_YELL_2_541000_4977000_image_crop_0_0.png \\
        configs/detection/$NAME.py --weights work_dirs/$NAME/iter_150.pth \\
        --out-dir outputs/det
"""
import os.path as osp
from argparse import ArgumentParser
from collections import Counter

from mmdet.apis import DetInferencer
from mmengine.utils import scandir

IMG_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff')


def parse_args():
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        'inputs', nargs='+', help='image files or folders of images')
    parser.add_argument('model', help='config file')
    parser.add_argument('--weights', help='checkpoint file')
    parser.add_argument(
        '--out-dir', default='outputs', help='where vis/ and preds/ go')
    parser.add_argument(
        '--pred-score-thr',
        type=float,
        default=0.3,
        help='draw and count boxes scoring at least this')
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
    inferencer = DetInferencer(
        args.model, args.weights, device=args.device, show_progress=False)
    classes = inferencer.model.dataset_meta['classes']
    files = image_files(args.inputs)
    results = inferencer(
        files,
        out_dir=args.out_dir,
        pred_score_thr=args.pred_score_thr,
        no_save_pred=False)
    for path, pred in zip(files, results['predictions']):
        kept = [(classes[label], score)
                for label, score in zip(pred['labels'], pred['scores'])
                if score >= args.pred_score_thr]
        counts = Counter(name for name, _ in kept)
        found = ', '.join(f'{n} {name}' for name, n in counts.items())
        best = f', best {max(s for _, s in kept):.3f}' if kept else ''
        print(f'{osp.basename(path)}: {found or "nothing"} '
              f'(score >= {args.pred_score_thr}){best}')


if __name__ == '__main__':
    main()

"""Compare classification runs side by side: top-1 on the full test split,
parameters, MACs, inference img/s, and a PNG of the validation curves.

    python tools/analysis_tools/quickstart_report.py WORK_DIR [WORK_DIR ...] \
        [--out curves.png] [--json report.json]

Each WORK_DIR is a finished ``tools/train.py`` run (its config dump, its
``last_checkpoint`` and its ``vis_data/scalars.json`` are read).
"""
import argparse
import glob
import json
import os.path as osp
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')
# mmpretrain's MNIST reader wraps a read-only numpy buffer; it never writes.
warnings.filterwarnings('ignore', message='The given NumPy array is not')

import torch
from mmengine.runner import Runner
from mmengine.utils import ProgressBar

from localvit_mm.analysis import model_complexity
from localvit_mm.analysis.curves import (curve_of, load_scalars, plot_curves,
                                         scalars_files)
from localvit_mm.utils import (latest_checkpoint, load_config,
                               register_safe_checkpoint_loader)


def read_run(work_dir):
    """Config path, checkpoint and validation curve of a finished run."""
    configs = sorted(glob.glob(osp.join(work_dir, '*.py')))
    checkpoint = latest_checkpoint(work_dir)
    if not configs or checkpoint is None:
        raise SystemExit(f'error: {work_dir} holds no finished run (config '
                         'dump and last_checkpoint): train it first')
    curve = []
    for path in scalars_files(work_dir):  # a resumed run continues the curve
        curve += curve_of(load_scalars(path), 'accuracy/top1')
    return configs[0], checkpoint, curve


def test_top1(model, cfg, max_images=None):
    """Top-1 (%) on the whole test split, or on its first ``max_images``
    (a progress bar with the ETA on stderr)."""
    loader_cfg = cfg.test_dataloader
    loader_cfg.dataset.indices = max_images
    loader_cfg.persistent_workers = False
    loader = Runner.build_dataloader(loader_cfg)
    correct = total = 0
    progress = ProgressBar(len(loader), file=sys.stderr)
    with torch.no_grad():
        for data in loader:
            for sample in model.test_step(data):
                correct += int(sample.pred_label == sample.gt_label)
                total += 1
            progress.update()
    sys.stderr.write('\n')
    return 100. * correct / total, total


def images_per_second(model, shape, batch_size=256, repeats=3):
    """Median inference throughput on a batch of random images."""
    inputs = torch.randn(batch_size, *shape)
    times = []
    with torch.no_grad():
        model(inputs, mode='tensor')  # warm-up
        for _ in range(repeats):
            start = time.perf_counter()
            model(inputs, mode='tensor')
            times.append(time.perf_counter() - start)
    return batch_size / sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('work_dirs', nargs='+', help='finished runs')
    parser.add_argument('--out', help='PNG of the validation curves')
    parser.add_argument('--json', help='write the table as JSON too')
    parser.add_argument(
        '--max-test-images',
        type=int,
        help='evaluate on the first N test images only (quick checks)')
    parser.add_argument(
        '--speed-batch',
        type=int,
        default=256,
        help='batch size of the img/s measurement (default 256)')
    args = parser.parse_args()

    from mmpretrain.apis import init_model
    register_safe_checkpoint_loader()
    rows = []
    for work_dir in args.work_dirs:
        config, checkpoint, curve = read_run(work_dir)
        cfg = load_config(config)
        model = init_model(cfg, checkpoint, device='cpu').eval()
        backbone = cfg.model.backbone
        shape = (backbone.get('in_channels', 3), *[backbone.img_size] * 2)
        top1, num_images = test_top1(model, cfg, args.max_test_images)
        rows.append(
            dict(
                name=osp.basename(osp.normpath(work_dir)),
                arch=backbone.arch,
                top1=top1,
                test_images=num_images,
                params=sum(p.numel() for p in model.parameters()),
                macs=model_complexity(model, shape[1:],
                                      in_channels=shape[0])['flops'],
                img_per_s=images_per_second(model, shape, args.speed_batch),
                curve=curve))

    header = f"{'model':<16}{'top-1 (%)':>10}{'params':>12}{'MACs':>10}" \
             f"{'img/s':>9}"
    print(header + '\n' + '-' * len(header))
    for row in rows:
        print(f"{row['name']:<16}{row['top1']:>10.2f}"
              f"{row['params'] / 1e6:>11.3f}M{row['macs'] / 1e6:>9.1f}M"
              f"{row['img_per_s']:>9.0f}")
    print(f"top-1 on {rows[0]['test_images']} test images; img/s: "
          f'inference, batch {args.speed_batch}, '
          f'{torch.get_num_threads()} threads')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(rows, f, indent=2)
    if args.out:
        curves = {row['name']: {'accuracy/top1': row['curve']} for row in rows}
        plot_curves(
            curves, ['accuracy/top1'],
            args.out,
            title='Fashion-MNIST, same budget')
        print(f'curves: {args.out}')


if __name__ == '__main__':
    main()

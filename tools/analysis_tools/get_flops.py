"""FLOPs (multiply-accumulates, as the LocalViT paper reports) and params.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W]
        [--count-norms] [--show-table] [--device meta|cpu]
        [--cfg-options KEY=VALUE ...]

Any config: classifiers (mmpretrain), detectors (mmdet), segmentors (mmseg)
and bare backbones. The input is one image at the size the config's test
pipeline gives (224x224 after ImageNet's crop, 800x1344 for a COCO detector,
512x2048 for ADE20K; ``--shape`` overrides it). Counts as the paper does
(attention matmuls in, norms and element-wise ops out), tracing the network
in ``mode='tensor'``; a two-stage detector's RoI head is counted on the RPN's
``max_per_img`` proposals. The counting lives in
:mod:`localvit_mm.analysis.complexity`; by default it runs on the meta device
(shapes only, the same count in a fraction of the time).
"""
import argparse
import time
import warnings
from typing import List, Optional

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.config import DictAction

from localvit_mm.analysis.complexity import config_complexity
from localvit_mm.utils import load_config


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Count the MACs and parameters of a model.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size (default: the config's test size)")
    parser.add_argument(
        '--count-norms',
        action='store_true',
        help='count BatchNorm/LayerNorm too (not done in the paper)')
    parser.add_argument(
        '--show-table', action='store_true', help='per-module table')
    parser.add_argument(
        '--device',
        default='meta',
        choices=['meta', 'cpu'],
        help='trace on the meta device (shapes only, default) or on real '
        'CPU tensors')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. model.backbone.arch=small')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None):
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    start = time.perf_counter()
    info = config_complexity(cfg, args.shape, args.count_norms,
                             args.show_table, args.device)
    seconds = time.perf_counter() - start
    split = '=' * 40
    print(f'{split}\nInput shape: {tuple(info["input_shape"])}\n'
          f'Flops (MACs): {info["flops"] / 1e9:.3f}G ({info["flops"]:,})\n'
          f'Params: {info["params"] / 1e6:.3f}M ({info["params"]:,})\n'
          f'Counted in {seconds:.2f} s on {info["device"]}\n'
          f'{split}{info["out_table"]}')


if __name__ == '__main__':
    main()

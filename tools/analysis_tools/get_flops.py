"""FLOPs (multiply-accumulates, as the LocalViT paper reports) and params.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W]
        [--count-norms] [--show-table]

Counts as the paper does (attention matmuls in, norms and element-wise ops
out); the counting lives in :mod:`localvit_mm.analysis.complexity`.
"""
import argparse
from typing import List, Optional

from localvit_mm.analysis import model_complexity


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Count the MACs and parameters of a model.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[224, 224],
        metavar=('H', 'W'),
        help='input size (default 224 224)')
    parser.add_argument(
        '--count-norms',
        action='store_true',
        help='count BatchNorm/LayerNorm too (not done in the paper)')
    parser.add_argument(
        '--show-table', action='store_true', help='per-module table')
    args = parser.parse_args(argv)

    from mmpretrain.apis import get_model
    model = get_model(args.config, device='cpu')
    info = model_complexity(model, tuple(args.shape), args.count_norms,
                            args.show_table)
    split = '=' * 40
    print(f'{split}\nInput shape: (3, {args.shape[0]}, {args.shape[1]})\n'
          f'Flops (MACs): {info["flops"] / 1e9:.3f}G ({info["flops"]:,})\n'
          f'Params: {info["params"] / 1e6:.3f}M ({info["params"]:,})\n'
          f'{split}{info["out_table"]}')


if __name__ == '__main__':
    main()

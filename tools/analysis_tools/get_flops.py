"""FLOPs (multiply-accumulates, as the LocalViT paper reports) and params.

    python tools/analysis_tools/get_flops.py CONFIG [--shape H W]
        [--count-norms] [--show-table]

Counts with mmengine's ``get_model_complexity_info``, which traces the model
and counts each operator with a handle, one MAC per multiply-add. Two
adjustments make it count what the paper counts:

* The attention runs in ``F.scaled_dot_product_attention``, which mmengine
  has no handle for, so the two attention matmuls would be missed (0.18G of
  DeiT-T's 1.25G). :func:`sdpa_flop_jit` counts them: ``q @ k^T`` and
  ``attn @ v`` cost ``B * heads * N * M * (c_qk + c_v)`` MACs.
* Normalization layers are not counted unless ``--count-norms``: BatchNorm
  folds into the neighbouring conv at inference and the paper's numbers
  leave LayerNorm out too (DeiT-T 1.254G, LocalViT-T 1.266G).

Element-wise ops (activations, residual adds, SE gating, pooling) are not
counted, as in the paper; the known ones are ignored without a warning.
"""
import argparse
import contextlib
from math import prod
from typing import Any, List, Optional

import torch
from mmengine.analysis import complexity_analysis, get_model_complexity_info
from mmengine.analysis.jit_handles import generic_activation_jit, get_shape

NORM_OPS = ('aten::batch_norm', 'aten::layer_norm', 'aten::group_norm',
            'aten::instance_norm')
ELEMENTWISE_OPS = tuple(
    f'aten::{op}{suffix}' for op in ('add', 'sub', 'mul', 'div', 'hardswish',
                                     'hardsigmoid', 'hardtanh', 'relu', 'gelu',
                                     'sigmoid', 'softmax', 'mean')
    for suffix in ('', '_')) + ('aten::upsample_bicubic2d', )


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``aten::scaled_dot_product_attention`` (q, k, v first)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


@contextlib.contextmanager
def paper_flop_handles(count_norms: bool = False):
    """Temporarily set the handles above in mmengine's default tables.

    ``get_model_complexity_info`` builds its ``FlopAnalyzer`` and
    ``ActivationAnalyzer`` from these tables and offers no other way to pass
    handles in; a handle of None means "ignore this op".
    """
    flop_table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    act_table = complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS
    saved = dict(flop_table), dict(act_table)
    flop_table['aten::scaled_dot_product_attention'] = sdpa_flop_jit
    act_table['aten::scaled_dot_product_attention'] = \
        generic_activation_jit()
    for op in ELEMENTWISE_OPS + NORM_OPS:
        act_table.setdefault(op, None)
        if op in ELEMENTWISE_OPS or not count_norms:
            flop_table[op] = None
    try:
        yield
    finally:
        for table, old in zip((flop_table, act_table), saved):
            table.clear()
            table.update(old)


def model_complexity(model: torch.nn.Module,
                     shape=(224, 224),
                     count_norms: bool = False,
                     show_table: bool = False,
                     in_channels: int = 3) -> dict:
    """Complexity of ``model`` on one (C, H, W) image, paper conventions."""
    with paper_flop_handles(count_norms), torch.no_grad():
        return get_model_complexity_info(
            model.eval(),
            input_shape=(in_channels, *shape),
            show_table=show_table,
            show_arch=False)


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Count the MACs and parameters of a model.')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--shape', type=int, nargs=2, default=[224, 224],
        metavar=('H', 'W'), help='input size (default 224 224)')
    parser.add_argument(
        '--count-norms', action='store_true',
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

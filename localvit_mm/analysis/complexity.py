"""Multiply-accumulates (as the LocalViT paper counts them) and parameters.

Counts with mmengine's ``get_model_complexity_info``, which traces the model
and counts each operator with a handle, one MAC per multiply-add. Two
adjustments make it count what the paper counts:

* The attention runs in ``F.scaled_dot_product_attention``, which mmengine
  has no handle for, so the two attention matmuls would be missed (0.18G of
  DeiT-T's 1.25G). :func:`sdpa_flop_jit` counts them: ``q @ k^T`` and
  ``attn @ v`` cost ``B * heads * N * M * (c_qk + c_v)`` MACs.
* ``aten::baddbmm`` (the eval-mode locality FFN's first projection) has no
  mmengine handle either; :func:`baddbmm_flop_jit` counts it.
* Normalization layers are not counted unless ``count_norms``: BatchNorm
  folds into the neighbouring conv at inference and the paper's numbers
  leave LayerNorm out too (DeiT-T 1.254G, LocalViT-T 1.266G).

Element-wise ops (activations, residual adds, SE gating, pooling, the
on-the-fly BatchNorm folding of the eval-mode locality FFN) are not counted,
as in the paper; the known ones are ignored without a warning.
"""
import contextlib
from math import prod
from typing import Any, List

import torch
from mmengine.analysis import complexity_analysis, get_model_complexity_info
from mmengine.analysis.jit_handles import generic_activation_jit, get_shape
from mmengine.logging import MMLogger

NORM_OPS = ('aten::batch_norm', 'aten::layer_norm', 'aten::group_norm',
            'aten::instance_norm')
ELEMENTWISE_OPS = tuple(
    f'aten::{op}{suffix}'
    for op in ('add', 'sub', 'mul', 'div', 'hardswish', 'hardsigmoid',
               'hardtanh', 'relu', 'gelu', 'sigmoid', 'softmax', 'mean')
    for suffix in ('', '_')) + ('aten::upsample_bicubic2d', 'aten::rsqrt',
                                'aten::neg', 'aten::empty_like')


def sdpa_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``aten::scaled_dot_product_attention`` (q, k, v first)."""
    q, k, v = (get_shape(x) for x in inputs[:3])
    return prod(q[:-1]) * k[-2] * (q[-1] + v[-1])


def baddbmm_flop_jit(inputs: List[Any], outputs: List[Any]) -> int:
    """MACs of ``aten::baddbmm`` (bias, batch1, batch2): ``b * n * k * m``.

    The eval-mode locality FFN runs its first projection as one, on the
    image tokens without copying them out of the token sequence.
    """
    b, n, k = get_shape(inputs[1])
    return b * n * k * get_shape(inputs[2])[-1]


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
    flop_table['aten::baddbmm'] = baddbmm_flop_jit
    act_table['aten::baddbmm'] = generic_activation_jit()
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
    """Complexity of ``model`` on one (C, H, W) image, paper conventions.

    Returns mmengine's dict: ``flops`` (MACs), ``params``, ``out_table``...
    The model is left in eval mode.
    """
    model.eval()
    logger = MMLogger.get_current_instance()
    logger.addFilter(_drop_uncalled_modules_warning)
    try:
        with paper_flop_handles(count_norms), torch.no_grad():
            return get_model_complexity_info(
                model,
                input_shape=(in_channels, *shape),
                show_table=show_table,
                show_arch=False)
    finally:
        logger.removeFilter(_drop_uncalled_modules_warning)


def _drop_uncalled_modules_warning(record) -> bool:
    """The fused locality FFN reads the weights of its conv/BN submodules
    without calling them, so mmengine's tracer would list every one of them
    as "never called"; their MACs are in the fused ops all the same."""
    return 'were never called during the trace' not in record.getMessage()

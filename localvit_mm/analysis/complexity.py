"""Multiply-accumulates (as the LocalViT paper counts them) and parameters.

Counted, one MAC per multiply-add: matrix multiplies (Linear layers, the
eval-mode locality FFN's batched projection, the attention's ``q @ k^T`` and
``attn @ v``, also inside ``F.scaled_dot_product_attention``: ``B * heads *
N * M * (c_qk + c_v)``) and convolutions. Not counted, as in the paper:
normalization layers unless ``count_norms`` (BatchNorm folds into the
neighbouring layer at inference and the paper's numbers leave LayerNorm out
too: DeiT-T 1.254G, LocalViT-T 1.266G) and element-wise ops (activations,
residual adds, SE gating, pooling, upsampling, the on-the-fly BatchNorm
folding of the eval-mode locality FFN).

:func:`count_macs` counts with :class:`MacCounter`, a PyTorch dispatch mode
that sees every ATen op of one forward with its shapes, and the MAC formulas
below. It needs no tracing, so it runs on the meta device: shapes only, no
arithmetic and no weight initialization. :func:`config_complexity` counts the
model of any config (mmpretrain, mmdet or mmseg) that way, at the size its
test pipeline feeds it (:func:`config_input_shape`): a detector at 800x1344
in about a second, with the same count as on real CPU tensors.

:func:`paper_flop_handles` sets the same conventions in mmengine's
jit-tracing counter (``get_model_complexity_info``) for code that uses it.
"""
import contextlib
import math
import os
from collections import Counter, defaultdict
from functools import partial
from math import prod
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.analysis import complexity_analysis
from mmengine.analysis.jit_handles import generic_activation_jit, get_shape
from mmengine.config import Config
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map
from torch.utils.module_tracker import ModuleTracker

NORM_OPS = ('aten::batch_norm', 'aten::layer_norm', 'aten::group_norm',
            'aten::instance_norm')
ELEMENTWISE_OPS = tuple(
    f'aten::{op}{suffix}'
    for op in ('add', 'sub', 'mul', 'div', 'hardswish', 'hardsigmoid',
               'hardtanh', 'relu', 'gelu', 'sigmoid', 'softmax', 'mean')
    for suffix in ('', '_')) + (
        'aten::upsample_nearest2d', 'aten::upsample_bilinear2d',
        'aten::upsample_bicubic2d', 'aten::adaptive_avg_pool2d',
        'aten::grid_sampler', 'aten::rsqrt', 'aten::neg', 'aten::empty_like')


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


def paper_handles(count_norms: bool = False) -> dict:
    """mmengine's FLOP handles changed to count what the paper counts; a
    handle of None means "ignore this op"."""
    handles = dict(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS)
    handles['aten::scaled_dot_product_attention'] = sdpa_flop_jit
    handles['aten::baddbmm'] = baddbmm_flop_jit
    for op in ELEMENTWISE_OPS + NORM_OPS:
        if op in ELEMENTWISE_OPS or not count_norms:
            handles[op] = None
    return handles


@contextlib.contextmanager
def paper_flop_handles(count_norms: bool = False):
    """Temporarily set :func:`paper_handles` in mmengine's default tables.

    ``get_model_complexity_info`` builds its ``FlopAnalyzer`` and
    ``ActivationAnalyzer`` from these tables and offers no other way to pass
    handles in.
    """
    flop_table = complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS
    act_table = complexity_analysis._DEFAULT_SUPPORTED_ACT_OPS
    saved = dict(flop_table), dict(act_table)
    flop_table.update(paper_handles(count_norms))
    act_table['aten::scaled_dot_product_attention'] = \
        generic_activation_jit()
    act_table['aten::baddbmm'] = generic_activation_jit()
    for op in ELEMENTWISE_OPS + NORM_OPS:
        act_table.setdefault(op, None)
    try:
        yield
    finally:
        for table, old in zip((flop_table, act_table), saved):
            table.clear()
            table.update(old)


# MAC formulas: shapes of the op's arguments in, MACs out.
def _mm_macs(a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    return prod(a_shape) * b_shape[-1]


def _addmm_macs(bias_shape, a_shape, b_shape, *args, **kwargs) -> int:
    return _mm_macs(a_shape, b_shape)


def _conv_macs(x_shape,
               w_shape,
               bias,
               stride,
               padding,
               dilation,
               transposed,
               *args,
               out_shape=None,
               **kwargs) -> int:
    """Every output (every input when transposed) position reads a whole
    kernel: ``batch * prod(weight) * prod(spatial)``."""
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * prod(w_shape) * prod(spatial)


def _sdpa_macs(q_shape, k_shape, v_shape, *args, **kwargs) -> int:
    """``q @ k^T`` and ``attn @ v``: ``B * heads * N * M * (c_qk + c_v)``."""
    return prod(q_shape[:-1]) * k_shape[-2] * (q_shape[-1] + v_shape[-1])


def _norm_macs(x_shape, weight_shape=None, *args, **kwargs) -> int:
    """mmengine's estimate of a normalization with batch or token
    statistics: 5 per element with an affine transform, 4 without."""
    return prod(x_shape) * (5 if weight_shape is not None else 4)


def _layer_norm_macs(x_shape,
                     normalized_shape,
                     weight_shape=None,
                     *args,
                     **kwargs) -> int:
    return _norm_macs(x_shape, weight_shape)


def _batch_norm_macs(x_shape, weight_shape, bias_shape, mean_shape, var_shape,
                     training, *args, **kwargs) -> int:
    """With batch statistics as :func:`_norm_macs`; in eval mode a scale
    (and shift) per element."""
    if training:
        return _norm_macs(x_shape, weight_shape)
    return prod(x_shape) * (2 if weight_shape is not None else 1)


def _eval_batch_norm_macs(x_shape, weight_shape, *args, **kwargs) -> int:
    return _batch_norm_macs(x_shape, weight_shape, None, None, None, False)


aten = torch.ops.aten
MAC_FORMULAS = {
    aten.mm: _mm_macs,
    aten.bmm: _mm_macs,
    aten.addmm: _addmm_macs,
    aten.baddbmm: _addmm_macs,
}
CONVOLUTIONS = (aten.convolution, aten._convolution,
                aten.convolution_overrideable)
ATTENTIONS = (aten._scaled_dot_product_flash_attention_for_cpu,
              aten._scaled_dot_product_flash_attention,
              aten._scaled_dot_product_efficient_attention,
              aten._scaled_dot_product_cudnn_attention)
MAC_FORMULAS.update(dict.fromkeys(CONVOLUTIONS, _conv_macs))
MAC_FORMULAS.update(dict.fromkeys(ATTENTIONS, _sdpa_macs))
NORM_FORMULAS = {
    aten.native_layer_norm: _layer_norm_macs,
    aten.native_group_norm: _norm_macs,
    aten.native_batch_norm: _batch_norm_macs,
    aten._native_batch_norm_legit: _norm_macs,
    aten._native_batch_norm_legit_no_training: _eval_batch_norm_macs,
}


class MacCounter(TorchDispatchMode):
    """Counts the MACs of every ATen op run inside it that has a formula in
    ``formulas``, per module (``ModuleTracker`` names) and op. Ops run
    as they are: on the meta device that is shape propagation only."""

    def __init__(self, formulas: dict):
        super().__init__()
        self.formulas = formulas
        self.counts = defaultdict(Counter)
        self.tracker = ModuleTracker()

    def __enter__(self):
        self.tracker.__enter__()
        return super().__enter__()

    def __exit__(self, *args):
        super().__exit__(*args)
        self.tracker.__exit__(*args)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = _meta_result(func, args, kwargs)
        if out is None:
            out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            shapes = tree_map(_shape, (args, kwargs, out))
            macs = formula(*shapes[0], out_shape=shapes[2], **shapes[1])
            for module in set(self.tracker.parents):
                self.counts[module][func._overloadpacket.__name__] += macs
        return out

    @property
    def total(self) -> int:
        return sum(self.counts['Global'].values())

    def table(self, depth: int = 3) -> str:
        """MACs per module down to ``depth``, each under its parent."""
        lines = [f"{'module':<60}{'MACs':>14}{'share':>8}"]
        for module, ops in sorted(self.counts.items()):
            if module == 'Global' or module.count('.') >= depth:
                continue
            macs = sum(ops.values())
            lines.append(f"{'  ' * module.count('.') + module:<60}"
                         f'{macs:>14,}{macs / max(self.total, 1):>8.1%}')
        return '\n'.join(lines)


def _empty(shape, like: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device='meta')


def _matmul_shape(func, args):
    a, b = args[-2:]  # (bias,) batch1, batch2
    return _empty((*a.shape[:-1], b.shape[-1]), a)


def _binary_shape(func, args):
    a, b = args[:2]
    if not isinstance(b, torch.Tensor):
        return _empty(a.shape, a, torch.result_type(a, b))
    return _empty(
        torch.broadcast_shapes(a.shape, b.shape), a, torch.result_type(a, b))


def _resize_shape(func, args):
    x, size = args[:2]
    if size is None:
        return None
    return _empty((*x.shape[:2], *size), x)


def _same_shape(func, args):
    return torch.empty_like(args[0])


def _layer_norm_shape(func, args):
    x, normalized = args[:2]
    stats = (*x.shape[:x.dim() - len(normalized)], *[1] * len(normalized))
    return torch.empty_like(x), _empty(stats, x), _empty(stats, x)


# What some ops give on the meta device, computed directly: their Python
# meta kernels cost up to milliseconds a call, most of a meta forward.
META_SHAPES = {
    aten.native_layer_norm: _layer_norm_shape,
    aten.upsample_bilinear2d: _resize_shape,
    aten.upsample_nearest2d: _resize_shape,
}
META_SHAPES.update(
    dict.fromkeys((aten.mm, aten.bmm, aten.addmm, aten.baddbmm),
                  _matmul_shape))
META_SHAPES.update(
    dict.fromkeys((aten.add, aten.sub, aten.mul), _binary_shape))
META_SHAPES.update(
    dict.fromkeys((aten.hardswish, aten.hardsigmoid, aten.relu, aten.gelu,
                   aten.sigmoid, aten.silu, aten.tanh, aten.neg, aten.rsqrt,
                   aten._softmax, aten._safe_softmax), _same_shape))

RESIZES = (aten.resize_, aten.resize_as_, aten.set_)


def _meta_result(func, args, kwargs):
    """The result of ``func`` on meta tensors without running it, where
    known: an in-place op (not a view or resize) returns its first argument
    as it was; the ops of :data:`META_SHAPES` an empty tensor of their
    output's shape. None otherwise (or off the meta device)."""
    first = args[0] if args else None
    if not isinstance(first, torch.Tensor) or first.device.type != 'meta' \
            or 'out' in kwargs:
        return None
    if torch.Tag.inplace in func.tags and torch.Tag.inplace_view not in \
            func.tags and func._overloadpacket not in RESIZES:
        return first
    rule = META_SHAPES.get(func._overloadpacket)
    return rule(func, args) if rule else None


class MetaShapes(TorchDispatchMode):
    """Skip what :func:`_meta_result` knows on meta tensors, e.g. the
    in-place random initialization of weights while a model is built."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = _meta_result(func, args, kwargs)
        return func(*args, **kwargs) if out is None else out


def _shape(x):
    return x.shape if isinstance(x, torch.Tensor) else x


def count_macs(model: torch.nn.Module,
               inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
               count_norms: bool = False,
               show_table: bool = False) -> dict:
    """MACs of one ``model(*inputs)`` (paper conventions) and parameters.

    Returns:
        dict: ``flops`` (MACs), ``params`` and ``out_table`` (per-module
        MACs when ``show_table``, else '').
    """
    inputs = inputs if isinstance(inputs, tuple) else (inputs, )
    counter = MacCounter({
        **MAC_FORMULAS,
        **(NORM_FORMULAS if count_norms else {})
    })
    with torch.no_grad(), aten_ops_only(), counter:
        model(*inputs)
    return dict(
        flops=counter.total,
        params=sum(p.numel() for p in model.parameters()),
        out_table='\n' + counter.table() if show_table else '')


@contextlib.contextmanager
def aten_ops_only():
    """Keep the compiled CPU kernels of :mod:`localvit_mm.ops` off: their
    work (e.g. the eval-mode depth-wise convolution) is one opaque call the
    dispatcher cannot see; the ATen ops that compute the same can be."""
    saved = os.environ.get('LOCALVIT_CPU_KERNELS')
    os.environ['LOCALVIT_CPU_KERNELS'] = '0'
    try:
        yield
    finally:
        if saved is None:
            del os.environ['LOCALVIT_CPU_KERNELS']
        else:
            os.environ['LOCALVIT_CPU_KERNELS'] = saved


def model_complexity(model: torch.nn.Module,
                     shape=(224, 224),
                     count_norms: bool = False,
                     show_table: bool = False,
                     in_channels: int = 3) -> dict:
    """:func:`count_macs` of ``model`` on one (C, H, W) image on the
    model's device; the model is left in eval mode."""
    model.eval()
    param = next(model.parameters(), None)
    device = param.device if param is not None else 'cpu'
    inputs = torch.rand(1, in_channels, *shape, device=device)
    return count_macs(model, inputs, count_norms, show_table)


# Where a test pipeline's transforms set the image size (H, W first).
CROP_TRANSFORMS = ('CenterCrop', )
RESIZE_TRANSFORMS = ('Resize', 'ResizeEdge', 'FixScaleResize')


def _pair_hw(size: Union[int, Sequence[int]], wh: bool = True):
    """(H, W) of an int or of a transform's (W, H) pair."""
    if isinstance(size, int):
        return size, size
    return (size[1], size[0]) if wh else tuple(size)


def _test_pipeline(cfg: Config) -> list:
    """The transforms of the test dataset (wrappers followed), or
    ``test_pipeline``."""
    dataset = cfg.get('test_dataloader', {}).get('dataset', {})
    while isinstance(dataset, dict) and 'pipeline' not in dataset:
        dataset = dataset.get('dataset') or (dataset.get('datasets')
                                             or [None])[0]
    if isinstance(dataset, dict):
        return list(dataset['pipeline'])
    return list(cfg.get('test_pipeline') or [])


def _pipeline_size(pipeline: list) -> Optional[Tuple[int, int]]:
    """(H, W) the last sizing transform of a pipeline gives: a crop's size,
    else a resize's target box (``scale`` is (W, H); with ``keep_ratio``
    the largest image the resize produces; ``ResizeEdge`` of a square)."""
    size = None
    for transform in pipeline:
        kind = transform.get('type')
        if kind in CROP_TRANSFORMS:
            size = _pair_hw(transform['crop_size'])
        elif kind in RESIZE_TRANSFORMS and transform.get('scale'):
            size = _pair_hw(transform['scale'])
    return size


def _model_cfg(cfg: Config) -> dict:
    """The model config with mmpretrain's top-level data preprocessor."""
    model = dict(cfg.model)
    if model.get('data_preprocessor') is None and cfg.get('data_preprocessor'):
        model['data_preprocessor'] = cfg.data_preprocessor
    return model


def config_input_shape(cfg: Config) -> Tuple[int, int, int]:
    """(C, H, W) of one image as the model of ``cfg`` receives it at test
    time.

    H, W: the test pipeline's crop, else its resize box (for a detector on
    COCO ``scale=(1333, 800)``: 800x1333; for ADE20K ``(2048, 512)``:
    512x2048, the size Swin and mmseg report FLOPs at), else the backbone's
    ``img_size``, else 224x224; then padded as the data preprocessor pads at
    test time (mmdet's ``pad_size_divisor``, mmseg's ``test_cfg``). C: the
    data preprocessor's number of mean values, else the backbone's
    ``in_channels``, else 3.
    """
    model = _model_cfg(cfg)
    backbone = model.get('backbone') or model
    preprocessor = model.get('data_preprocessor') or {}
    channels = len(preprocessor.get('mean') or
                   ()) or backbone.get('in_channels', 3)
    size = _pipeline_size(_test_pipeline(cfg))
    if size is None:
        img_size = backbone.get('img_size') or backbone.get(
            'pretrain_img_size') or 224
        size = _pair_hw(img_size, wh=False)
    divisor = preprocessor.get('pad_size_divisor') or (
        preprocessor.get('test_cfg') or {}).get('size_divisor') or 1
    padded = [math.ceil(s / divisor) * divisor for s in size]
    fixed = (preprocessor.get('test_cfg') or {}).get('size')
    if fixed:
        padded = [max(s, f) for s, f in zip(padded, fixed)]
    return (channels, *padded)


def _two_stage_forward(detector, inputs: torch.Tensor):
    """A two-stage detector's network at test time, the proposals fixed:
    backbone, neck, RPN head, then the RoI head on
    ``test_cfg.rpn.max_per_img`` whole-image boxes (the mask head on the
    first 100, as mmdet's ``StandardRoIHead.forward`` does). The number of
    proposals NMS keeps depends on the image; this counts the most."""
    from mmengine.structures import InstanceData
    x = detector.extract_feat(inputs)
    rpn_outs = detector.rpn_head(x)
    num_boxes = detector.test_cfg.rpn.max_per_img
    height, width = inputs.shape[-2:]
    boxes = inputs.new_tensor([0., 0., width, height]).expand(num_boxes, 4)
    proposals = [InstanceData(bboxes=boxes) for _ in range(len(inputs))]
    return rpn_outs, detector.roi_head(x, proposals)


def _roi_features_by_shape(extractor, feats, rois, roi_scale_factor=None):
    """A RoI extractor's output shape, zeros: RoIAlign holds no
    multiply-adds to count (an mmcv op, no meta kernel) and which level a
    RoI reads depends on the boxes."""
    return feats[0].new_zeros(
        len(rois), extractor.out_channels,
        *extractor.roi_layers[0].output_size)


@contextlib.contextmanager
def counting_forward(model: torch.nn.Module):
    """Make ``model(inputs)`` run the network a FLOP count should trace.

    An OpenMMLab model runs in ``mode='tensor'`` (backbone, neck, head; no
    pre- or post-processing); a two-stage detector runs
    :func:`_two_stage_forward` with its RoI extractors answering by shape.
    """
    patched = []
    if getattr(model, 'with_rpn', False) and getattr(model, 'roi_head', None):
        patched.append((model, partial(_two_stage_forward, model)))
        patched += [(module, partial(_roi_features_by_shape, module))
                    for module in model.roi_head.modules()
                    if hasattr(module, 'roi_layers')]
    for module, forward in patched:
        module.forward = forward
    try:
        yield model
    finally:
        for module, _ in patched:
            del module.forward


def build_for_counting(cfg: Config, device: str = 'meta'):
    """The model of ``cfg`` on ``device``, in eval mode, its weights left as
    built (no pretrained file is read). A model whose construction reads
    tensor values (e.g. ``.item()`` on a drop-path schedule) is built on the
    CPU and moved."""
    from localvit_mm.models.build import build_model_from_config
    try:
        with torch.device(device), MetaShapes():
            model = build_model_from_config(cfg)
    except (RuntimeError, NotImplementedError):
        if device == 'cpu':
            raise
        model = build_model_from_config(cfg).to(device)
    model.eval()  # not chained: some backbones' train() returns None
    return model


def config_complexity(config: Union[str, Config],
                      shape: Optional[Tuple[int, int]] = None,
                      count_norms: bool = False,
                      show_table: bool = False,
                      device: str = 'meta') -> dict:
    """MACs (paper conventions) and parameters of a config's model.

    Args:
        config (str | Config): A config of any scope; a path is read with
            :func:`localvit_mm.utils.load_config`.
        shape (tuple, optional): (H, W) of the input; default
            :func:`config_input_shape`.
        count_norms (bool): Count BatchNorm / LayerNorm too.
        show_table (bool): Also return the per-module table.
        device (str): 'meta' (shapes only, fast; a model whose forward
            needs real tensors is counted on the CPU) or 'cpu'.

    Returns:
        dict: ``flops``, ``params``, ``out_table`` (see :func:`count_macs`),
        ``input_shape`` (C, H, W), ``device`` (where it was counted) and
        ``model`` (as built there).
    """
    if not isinstance(config, Config):
        from localvit_mm.utils import load_config
        config = load_config(config)
    input_shape = config_input_shape(config)
    if shape is not None:
        input_shape = (input_shape[0], *shape)
    for attempt in dict.fromkeys([device, 'cpu']):
        model = build_for_counting(config, attempt)
        inputs = torch.rand(1, *input_shape, device=attempt)
        try:
            with counting_forward(model):
                info = count_macs(model, inputs, count_norms, show_table)
            break
        except (RuntimeError, NotImplementedError):
            if attempt == 'cpu':
                raise
    info.update(input_shape=input_shape, device=attempt, model=model)
    return info

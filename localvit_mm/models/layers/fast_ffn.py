"""Fused kernels of the locality feed-forward (same function, fewer passes).

On the CPU, most of the locality FFN's time outside the two matrix
multiplies goes to element-wise passes over the hidden tensor and to fresh
allocations of it (page faults of new memory cost more than the arithmetic).
Two ways to avoid them, both numerically the same function as the plain
composition of modules:

* Eval mode (and deploy mode): every BatchNorm is an affine map, folded on
  the fly into the weights of the matrix multiply or convolution before it
  (:func:`bn_scale_shift`), activations and the channel gate run in place.
* Training with batch statistics: two autograd functions,
  :class:`NormActConv` and :class:`GatedProjection`, keep only the inputs of
  the two BatchNorms for the backward pass and recompute the cheap
  element-wise results from them, so the FFN saves two hidden-sized tensors
  (as a plain MLP does) instead of seven. On the CPU (float32 / float64)
  their steps run as the compiled kernels of :mod:`localvit_mm.ops`: batch
  statistics in one pass, the conv reading the BatchNorm input directly,
  BatchNorm + activation backward in two passes, the conv backward joined
  to the BatchNorm before it, the channel gate's backward in one pass.
  Elsewhere (GPU, bfloat16, kernels not built) ATen ops compute the same.

Whether a :class:`LocalityFeedForward` takes a fused path is decided in one
place, :func:`fused_path`: its ``fused`` flag (default: the environment
variable ``LOCALVIT_FUSED_FFN``, on unless ``0``, as timm's
``TIMM_FUSED_ATTN``) and whether its norms and activations are ones the
fused code computes. ``LOCALVIT_CPU_KERNELS=0`` keeps the fused paths on
ATen ops (:func:`localvit_mm.ops.cpu_kernels`). The plain composition of
modules (``LocalityFeedForward.conv_ffn``) is the reference every fused path
is tested against.
"""
import os
from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn.bricks import HSwish
from torch.autograd.function import once_differentiable
from torch.nn.modules.batchnorm import _BatchNorm

from localvit_mm.ops import cpu_kernels

aten = torch.ops.aten

# Activation module types -> code of the fused kernels.
ACTIVATIONS = {
    nn.Hardswish: 'hswish',
    HSwish: 'hswish',
    nn.ReLU6: 'relu6',
    nn.ReLU: 'relu'
}
# Activation code -> its number in the compiled kernels.
KERNEL_CODES = dict(hswish=0, relu6=1, relu=2)


def use_fused_ffn() -> bool:
    """The default of ``LocalityFeedForward(fused=None)``: the environment
    variable ``LOCALVIT_FUSED_FFN`` (``0`` turns the fused paths off)."""
    return os.environ.get('LOCALVIT_FUSED_FFN', '1') != '0'


def fused_path(ffn: nn.Module) -> Optional[str]:
    """The path a locality FFN's forward takes now.

    Returns:
        'folded' (eval / deploy: BatchNorms folded into the layers before
        them), 'batch_stats' (training with batch statistics: the two
        autograd functions below) or None: the plain composition of modules,
        taken when ``ffn.fused`` is off or the FFN holds a norm, activation
        or channel attention the fused code does not compute.
    """
    if not ffn.fused:
        return None
    code = activation_code(ffn.act1)
    ca = ffn.channel_attention
    if code is None or not (isinstance(ca, nn.Identity)
                            or hasattr(ca, 'channel_weights')):
        return None
    if ffn.with_dw_conv and activation_code(ffn.act2) != code:
        return None
    if ffn.deploy:
        return 'folded'
    norms = [getattr(ffn, norm) for _, norm in ffn.folds()]
    if all(map(is_foldable, norms)):
        return 'folded'
    if all(map(is_batch_stat_bn, norms[:-1])) and \
            isinstance(norms[-1], _BatchNorm):
        return 'batch_stats'
    return None


def activation_code(module: nn.Module) -> Optional[str]:
    """The fused-kernel code of an activation module, None if unknown."""
    return ACTIVATIONS.get(type(module))


def activate(x: torch.Tensor, code: str, inplace: bool) -> torch.Tensor:
    """h-swish / ReLU6 / ReLU, in place when allowed."""
    if code == 'hswish':
        return F.hardswish(x, inplace=inplace)
    if code == 'relu6':
        return F.hardtanh(x, 0., 6., inplace=inplace)
    return F.relu(x, inplace=inplace)


def activation_backward(grad: torch.Tensor, x: torch.Tensor,
                        code: str) -> torch.Tensor:
    """Gradient through the activation, given its input ``x`` (a recomputed
    temporary, overwritten where the op has an in-place form)."""
    if code == 'hswish':  # no true out= kernel: a copy would cost a pass
        return aten.hardswish_backward(grad, x)
    if code == 'relu6':
        return aten.hardtanh_backward.grad_input(grad, x, 0., 6., grad_input=x)
    return aten.threshold_backward.grad_input(grad, x, 0., grad_input=x)


def bn_scale_shift(norm: _BatchNorm) -> Tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (scale, shift) of an eval-mode BatchNorm:
    ``norm(x) == x * scale + shift``."""
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.weight is not None:
        scale = scale * norm.weight
        shift = shift * norm.weight + norm.bias
    return scale, shift


def is_foldable(norm: nn.Module) -> bool:
    """A BatchNorm that normalizes with its running statistics."""
    return isinstance(norm, _BatchNorm) and not norm.training and \
        norm.running_mean is not None


def is_batch_stat_bn(norm: nn.Module) -> bool:
    """A single-process BatchNorm that normalizes with batch statistics.

    SyncBN in a distributed run is left out: its statistics need the other
    processes, which only its own forward gathers.
    """
    if not isinstance(norm, _BatchNorm) or not (norm.training
                                                or norm.running_mean is None):
        return False
    if isinstance(norm, nn.SyncBatchNorm):
        return not (torch.distributed.is_available()
                    and torch.distributed.is_initialized())
    return True


def _bn_momentum(norm: _BatchNorm) -> float:
    """``_BatchNorm.forward``'s momentum, counting the batch as it does."""
    momentum = 0. if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and \
            norm.num_batches_tracked is not None:
        norm.num_batches_tracked.add_(1)
        if norm.momentum is None:
            momentum = 1. / float(norm.num_batches_tracked)
    return momentum


def _bn_args(norm: _BatchNorm):
    """(weight, bias, running_mean, running_var, momentum, eps) for a batch
    statistics forward; running stats only when they are tracked."""
    track = norm.training and norm.track_running_stats
    return (norm.weight, norm.bias, norm.running_mean if track else None,
            norm.running_var if track else None, _bn_momentum(norm), norm.eps)


def _batch_stats(kernels,
                 x,
                 running_mean,
                 running_var,
                 momentum,
                 eps,
                 stats=None):
    """(mean, invstd) of the batch statistics of (M, C) rows ``x`` (one
    kernel pass, or ``stats``, their (mean, biased var) when summed
    already), the running statistics updated as ``_BatchNorm`` does."""
    mean, var = kernels.channel_stats(x) if stats is None else stats
    if running_mean is not None:
        rows = x.shape[0]
        running_mean.lerp_(mean, momentum)
        running_var.lerp_(var * (rows / (rows - 1)), momentum)
    return mean, torch.rsqrt(var + eps)


def _bn_act(x,
            code,
            weight,
            bias,
            running_mean,
            running_var,
            momentum,
            eps,
            stats=None):
    """act(BN(x)) of (M, C) rows with batch statistics (``stats``: their
    (mean, biased var) when already summed), the running statistics updated
    as ``_BatchNorm`` does; returns (y, mean, invstd)."""
    kernels = _kernels_for(x, weight, running_mean)
    if kernels is None or x.shape[0] < 2:
        y, mean, invstd = aten.native_batch_norm(x, weight, bias, running_mean,
                                                 running_var, True, momentum,
                                                 eps)
        return activate(y, code, inplace=True), mean, invstd
    # One pass for the statistics (unless summed already), one for y.
    mean, invstd = _batch_stats(kernels, x, running_mean, running_var,
                                momentum, eps, stats)
    y = _recompute_act(x, *_affine(mean, invstd, weight, bias), code)
    return y, mean, invstd


def _bn_act_dwconv(x, code, shape, weight, bias, running_mean, running_var,
                   momentum, eps, conv_w):
    """dwconv(act(BN(x))) of (M, C) rows of (B, H, W) lattices; returns
    (t, mean, invstd, t_stats): BN's batch statistics and, with the
    compiled kernels, t's (mean, biased var), else None. The kernels'
    conv reads x directly (act(BN(x)) is made per image in cache) and sums
    t's statistics on the way."""
    kernels = conv_kernels_for(x, conv_w, weight, running_mean)
    if kernels is None or x.shape[0] < 2:
        y, mean, invstd = _bn_act(x, code, weight, bias, running_mean,
                                  running_var, momentum, eps)
        k = conv_w.shape[-1]
        t = F.conv2d(
            _lattice(y, shape),
            conv_w.to(y.dtype),
            padding=k // 2,
            groups=conv_w.shape[0])
        return _rows(t), mean, invstd, None
    mean, invstd = _batch_stats(kernels, x, running_mean, running_var,
                                momentum, eps)
    scale, shift = _affine(mean, invstd, weight, bias)
    t = torch.empty_like(x)
    t_stats = kernels.bn_act_dwconv(x, scale, shift, _taps(conv_w), *shape[1:],
                                    KERNEL_CODES[code], t)
    return t, mean, invstd, t_stats


def _affine(mean, invstd, weight, bias):
    """(scale, shift) of a normalization with the given statistics."""
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale
    if bias is not None:
        shift = shift + bias
    return scale, shift


def _kernels_for(x: torch.Tensor, *others: Optional[torch.Tensor]):
    """The compiled kernels when they cover ``x`` and the ``others`` (float32
    or float64 on the CPU, one dtype), else None. Never while
    ``torch.jit.trace`` records (it sees ATen ops only: FLOP counting,
    export) nor while ``torch.compile`` traces (an opaque extension call
    would break its graph)."""
    if torch.jit.is_tracing() or torch.compiler.is_compiling():
        return None
    if x.device.type != 'cpu' or x.dtype not in (torch.float32, torch.float64):
        return None
    if any(t is not None and t.dtype != x.dtype for t in others):
        return None
    return cpu_kernels()


def _recompute_act(x, scale, shift, code, out=None):
    """act(x * scale + shift) in ``x``'s dtype, into ``out`` when given."""
    scale, shift = scale.to(x.dtype), shift.to(x.dtype)
    kernels = _kernels_for(x)
    if kernels is not None:  # one pass
        out = torch.empty_like(x) if out is None else out
        kernels.act_affine(x, scale, shift, KERNEL_CODES[code], out)
        return out
    y = torch.addcmul(shift, x, scale, out=out)
    return activate(y, code, inplace=True)


def _bn_act_backward(grad,
                     x,
                     weight,
                     mean,
                     invstd,
                     eps,
                     scale,
                     shift,
                     code,
                     needs,
                     out=None,
                     pooled_grad=None):
    """Back through act(BN(x)) with BN's output recomputed from ``x``.

    The input gradient goes into ``out`` when given (a free buffer of
    ``x``'s size, or ``grad`` itself when the caller owns it).
    ``pooled_grad`` (B, C), when given, is the gradient of the per-image
    token mean of act(BN(x)), divided by the tokens per image: it adds to
    every token of its image.
    """
    grad = grad.to(x.dtype).contiguous()
    kernels = _kernels_for(x, weight, mean, pooled_grad)
    if kernels is not None and needs[0]:  # two passes
        if out is None or out.dtype != x.dtype:
            out = torch.empty_like(x)
        sums = kernels.bn_act_backward(grad, x, scale.to(x.dtype),
                                       shift.to(x.dtype), mean, invstd, weight,
                                       pooled_grad, KERNEL_CODES[code], out)
        return (out, *_affine_grads(weight, invstd, *sums[:2], needs[1:]))
    if pooled_grad is not None:
        grad = (grad.view(len(pooled_grad), -1, grad.shape[1]) +
                pooled_grad.to(x.dtype)[:, None]).view(grad.shape)
    y = torch.addcmul(
        shift.to(x.dtype),
        x,
        scale.to(x.dtype),
        out=None if out is grad else out)
    grad = activation_backward(grad, y, code)
    mask = [
        needs[0], weight is not None and needs[1], weight is not None
        and needs[2]
    ]
    if not any(mask):
        return None, None, None
    return aten.native_batch_norm_backward(grad, x, weight, None, None, mean,
                                           invstd, True, eps, mask)


def _affine_grads(weight, invstd, sum_dy, sum_dy_xmu, needs):
    """(weight, bias) gradients of a BatchNorm from its kernels' column
    sums, each None where not needed (``needs``) or without affine."""
    if weight is None:
        return None, None
    return (sum_dy_xmu * invstd if needs[0] else None,
            sum_dy if needs[1] else None)


def _taps(conv_w: torch.Tensor) -> torch.Tensor:
    """Depth-wise conv weight (C, 1, k, k) as the kernels' (k, k, C)."""
    C, _, k, _ = conv_w.shape
    return conv_w.view(C, k, k).permute(1, 2, 0).contiguous()


def _conv_stages_backward(kernels, grad, pooled_grad, saved, shape, code,
                          needs):
    """Back through act(BN2(dwconv(act(BN1(x))))) with the compiled kernels:
    BN2's column sums (one pass); the conv's input and weight gradients,
    its output gradient and input recomputed per image in cache, and BN1's
    column sums (one pass); BN1's input gradient (one pass). Returns the
    gradients of x, BN1 weight and bias, the conv weight, BN2 weight and
    bias (None where not needed)."""
    (x, w1, b1, mean1, invstd1, conv_w, t, w2, mean2, invstd2, scale2,
     shift2) = saved
    act = KERNEL_CODES[code]
    scale2, shift2 = scale2.to(x.dtype), shift2.to(x.dtype)
    sum_dy2, sum_dy2_xmu, coef2 = kernels.bn_act_backward(
        grad, t, scale2, shift2, mean2, invstd2, w2, pooled_grad, act, None)
    scale1, shift1 = _affine(mean1, invstd1, w1, b1)
    dy = torch.empty_like(x)
    grad_taps, sum_dy, sum_dy_xmu = kernels.dwconv_bn_act_backward(
        grad, t, scale2, shift2, pooled_grad, coef2, x, scale1.to(x.dtype),
        shift1.to(x.dtype), mean1, _taps(conv_w), *shape[1:], act, dy)
    if needs[0]:
        kernels.bn_backward_apply(dy, x, mean1, invstd1, w1, sum_dy,
                                  sum_dy_xmu, dy)
    return (dy if needs[0] else None,
            *_affine_grads(w1, invstd1, sum_dy, sum_dy_xmu, needs[4:6]),
            grad_taps.permute(2, 0, 1).reshape(conv_w.shape)
            if needs[10] else None,
            *_affine_grads(w2, invstd2, sum_dy2, sum_dy2_xmu, needs[11:13]))


def conv_kernels_for(x, conv_w, *others):
    """The compiled kernels when their depth-wise conv stages can run for
    input like ``x`` (CPU float32 / float64, ``conv_w`` and ``others`` of its
    dtype, odd kernel: 'same' padding), else None."""
    return None if conv_w.shape[-1] % 2 == 0 else _kernels_for(
        x, conv_w, *others)


def act_dwconv_act_(kernels, h, h_bias, conv_w, conv_b, code, shape, pool):
    """Inference, without autograd: ``act(dwconv(act(h + h_bias)) + conv_b)``
    in place on contiguous (M, C) rows ``h`` of (B, H, W) lattices, one pass
    with the compiled kernels (``h_bias``: the bias of the projection that
    made ``h``, so its GEMM need not add it). Returns the per-image token
    mean of the result when ``pool``, else None."""
    return kernels.act_dwconv_act_(h, h_bias, _taps(conv_w), conv_b,
                                   *shape[1:], KERNEL_CODES[code], pool)


def _lattice(tokens: torch.Tensor, shape) -> torch.Tensor:
    """(M, C) rows of B images -> (B, C, H, W) channels-last view."""
    B, H, W = shape
    return tokens.view(B, H, W, -1).permute(0, 3, 1, 2)


def _rows(lattice: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B*H*W, C) rows; a view when channels-last."""
    return lattice.permute(0, 2, 3, 1).reshape(-1, lattice.shape[1])


class NormActConv(torch.autograd.Function):
    """``act(BN2(dwconv(act(BN1(x)))))`` on (M, C) rows, BN in batch mode.

    Without a depth-wise conv it is ``act(BN1(x))``. Only ``x`` and the conv
    output are kept for the backward pass; the activations are recomputed.
    Returns ``(y, pooled, t, scale, shift)``: the result; with ``pool`` its
    per-image token mean (B, C) for a channel gate, else None; the conv
    output (the BN input of the last stage, None without conv) and the last
    stage's (scale, shift), from which :class:`GatedProjection` recomputes
    the result instead of keeping it. The gradient of ``pooled`` joins the
    last stage's backward pass, so no (M, C) gradient is made for it.

    Args of ``apply``: x, code (activation), lattice shape (B, H, W), pool,
    bn1 (weight, bias, running mean, running var, momentum, eps), conv
    weight (or None), bn2 (the same six, or None).
    """

    @staticmethod
    def forward(ctx, x, code, shape, pool, w1, b1, rm1, rv1, mom1, eps1,
                conv_w, w2, b2, rm2, rv2, mom2, eps2):
        ctx.code, ctx.shape, ctx.eps = code, shape, (eps1, eps2)
        # The extra outputs carry no gradient: no zero tensors for them.
        ctx.set_materialize_grads(False)
        ctx.with_conv = conv_w is not None
        t = None
        if conv_w is None:
            y, mean1, invstd1 = _bn_act(x, code, w1, b1, rm1, rv1, mom1, eps1)
            scale, shift = _affine(mean1, invstd1, w1, b1)
            ctx.save_for_backward(x, w1, mean1, invstd1, scale, shift)
        else:
            t, mean1, invstd1, t_stats = _bn_act_dwconv(
                x, code, shape, w1, b1, rm1, rv1, mom1, eps1, conv_w)
            y, mean2, invstd2 = _bn_act(t, code, w2, b2, rm2, rv2, mom2, eps2,
                                        t_stats)
            scale, shift = _affine(mean2, invstd2, w2, b2)
            ctx.save_for_backward(x, w1, b1, mean1, invstd1, conv_w, t, w2,
                                  mean2, invstd2, scale, shift)
            ctx.mark_non_differentiable(t)
        ctx.mark_non_differentiable(scale, shift)
        pooled = y.view(shape[0], -1, y.shape[1]).mean(1) if pool else None
        return y, pooled, t, scale, shift

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, grad_pooled, *unused):
        if grad is None and grad_pooled is None:  # did not reach the loss
            return (None, ) * 17
        code, shape = ctx.code, ctx.shape
        needs = ctx.needs_input_grad
        saved = ctx.saved_tensors  # unpack once (activation checkpointing)
        source = saved[0] if not ctx.with_conv else saved[6]
        if grad is None:
            grad = torch.zeros_like(source)
        if grad_pooled is not None:  # the mean's gradient, per token
            grad_pooled = grad_pooled / (shape[1] * shape[2])
        if not ctx.with_conv:
            x, w1, mean1, invstd1, scale, shift = saved
            gx, gw1, gb1 = _bn_act_backward(
                grad,
                x,
                w1,
                mean1,
                invstd1,
                ctx.eps[0],
                scale,
                shift,
                code, (needs[0], needs[4], needs[5]),
                pooled_grad=grad_pooled)
            return (gx, None, None, None, gw1, gb1) + (None, ) * 11
        (x, w1, b1, mean1, invstd1, conv_w, t, w2, mean2, invstd2, scale,
         shift) = saved
        kernels = conv_kernels_for(x, conv_w, grad, t, w1, w2, mean2,
                                   grad_pooled)
        if kernels is not None:
            gx, gw1, gb1, gconv, gw2, gb2 = _conv_stages_backward(
                kernels, grad.contiguous(), grad_pooled, saved, shape, code,
                needs)
            return (gx, None, None, None, gw1, gb1, None, None, None, None,
                    gconv, gw2, gb2, None, None, None, None)
        # Fresh memory costs page faults on the CPU, more than a pass: the
        # recomputed y reuses the buffer that gt leaves free.
        scratch = torch.empty_like(t)
        gt, gw2, gb2 = _bn_act_backward(grad, t, w2, mean2, invstd2,
                                        ctx.eps[1], scale, shift, code,
                                        (True, needs[11], needs[12]), scratch,
                                        grad_pooled)
        scale1, shift1 = _affine(mean1, invstd1, w1, b1)
        y = _recompute_act(x, scale1, shift1, code,
                           None if gt is scratch else scratch)
        k = conv_w.shape[-1]
        gy, gconv, _ = aten.convolution_backward(
            _lattice(gt, shape), _lattice(y, shape), conv_w.to(y.dtype), None,
            [1, 1], [k // 2, k // 2], [1, 1], False, [0, 0], conv_w.shape[0],
            [True, needs[10], False])
        del y, gt, scratch
        if gconv is not None:
            gconv = gconv.to(conv_w.dtype)
        gy = _rows(gy).contiguous()
        gx, gw1, gb1 = _bn_act_backward(
            gy,
            x,
            w1,
            mean1,
            invstd1,
            ctx.eps[0],
            scale1,
            shift1,
            code, (needs[0], needs[4], needs[5]),
            out=gy)
        return (gx, None, None, None, gw1, gb1, None, None, None, None, gconv,
                gw2, gb2, None, None, None, None)


class GatedProjection(torch.autograd.Function):
    """``(a * gate) @ weight.T`` for (B, N, C) ``a`` and (B, C) ``gate``.

    ``a`` is not kept: the backward pass recomputes it as
    ``act(source * scale + shift)`` from the BN input ``source`` (M, C) that
    :class:`NormActConv` keeps anyway. With a gate, ``a`` is gated in place
    (no new hidden tensor): the caller passes a tensor nothing else reads.

    Args of ``apply``: a, gate (or None), weight (D, C), source, scale,
    shift, code (activation).
    """

    @staticmethod
    def forward(ctx, a, gate, weight, source, scale, shift, code):
        u = a if gate is None else a.mul_(gate[:, None].to(a.dtype))
        ctx.code, ctx.shape, ctx.dtype = code, a.shape, a.dtype
        ctx.save_for_backward(gate, weight, source, scale, shift)
        return torch.mm(u.reshape(-1, a.shape[-1]), weight.t().to(u.dtype))

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        gate, weight, source, scale, shift = ctx.saved_tensors
        B, N, C = ctx.shape
        grad = grad.contiguous()
        ga = torch.mm(grad, weight.to(grad.dtype))
        kernels = _kernels_for(source, ga, gate)
        ggate = gweight = None
        if gate is None:
            u = _recompute_act(source, scale, shift, ctx.code)
        elif kernels is not None:  # one pass: u, gate gradient, gating
            u = torch.empty_like(source)
            ggate = kernels.gated_backward(ga, source, scale.to(source.dtype),
                                           shift.to(source.dtype),
                                           gate.contiguous(),
                                           KERNEL_CODES[ctx.code], u)
        else:
            u = _recompute_act(source, scale, shift, ctx.code).view(B, N, C)
            ga = ga.view(B, N, C)
            ggate = torch.mul(ga, u).sum(1)
            u.mul_(gate[:, None].to(u.dtype))
            ga.mul_(gate[:, None].to(ga.dtype))
        if ggate is not None:
            ggate = ggate.to(gate.dtype)
        if ctx.needs_input_grad[2]:
            gweight = torch.mm(grad.t(), u.view(B * N, C).to(grad.dtype))
            gweight = gweight.to(weight.dtype)
        return (ga.view(B, N, C).to(ctx.dtype), ggate, gweight, None, None,
                None, None)


def bn_train_args(norm: Optional[_BatchNorm]) -> tuple:
    """The six BN arguments of :class:`NormActConv` (Nones if no norm)."""
    return (None, ) * 6 if norm is None else _bn_args(norm)

"""The fused locality FFN paths against a plain float64 reference.

The reference is REFERENCE section 1 written out with NCHW convolutions:
class token split off, 1x1 conv, BN, act, k x k depth-wise conv, BN, act,
SE / ECA, 1x1 conv, BN, residual. It reads the module's own parameters, so
every option is compared output for output, gradient for gradient and
running statistic for running statistic, in train and in eval mode.
"""
import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bn_stats import randomize_bn

from localvit_mm.analysis import SavedTensorBytes
from localvit_mm.models import LocalViT, LocalViTPVT
from localvit_mm.models.layers import (ECALayer, LocalityFeedForward, SELayer,
                                       fast_ffn)

TOL = dict(rtol=1e-9, atol=1e-10)


def test_the_tested_environment_builds_the_kernels():
    """tools/setup_env.sh builds localvit_mm._ext, and where torch runs AVX2
    code it is in use: a silent fall-back would lose the speed (and turn the
    'compiled' runs below and test_cpu_kernels.py into skips)."""
    import localvit_mm._ext  # the build exists
    if torch.backends.cpu.get_cpu_capability() != 'DEFAULT':
        assert fast_ffn.cpu_kernels() is localvit_mm._ext


@pytest.fixture(params=['compiled', 'aten'])
def kernels(request, monkeypatch):
    """Run a test with the compiled CPU kernels and with ATen ops only (the
    compiled run is skipped only where the CPU cannot run them, which
    test_the_tested_environment_builds_the_kernels checks)."""
    if request.param == 'aten':
        monkeypatch.setenv('LOCALVIT_CPU_KERNELS', '0')
        assert fast_ffn.cpu_kernels() is None
    elif fast_ffn.cpu_kernels() is None:
        pytest.skip('localvit_mm._ext is not built for this CPU')
    return request.param


def assert_close(actual, expected, msg=None):
    """Gradients equal relative to the tensor's scale. PyTorch's own
    h-sigmoid backward multiplies by a float32 1/6 even in float64 (a 3e-8
    relative difference to the exact reference); a wrong formula would be
    off by O(1)."""
    scale = max(1., expected.abs().max().item())
    torch.testing.assert_close(
        actual, expected, rtol=1e-7, atol=1e-7 * scale, msg=msg)


def reference_bn(x, bn, training):
    """BatchNorm2d by hand; updates the running stats like PyTorch does."""
    if training:
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)
        n = x.numel() / x.shape[1]
        with torch.no_grad():
            bn.running_mean.mul_(1 - bn.momentum).add_(bn.momentum * mean)
            bn.running_var.mul_(1 - bn.momentum).add_(bn.momentum * var * n /
                                                      (n - 1))
            bn.num_batches_tracked.add_(1)
    else:
        mean, var = bn.running_mean, bn.running_var
    x = (x - mean[:, None, None]) / torch.sqrt(var[:, None, None] + bn.eps)
    return x * bn.weight[:, None, None] + bn.bias[:, None, None]


def reference_act(x, act):
    if isinstance(act, nn.ReLU6):
        return x.clamp(0, 6)
    if isinstance(act, nn.ReLU):
        return x.clamp_min(0)
    return x * (x + 3).clamp(0, 6) / 6  # h-swish


def reference_ffn(ffn, x, hw_shape, extra, training):
    """The locality FFN of REFERENCE section 1 with ``ffn``'s parameters."""
    B, _, C = x.shape
    H, W = hw_shape
    cls, tokens = x[:, :extra], x[:, extra:]
    img = tokens.transpose(1, 2).reshape(B, C, H, W)
    y = F.conv2d(img, ffn.fc1.weight[:, :, None, None])
    y = reference_act(reference_bn(y, ffn.norm1, training), ffn.act1)
    if isinstance(ffn.dw_conv, nn.Conv2d):
        k = ffn.dw_conv.kernel_size[0]
        y = F.conv2d(y, ffn.dw_conv.weight, padding=k // 2, groups=y.shape[1])
        y = reference_act(reference_bn(y, ffn.norm2, training), ffn.act2)
    ca = ffn.channel_attention
    if isinstance(ca, SELayer):
        s = y.mean((2, 3))
        s = torch.relu(s @ ca.fc[0].weight.T + ca.fc[0].bias)
        s = s @ ca.fc[2].weight.T + ca.fc[2].bias
        y = y * ((s + 3).clamp(0, 6) / 6)[:, :, None, None]
    elif isinstance(ca, ECALayer):
        s = y.mean((2, 3))[:, None, :]
        k = ca.conv.weight
        s = F.conv1d(s, k, padding=k.shape[-1] // 2)[:, 0]
        s = torch.sigmoid(s) if ca.gate is torch.sigmoid else \
            (s + 3).clamp(0, 6) / 6
        y = y * s[:, :, None, None]
    y = reference_bn(
        F.conv2d(y, ffn.fc2.weight[:, :, None, None]), ffn.norm3, training)
    out = (img + y).flatten(2).transpose(1, 2)
    return torch.cat([cls, out], dim=1)


def randomize(module, seed=0):
    """Non-trivial BN statistics and affine parameters, float64."""
    return randomize_bn(module.double(), seed)


OPTIONS = [
    dict(),
    dict(act_cfg=dict(type='ReLU6')),
    dict(act_cfg=dict(type='ReLU')),
    dict(channel_attention=dict(type='SE', reduction=4)),
    dict(channel_attention=dict(type='SE', reduction=64)),
    dict(channel_attention=dict(type='ECA', gate='sigmoid')),
    dict(channel_attention=dict(type='ECA', gate='hsigmoid')),
    dict(expansion_ratio=1, channel_attention=dict(type='SE', reduction=16)),
    dict(expansion_ratio=6, act_cfg=dict(type='ReLU6')),
    dict(kernel_size=5, channel_attention=dict(type='SE', reduction=8)),
    dict(with_dw_conv=False),
    dict(with_dw_conv=False, channel_attention=dict(type='SE', reduction=4)),
    dict(
        with_dw_conv=False,
        act_cfg=dict(type='ReLU6'),
        channel_attention=dict(type='ECA')),
]


def compare(ffn, x, hw_shape, extra, training, expect_path):
    """Output, input/parameter gradients and buffers against the reference."""
    ref = copy.deepcopy(ffn)
    ffn.train(training)
    ref.train(training)
    assert fast_ffn.fused_path(ffn) == expect_path
    xr = x.detach().clone().requires_grad_()
    out = ffn(x, hw_shape, extra)
    expected = reference_ffn(ref, xr, hw_shape, extra, training)
    torch.testing.assert_close(out, expected, **TOL)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert_close(x.grad, xr.grad)
    for (name, p), (_, pr) in zip(ffn.named_parameters(),
                                  ref.named_parameters()):
        assert_close(p.grad, pr.grad, msg=name)
    for (name, b), (_, br) in zip(ffn.named_buffers(), ref.named_buffers()):
        torch.testing.assert_close(b, br, **TOL, msg=name)


@pytest.mark.parametrize('options', OPTIONS)
@pytest.mark.parametrize('training', [True, False])
def test_every_option_matches_reference(options, training, kernels):
    torch.manual_seed(0)
    ffn = randomize(LocalityFeedForward(16, **options))
    x = torch.randn(3, 1 + 12, 16, dtype=torch.float64, requires_grad=True)
    compare(ffn, x, (3, 4), 1, training,
            'batch_stats' if training else 'folded')


@pytest.mark.parametrize('options', OPTIONS)
def test_every_option_no_grad_eval_matches_reference(options, kernels):
    """Inference without autograd (the conv stage in one in-place pass
    with the compiled kernels) for every option."""
    torch.manual_seed(0)
    ffn = randomize(LocalityFeedForward(16, **options)).eval()
    x = torch.randn(3, 1 + 12, 16, dtype=torch.float64)
    with torch.no_grad():
        expected = reference_ffn(ffn, x, (3, 4), 1, training=False)
        torch.testing.assert_close(ffn(x, (3, 4), 1), expected, **TOL)


@pytest.mark.parametrize('hw_shape', [(2, 7), (7, 2), (1, 1), (5, 5)])
@pytest.mark.parametrize('extra', [0, 1, 2])
@pytest.mark.parametrize('training', [True, False])
def test_lattices_and_extra_tokens(hw_shape, extra, training, kernels):
    torch.manual_seed(1)
    ffn = randomize(
        LocalityFeedForward(8, channel_attention=dict(type='SE', reduction=4)))
    x = torch.randn(
        4,
        extra + math.prod(hw_shape),
        8,
        dtype=torch.float64,
        requires_grad=True)
    compare(ffn, x, hw_shape, extra, training,
            'batch_stats' if training else 'folded')


@pytest.mark.parametrize('extra', [0, 1, 2])
def test_no_grad_eval_writes_in_place_correctly(extra, kernels):
    """The no-grad path (in-place activations, batched GEMM on the strided
    image tokens, output written without concatenation) gives the
    reference; it leaves its input alone unless told it owns it."""
    ffn = randomize(
        LocalityFeedForward(8, channel_attention=dict(type='SE',
                                                      reduction=2))).eval()
    x = torch.randn(2, extra + 6, 8, dtype=torch.float64)
    before = x.clone()
    with torch.no_grad():
        expected = reference_ffn(ffn, x, (2, 3), extra, training=False)
        out = ffn(x, (2, 3), extra)
        torch.testing.assert_close(out, expected, **TOL)
        assert torch.equal(x, before)
        out = ffn(x, (2, 3), extra, inplace=True)
    assert out is x
    torch.testing.assert_close(x, expected, **TOL)
    # With autograd on, inplace is not taken: the input stays as it was.
    y = before.clone().requires_grad_()
    out = ffn(y, (2, 3), extra, inplace=True)
    torch.testing.assert_close(out, expected, **TOL)
    assert torch.equal(y.detach(), before)


def test_frozen_bn_training_folds_with_gradients():
    """norm_eval-style training: BN in eval mode inside a training model
    folds on the fly and still sends gradients to fc, conv and BN affine."""
    ffn = randomize(
        LocalityFeedForward(
            8, channel_attention=dict(type='ECA', gate='hsigmoid')))
    ffn.train()
    for m in (ffn.norm1, ffn.norm2, ffn.norm3):
        m.eval()
    x = torch.randn(2, 1 + 9, 8, dtype=torch.float64, requires_grad=True)
    ref = copy.deepcopy(ffn)
    assert fast_ffn.fused_path(ffn) == 'folded'
    xr = x.detach().clone().requires_grad_()
    out = ffn(x, (3, 3), 1)
    expected = reference_ffn(ref, xr, (3, 3), 1, training=False)
    torch.testing.assert_close(out, expected, **TOL)
    out.sum().backward()
    expected.sum().backward()
    for (name, p), (_, pr) in zip(ffn.named_parameters(),
                                  ref.named_parameters()):
        assert_close(p.grad, pr.grad, msg=name)


def test_momentum_none_and_untracked_stats():
    """Cumulative averaging (momentum=None) and BN without running stats."""
    ffn = randomize(LocalityFeedForward(8)).train()
    plain = copy.deepcopy(ffn)
    for m in (ffn.norm1, ffn.norm2, plain.norm1, plain.norm2):
        m.momentum = None
    x = torch.randn(2, 1 + 4, 8, dtype=torch.float64)
    for _ in range(3):
        out = ffn(x, (2, 2), 1)
        expected = x[:, 1:] + plain.conv_ffn(x[:, 1:], (2, 2))
        torch.testing.assert_close(out[:, 1:], expected, **TOL)
    torch.testing.assert_close(ffn.norm2.running_var, plain.norm2.running_var)
    assert int(ffn.norm1.num_batches_tracked) == 3

    untracked = LocalityFeedForward(
        8, norm_cfg=dict(type='BN', track_running_stats=False)).double()
    untracked.eval()  # batch statistics even in eval mode
    assert fast_ffn.fused_path(untracked) == 'batch_stats'
    out = untracked(x, (2, 2), 1)
    torch.testing.assert_close(out[:, 1:],
                               x[:, 1:] + untracked.conv_ffn(x[:, 1:],
                                                             (2, 2)), **TOL)


def test_other_norms_and_activations_use_the_module_path():
    x = torch.randn(2, 1 + 6, 8, dtype=torch.float64)
    for options in (dict(act_cfg=dict(type='GELU')),
                    dict(norm_cfg=dict(type='GN', num_groups=2))):
        ffn = LocalityFeedForward(8, **options).double().train()
        assert fast_ffn.fused_path(ffn) is None
        out = ffn(x, (2, 3), 1)
        torch.testing.assert_close(out[:, 1:],
                                   x[:, 1:] + ffn.conv_ffn(x[:, 1:], (2, 3)))
    mixed = LocalityFeedForward(8).double().train()
    mixed.norm2.eval()
    assert fast_ffn.fused_path(mixed) is None


@pytest.mark.parametrize('training', [False, True])
def test_fused_flag_switches_to_the_plain_composition(training, monkeypatch):
    """``fused=False`` (or ``LOCALVIT_FUSED_FFN=0`` for the default) runs
    the module-by-module composition; both paths give the same function."""
    torch.manual_seed(0)
    x = torch.randn(2, 1 + 12, 8, dtype=torch.float64)
    fused = LocalityFeedForward(
        8, channel_attention=dict(type='SE', reduction=4)).double()
    randomize_bn(fused)
    plain = copy.deepcopy(fused)
    plain.fused = False
    fused.train(training)
    plain.train(training)
    assert fast_ffn.fused_path(fused) == ('batch_stats'
                                          if training else 'folded')
    assert fast_ffn.fused_path(plain) is None
    torch.testing.assert_close(fused(x, (3, 4), 1), plain(x, (3, 4), 1), **TOL)
    monkeypatch.setenv('LOCALVIT_FUSED_FFN', '0')
    assert not LocalityFeedForward(8).fused
    assert LocalityFeedForward(8, fused=True).fused
    monkeypatch.setenv('LOCALVIT_FUSED_FFN', '1')
    assert LocalityFeedForward(8).fused
    model = LocalViT(
        arch=dict(embed_dims=16, num_layers=1, num_heads=2),
        img_size=32,
        ffn_cfg=dict(fused=False))
    assert model.blocks[0].ffn.fused is False


def test_training_keeps_two_hidden_tensors():
    """The fused training path saves the two BN inputs of the hidden layers
    (as a plain MLP saves two hidden tensors), not the seven tensors the
    module-by-module composition keeps for backward."""
    dims, hidden, B, N = 16, 64, 4, 36

    def saved_bytes(ffn):
        x = torch.randn(B, 1 + N, dims, requires_grad=True)
        with SavedTensorBytes(exclude=ffn) as saved:
            ffn(x, (6, 6), 1)
        return saved.nbytes

    ffn = LocalityFeedForward(
        dims, channel_attention=dict(type='SE', reduction=4)).train()
    one = B * N * hidden * 4
    assert 2 * one <= saved_bytes(ffn) < 3 * one
    plain = copy.deepcopy(ffn)
    plain.fused = False
    assert saved_bytes(plain) > 6 * one


def tiny_localvit(**kwargs):
    return LocalViT(
        arch=dict(
            embed_dims=16,
            num_layers=3,
            num_heads=2,
            ffn_cfg=dict(channel_attention=dict(type='SE', reduction=8))),
        img_size=32,
        patch_size=8,
        locality_layers=[0, 2],
        out_type='raw',
        **kwargs)


def tiny_pvt(**kwargs):
    return LocalViTPVT(
        arch=dict(
            embed_dims=[8, 16],
            num_layers=[1, 2],
            num_heads=[1, 2],
            mlp_ratios=[4, 2],
            sr_ratios=[2, 1]),
        patch_sizes=(4, 2),
        pretrain_img_size=32,
        with_cls_token=True,
        out_type='cls_token',
        out_indices=(0, 1),
        drop_path_rate=0.,
        **kwargs)


def with_reference_ffns(model):
    """A copy of ``model`` whose locality FFNs run the reference."""
    ref = copy.deepcopy(model)
    for m in ref.modules():
        if isinstance(m, LocalityFeedForward):
            m.forward = (lambda x, hw, extra=1, inplace=False, m=m:
                         reference_ffn(m, x, hw, extra, m.norm1.training))
    return ref


@pytest.mark.parametrize('build,shape', [(tiny_localvit, (32, 40)),
                                         (tiny_pvt, (32, 48))])
@pytest.mark.parametrize('training', [True, False])
def test_backbones_match_reference(build, shape, training, kernels):
    torch.manual_seed(0)
    model = build()
    model.init_weights()
    randomize(model)
    ref = with_reference_ffns(model)
    model.train(training)
    ref.train(training)
    x = torch.randn(2, 3, *shape, dtype=torch.float64, requires_grad=True)
    xr = x.detach().clone().requires_grad_()
    outs, expected = model(x), ref(xr)
    for out, exp in zip(outs, expected):
        torch.testing.assert_close(out, exp, **TOL)
    sum(o.square().sum() for o in outs).backward()
    sum(o.square().sum() for o in expected).backward()
    assert_close(x.grad, xr.grad)
    for (name, p), (_, pr) in zip(model.named_parameters(),
                                  ref.named_parameters()):
        if p.grad is not None or pr.grad is not None:
            assert_close(p.grad, pr.grad, msg=name)


def test_activation_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = randomize(tiny_pvt()).train()
    checkpointed = copy.deepcopy(model)
    checkpointed.with_cp = True
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    xc = x.detach().clone().requires_grad_()
    sum(o.sum() for o in model(x)).backward()
    sum(o.sum() for o in checkpointed(xc)).backward()
    assert_close(x.grad, xc.grad)
    for (name, p), (_, pc) in zip(model.named_parameters(),
                                  checkpointed.named_parameters()):
        assert_close(p.grad, pc.grad, msg=name)


def test_float32_bfloat16_autocast_runs():
    """The fused paths run in float32 and under CPU bf16 autocast."""
    ffn = LocalityFeedForward(
        16, channel_attention=dict(type='SE', reduction=4))
    x = torch.randn(2, 1 + 16, 16, requires_grad=True)
    for training in (True, False):
        ffn.train(training)
        ref = x[:, 1:] + ffn.conv_ffn(x[:, 1:], (4, 4))
        torch.testing.assert_close(
            ffn(x, (4, 4), 1)[:, 1:], ref, rtol=1e-4, atol=1e-5)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            out = ffn(x, (4, 4), 1)
        out.float().sum().backward()
        assert torch.isfinite(x.grad).all()

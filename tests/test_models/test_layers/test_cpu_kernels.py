"""The compiled CPU kernels against ATen ops, at sizes with vector tails."""
import pytest
import torch
import torch.nn.functional as F

from localvit_mm.models.layers.fast_ffn import KERNEL_CODES
from localvit_mm.ops import cpu_kernels

ACTIVATIONS = dict(hswish=F.hardswish, relu6=F.relu6, relu=F.relu)
ext = cpu_kernels()
# test_fast_ffn.py fails when the tested environment lacks the kernels.
pytestmark = pytest.mark.skipif(
    ext is None, reason='localvit_mm._ext is not built for this CPU')


def batch_norm_case(rows, channels, dtype, seed=0):
    """BN input, statistics and the (scale, shift) of its affine map."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, channels, generator=g, dtype=dtype) * 2 + 0.5
    weight = torch.rand(channels, generator=g, dtype=dtype) + 0.5
    bias = torch.randn(channels, generator=g, dtype=dtype)
    _, mean, invstd = torch.ops.aten.native_batch_norm(x, weight, bias, None,
                                                       None, True, 0.1, 1e-5)
    scale = invstd * weight
    return x, weight, bias, mean, invstd, scale, bias - mean * scale


def taps_of(conv_w):
    """Depth-wise conv weight (C, 1, k, k) as the kernels' (k, k, C)."""
    channels, _, k, _ = conv_w.shape
    return conv_w.view(channels, k, k).permute(1, 2, 0).contiguous()


def assert_close_to(actual, expected, tol):
    """Equal relative to the largest entry of ``expected``."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=tol, atol=tol * scale)


CASES = [(1000, 37, 8), (3, 8, 1), (300, 1, 3)]  # rows, channels, images
DTYPES = [(torch.float64, 1e-12), (torch.float32, 1e-5)]


@pytest.mark.parametrize('dtype,tol', DTYPES)
@pytest.mark.parametrize('rows,channels,images', CASES)
@pytest.mark.parametrize('offset', [0., 1e3])
def test_channel_stats_match_var_mean(dtype, tol, rows, channels, images,
                                      offset):
    """Batch statistics in one pass, also for data far from zero (where
    E[x^2] - E[x]^2 without a shift would cancel)."""
    x = torch.randn(rows, channels, dtype=dtype) * 2 + offset
    mean, var = ext.channel_stats(x)
    expected_var, expected_mean = torch.var_mean(x.double(), 0, correction=0)
    torch.testing.assert_close(
        mean.double(), expected_mean, rtol=tol, atol=tol * (2 + offset))
    torch.testing.assert_close(
        var.double(), expected_var, rtol=tol * 10, atol=tol)


@pytest.mark.parametrize('code', sorted(KERNEL_CODES))
@pytest.mark.parametrize('dtype,tol', DTYPES)
@pytest.mark.parametrize('rows,channels,images', CASES)
@pytest.mark.parametrize('pooled', [False, True])
def test_bn_act_backward_matches_autograd(code, dtype, tol, rows, channels,
                                          images, pooled):
    """act(BN(x)), its gradients, and the gradient of its per-image mean
    (``pooled``) added to every row of the image."""
    x, weight, bias, mean, invstd, scale, shift = batch_norm_case(
        rows, channels, dtype)
    act = ACTIVATIONS[code]
    out = torch.empty_like(x)
    ext.act_affine(x, scale, shift, KERNEL_CODES[code], out)
    expected = act(F.batch_norm(x, None, None, weight, bias, True))
    torch.testing.assert_close(out, expected, rtol=tol, atol=tol)

    grad = torch.randn_like(x)
    grad_mean = torch.randn(images, channels, dtype=dtype)
    leaves = [t.clone().requires_grad_() for t in (x, weight, bias)]
    y = act(F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], True))
    loss = (y * grad).sum()
    if pooled:
        loss = loss + (y.view(images, -1, channels).mean(1) * grad_mean).sum()
    loss.backward()
    grad_x = grad.clone()  # in place: the output may be the gradient
    sum_dy, sum_dy_xmu, _ = ext.bn_act_backward(
        grad_x, x, scale, shift, mean, invstd, weight,
        grad_mean / (rows // images) if pooled else None, KERNEL_CODES[code],
        grad_x)
    for actual, leaf in zip([grad_x, sum_dy_xmu * invstd, sum_dy], leaves):
        assert_close_to(actual, leaf.grad, tol)


@pytest.mark.parametrize('code', sorted(KERNEL_CODES))
@pytest.mark.parametrize('dtype,tol', DTYPES)
@pytest.mark.parametrize('rows,channels,images', CASES)
def test_gated_backward_matches_autograd(code, dtype, tol, rows, channels,
                                         images):
    x, _, _, _, _, scale, shift = batch_norm_case(rows, channels, dtype)
    gate = torch.rand(images, channels, dtype=dtype, requires_grad=True)
    grad = torch.randn(rows, channels, dtype=dtype)
    u = ACTIVATIONS[code](x * scale + shift).requires_grad_()
    gated = (u.view(images, -1, channels) * gate[:, None]).view(rows, -1)
    gated.backward(grad)
    grad_u, gated_u = grad.clone(), torch.empty_like(x)
    grad_gate = ext.gated_backward(grad_u, x, scale, shift, gate.detach(),
                                   KERNEL_CODES[code], gated_u)
    assert_close_to(gated_u, gated.detach(), tol)
    assert_close_to(grad_u, u.grad, tol)
    assert_close_to(grad_gate, gate.grad, tol)


LATTICES = [(3, 4, 5, 37, 3), (2, 7, 7, 16, 5), (5, 1, 1, 8, 3),
            (1, 2, 9, 8, 7)]  # images, height, width, channels, kernel


@pytest.mark.parametrize('code', sorted(KERNEL_CODES))
@pytest.mark.parametrize('dtype,tol', DTYPES)
@pytest.mark.parametrize('images,height,width,channels,k', LATTICES)
@pytest.mark.parametrize('offset', [0., 100.])
def test_bn_act_dwconv_matches_conv2d(code, dtype, tol, images, height, width,
                                      channels, k, offset):
    """dwconv(act(BN(x))) on channels-last lattices and the batch statistics
    of its output (also far from zero: ``offset`` shifts the conv input)."""
    rows = images * height * width
    x, _, _, _, _, scale, shift = batch_norm_case(rows, channels, dtype)
    shift = shift + offset
    conv_w = torch.randn(channels, 1, k, k, dtype=dtype)
    y = ACTIVATIONS[code](x * scale + shift)
    expected = F.conv2d(
        y.view(images, height, width, -1).permute(0, 3, 1, 2),
        conv_w,
        padding=k // 2,
        groups=channels)
    expected = expected.permute(0, 2, 3, 1).reshape(rows, channels)
    taps = taps_of(conv_w)
    t = torch.empty_like(x)
    mean, var = ext.bn_act_dwconv(x, scale, shift, taps, height, width,
                                  KERNEL_CODES[code], t)
    assert_close_to(t, expected, tol)
    expected_var, expected_mean = torch.var_mean(
        expected.double(), 0, correction=0)
    assert_close_to(mean.double(), expected_mean, tol)
    # Relative to E[t^2], the scale of the variance's rounding error.
    square_scale = 1 + expected_mean.abs().max().item()**2
    torch.testing.assert_close(
        var.double(),
        expected_var,
        rtol=tol * 10,
        atol=tol * 10 * square_scale)


@pytest.mark.parametrize('code', sorted(KERNEL_CODES))
@pytest.mark.parametrize('dtype,tol', DTYPES)
@pytest.mark.parametrize('images,height,width,channels,k', LATTICES)
@pytest.mark.parametrize('with_bias', [True, False])
def test_act_dwconv_act_in_place_matches_conv2d(code, dtype, tol, images,
                                                height, width, channels, k,
                                                with_bias):
    """The inference form, in place, with and without the two biases, and
    the per-image token means."""
    rows = images * height * width
    x = torch.randn(rows, channels, dtype=dtype) * 2
    conv_w = torch.randn(channels, 1, k, k, dtype=dtype)
    input_bias, bias = (torch.randn(channels, dtype=dtype)
                        for _ in range(2)) if with_bias else (None, None)
    act = ACTIVATIONS[code]
    y = act(x if input_bias is None else x + input_bias)
    lattice = y.view(images, height, width, -1).permute(0, 3, 1, 2)
    expected = act(
        F.conv2d(lattice, conv_w, bias, padding=k // 2, groups=channels))
    expected = expected.permute(0, 2, 3, 1).reshape(rows, channels)
    taps = taps_of(conv_w)
    pooled = ext.act_dwconv_act_(x, input_bias, taps, bias, height, width,
                                 KERNEL_CODES[code], True)
    assert_close_to(x, expected, tol)
    assert_close_to(pooled, expected.view(images, -1, channels).mean(1), tol)
    assert ext.act_dwconv_act_(x, input_bias, taps, bias, height, width,
                               KERNEL_CODES[code], False) is None


# float64 on every lattice; float32 on a model-sized one (on few rows a
# value at an activation's kink may round to the other side).
CHAIN_CASES = [(torch.float64, 1e-11, *lattice) for lattice in LATTICES] + \
    [(torch.float32, 1e-4, 4, 14, 14, 64, 3)]


@pytest.mark.parametrize('code', sorted(KERNEL_CODES))
@pytest.mark.parametrize('dtype,tol,images,height,width,channels,k',
                         CHAIN_CASES)
@pytest.mark.parametrize('pooled', [False, True])
def test_dwconv_bn_act_backward_matches_autograd(dtype, tol, images, height,
                                                 width, channels, k, code,
                                                 pooled):
    """Back through act(BN2(dwconv(act(BN1(x))))) on channels-last lattices
    (borders, kernels larger than the image, vector tails, the per-image
    mean's gradient): BN2's sums, then the conv kernel, then BN1's input
    gradient from the column sums it returns."""
    rows = images * height * width
    x, w1, b1, mean1, invstd1, scale1, shift1 = batch_norm_case(
        rows, channels, dtype)
    conv_w = torch.randn(channels, 1, k, k, dtype=dtype)
    w2 = torch.rand(channels, dtype=dtype) + 0.5
    b2 = torch.randn(channels, dtype=dtype)
    act = ACTIVATIONS[code]
    leaves = [p.double().requires_grad_() for p in (x, w1, b1, conv_w, w2, b2)]
    y = act(F.batch_norm(leaves[0], None, None, leaves[1], leaves[2], True))
    t = F.conv2d(
        y.view(images, height, width, -1).permute(0, 3, 1, 2),
        leaves[3],
        padding=k // 2,
        groups=channels)
    t = t.permute(0, 2, 3, 1).reshape(rows, channels)
    out = act(F.batch_norm(t, None, None, leaves[4], leaves[5], True))
    grad = torch.randn(rows, channels, dtype=dtype)
    grad_mean = torch.randn(images, channels, dtype=dtype)
    loss = (out * grad.double()).sum()
    if pooled:
        loss = loss + (out.view(images, -1, channels).mean(1) *
                       grad_mean.double()).sum()
    loss.backward()

    t = t.detach().to(dtype)
    mean2, invstd2 = t.mean(0), torch.rsqrt(t.var(0, unbiased=False) + 1e-5)
    scale2, shift2 = invstd2 * w2, b2 - mean2 * invstd2 * w2
    pooled_grad = grad_mean / (height * width) if pooled else None
    code_number = KERNEL_CODES[code]
    sum_dy2, sum_dy2_xmu, coef2 = ext.bn_act_backward(grad, t, scale2, shift2,
                                                      mean2, invstd2, w2,
                                                      pooled_grad, code_number,
                                                      None)
    taps = taps_of(conv_w)
    dy = torch.empty_like(x)
    grad_taps, sum_dy, sum_dy_xmu = ext.dwconv_bn_act_backward(
        grad, t, scale2, shift2, pooled_grad, coef2, x, scale1, shift1, mean1,
        taps, height, width, code_number, dy)
    ext.bn_backward_apply(dy, x, mean1, invstd1, w1, sum_dy, sum_dy_xmu, dy)
    grad_conv = grad_taps.permute(2, 0, 1).reshape(channels, 1, k, k)
    actual = [
        dy, sum_dy_xmu * invstd1, sum_dy, grad_conv, sum_dy2_xmu * invstd2,
        sum_dy2
    ]
    for value, leaf in zip(actual, leaves):
        assert_close_to(value.double(), leaf.grad, tol)


def test_bad_arguments_are_named():
    x, weight, _, mean, invstd, scale, shift = batch_norm_case(
        10, 4, torch.float32)
    with pytest.raises(
            RuntimeError, match='grad must be a contiguous CPU '
            'tensor like x'):
        ext.bn_act_backward(x.t(), x, scale, shift, mean, invstd, weight, None,
                            0, x.clone())
    with pytest.raises(
            RuntimeError,
            match='shift must be a contiguous CPU '
            'vector of 4 channels'):
        ext.act_affine(x, scale, shift.double(), 0, x.clone())
    with pytest.raises(
            RuntimeError,
            match='gate must be a contiguous CPU '
            r'\(groups, 4\) tensor of x.s dtype, the groups '
            'dividing its 10 rows'):
        ext.gated_backward(x.clone(), x, scale, shift, torch.ones(3, 4), 0,
                           x.clone())
    with pytest.raises(
            RuntimeError, match='the 10 rows are not images of '
            '3x3 pixels'):
        ext.bn_act_dwconv(x, scale, shift, torch.ones(3, 3, 4), 3, 3, 0,
                          x.clone())
    with pytest.raises(
            RuntimeError,
            match='taps must be a contiguous CPU '
            r'\(k, k, 4\) tensor of x.s dtype with an odd k'):
        ext.bn_act_dwconv(x, scale, shift, torch.ones(2, 2, 4), 5, 2, 0,
                          x.clone())
    with pytest.raises(
            RuntimeError,
            match=r'coef2 must be the \(3, 4\) '
            'coefficients that bn_act_backward returns'):
        ext.dwconv_bn_act_backward(x, x, scale, shift, None, scale, x, scale,
                                   shift, mean, torch.ones(3, 3, 4), 5, 2, 0,
                                   x.clone())
    with pytest.raises(RuntimeError, match='unknown activation code 7'):
        ext.act_affine(x, scale, shift, 7, x.clone())

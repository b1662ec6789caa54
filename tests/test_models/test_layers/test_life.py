"""LIFE (multi-scale q/k/v projection): shapes, a hand computation, the
exact parameter overhead, and LIFE in every backbone with a q/k/v
projection."""
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from bn_stats import randomize_bn
from conftest import REPO
from mmengine.config import Config

from localvit_mm.models import (LocalViT, LocalViTPVT, LocalViTSwin,
                                LocalViTT2T, LocalViTTNT, switch_to_deploy)
from localvit_mm.models.layers import (LIFE, Attention, LocalViTBlock,
                                       WindowAttention, build_qkv_proj,
                                       parse_qkv_proj, split_heads)
from localvit_mm.models.layers.life import split_channels

LIFE_ON = dict(qkv_proj='life')


def hand_life(life, x, hw_shape):
    """LIFE by hand from its weights: scale 1 with ``F.linear``, the
    depth-wise convs with ``F.conv2d`` on contiguous NCHW maps, the pointwise
    convs and the auxiliary tokens with ``einsum``; q, k, v assembled by
    slicing."""
    H, W = hw_shape
    B, N, _ = x.shape
    E = N - H * W

    def pointwise(sep, t):  # (B, n, C) tokens
        out = torch.einsum('oc,bnc->bno', sep.pointwise.weight[:, :, 0, 0], t)
        return out if sep.pointwise.bias is None else out + sep.pointwise.bias

    def separable(sep, t):
        image = t[:, E:].transpose(1, 2).reshape(B, -1, H, W).contiguous()
        k = sep.depthwise.kernel_size[0]
        image = F.conv2d(
            image,
            sep.depthwise.weight,
            sep.depthwise.bias,
            padding=k // 2,
            groups=image.shape[1])
        image = image.flatten(2).transpose(1, 2)
        return torch.cat([pointwise(sep, t[:, :E]), pointwise(sep, image)], 1)

    s1 = F.linear(x, life.scale1.weight, life.scale1.bias)
    s2 = separable(life.scale2, s1)
    s3 = separable(life.scale3, s2)
    chunks = []
    for j in range(life.num_chunks):
        for s in (s1, s2, s3):
            c = s.shape[-1] // life.num_chunks
            chunks.append(s[..., j * c:(j + 1) * c])
    return torch.cat(chunks, dim=-1)


def life_overhead(C, bias, conv_bias, num_chunks=3):
    """Parameters of LIFE minus those of the Linear it replaces, from the
    structure (3 | C): every scale has w = num_chunks * C / 3 channels;
    scale 1 is a C -> w Linear, scales 2 and 3 a 3x3 / 5x5 depth-wise conv
    on w channels and a w -> w pointwise conv."""
    w = num_chunks * C // 3
    scale1 = C * w + bias * w
    scale2 = 9 * w + w * w + conv_bias * 2 * w
    scale3 = 25 * w + w * w + conv_bias * 2 * w
    linear = C * num_chunks * C + bias * num_chunks * C
    return scale1 + scale2 + scale3 - linear


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize('extra', [0, 1, 2])
@pytest.mark.parametrize('num_chunks', [1, 2, 3])
def test_shapes_with_extra_tokens_on_non_square_lattices(extra, num_chunks):
    torch.manual_seed(0)
    for dims, hw in ((12, (3, 5)), (16, (4, 2))):  # 16: shares 6, 5, 5
        life = LIFE(dims, num_chunks)
        x = torch.randn(2, extra + hw[0] * hw[1], dims)
        out = life(x, hw)
        assert out.shape == (2, x.shape[1], num_chunks * dims)
        torch.testing.assert_close(out, hand_life(life, x, hw))
    assert split_channels(16) == [6, 5, 5] and split_channels(192) == [64] * 3
    assert life.scale2.depthwise.weight.shape == (num_chunks * 6, 1, 3, 3)
    assert life.scale3.pointwise.weight.shape == (num_chunks * 5,
                                                  num_chunks * 5, 1, 1)


@pytest.mark.parametrize('conv_bias', [False, True])
def test_against_hand_computation(conv_bias):
    """Image tokens through all scales, the class and distillation tokens
    through the pointwise parts only; each part sees only its own tokens."""
    torch.manual_seed(0)
    life = LIFE(12, conv_bias=conv_bias).double()
    for p in life.parameters():  # default conv biases are small
        nn.init.normal_(p)
    hw, E = (3, 4), 2
    x = torch.randn(2, E + 12, 12, dtype=torch.float64)
    out = life(x, hw)
    torch.testing.assert_close(out, hand_life(life, x, hw))

    # The auxiliary tokens alone, by hand: P3 (P2 (W1 x + b1) + b2) + b3.
    p2, p3 = life.scale2.pointwise, life.scale3.pointwise
    b2, b3 = (p2.bias, p3.bias) if conv_bias else (0, 0)
    s1 = torch.einsum('oc,bnc->bno', life.scale1.weight,
                      x[:, :E]) + life.scale1.bias
    s2 = torch.einsum('oc,bnc->bno', p2.weight[:, :, 0, 0], s1) + b2
    s3 = torch.einsum('oc,bnc->bno', p3.weight[:, :, 0, 0], s2) + b3
    q, k, v = (
        torch.cat([s[..., 4 * j:4 * j + 4] for s in (s1, s2, s3)], -1)
        for j in range(3))
    torch.testing.assert_close(out[:, :E], torch.cat([q, k, v], -1))

    moved = x.clone()
    moved[:, :E] += 1  # aux tokens changed: image outputs are not
    assert torch.equal(life(moved, hw)[:, E:], out[:, E:])
    moved = x.clone()
    moved[:, E:] += 1  # image tokens changed: aux outputs are not
    assert torch.equal(life(moved, hw)[:, :E], out[:, :E])


def test_parameter_overhead_is_the_formula():
    for C in (12, 192):
        for bias in (False, True):
            for conv_bias in (False, True):
                for m in (1, 2, 3):
                    life = build_qkv_proj(
                        dict(type='life', conv_bias=conv_bias), C, m, bias)
                    linear = build_qkv_proj('linear', C, m, bias)
                    assert count(life) - count(linear) == life_overhead(
                        C, bias, conv_bias, m)
    # q, k, v: 34C of depth-wise kernels, -2C of qkv biases, +4C conv biases
    assert life_overhead(192, True, False) == 32 * 192 == 6_144
    assert life_overhead(192, True, True) == 36 * 192 == 6_912
    assert life_overhead(192, False, False) == 34 * 192


def test_deit_tiny_parameters_match_the_paper():
    """DeiT-T with a 100-class head: 5.54M -> 5.62M (LIFE paper Table 1)."""
    head_100 = 192 * 100 + 100
    with torch.device('meta'):
        deit = LocalViT('deit-tiny')
        life = LocalViT('deit-tiny', attn_cfg=LIFE_ON)
        biased = LocalViT(
            'deit-tiny',
            attn_cfg=dict(qkv_proj=dict(type='life', conv_bias=True)))
    assert count(deit) + head_100 == 5_543_716
    assert count(life) - count(deit) == 12 * life_overhead(192, 1, 0) == 73_728
    assert count(life) + head_100 == 5_617_444
    assert round((count(deit) + head_100) / 1e6, 2) == 5.54
    assert round((count(life) + head_100) / 1e6, 2) == 5.62
    # Biased separable convs: +36C per block, 5,626,660 (5.63M).
    assert count(biased) - count(deit) == 12 * 36 * 192 == 82_944
    assert round((count(biased) + head_100) / 1e6, 2) == 5.63


def test_qkv_proj_option_is_checked():
    assert parse_qkv_proj('LIFE') == dict(type='life')
    with pytest.raises(
            ValueError,
            match=r"qkv_proj 'conv' is not one of \('linear', "
            r"'life'\)"):
        build_qkv_proj('conv', 12, 3, True)
    with pytest.raises(ValueError, match=r"takes no options, got \['x'\]"):
        build_qkv_proj(dict(type='linear', x=1), 12, 3, True)
    with pytest.raises(ValueError, match='pass its hw_shape'):
        LIFE(12)(torch.randn(1, 4, 12), None)
    with pytest.raises(ValueError, match='5 tokens do not fill a 2x3'):
        LIFE(12)(torch.randn(1, 5, 12), (2, 3))
    with pytest.raises(
            ValueError,
            match=r"unknown attn_cfg keys \['qkv_bias'\]; "
            r"allowed: \['qkv_proj'\]"):
        LocalViT('deit-tiny', attn_cfg=dict(qkv_bias=False))


def test_block_option_combines_with_the_ffn():
    """LIFE alone, the locality FFN alone, or both, from one block option."""
    life_only = LocalViTBlock(
        12, 2, attn_cfg=dict(type='Attention', **LIFE_ON), with_locality=False)
    ffn_only = LocalViTBlock(12, 2)
    both = LocalViTBlock(12, 2, attn_cfg=dict(type='Attention', **LIFE_ON))
    assert isinstance(life_only.attn.qkv, LIFE) and hasattr(life_only, 'mlp')
    assert isinstance(ffn_only.attn.qkv, nn.Linear) and hasattr(
        ffn_only, 'ffn')
    assert isinstance(both.attn.qkv, LIFE) and hasattr(both, 'ffn')
    x = torch.randn(2, 1 + 6, 12)
    assert both(x, (2, 3), 1).shape == x.shape


def test_window_attention_convolves_the_whole_lattice():
    """One window over the lattice: exactly global attention with the same
    LIFE. A padded window: the padded keys and values are zeros."""
    torch.manual_seed(0)
    window = WindowAttention(12, 2, window_size=3, qkv_proj='life')
    plain = Attention(12, 2, qkv_proj='life')
    plain.load_state_dict(window.state_dict(), strict=False)
    x = torch.randn(2, 9, 12)
    torch.testing.assert_close(window(x, (3, 3)), plain(x, (3, 3)))

    x = torch.randn(2, 6, 12)  # 3x2 lattice padded to 3x3
    q, k, v = split_heads(window.qkv(x, (3, 2)), 3, 2)
    k, v = (torch.cat([t, torch.zeros(2, 2, 3, 6)], 2) for t in (k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    expected = window.proj(out.transpose(1, 2).reshape(2, 6, 12))
    torch.testing.assert_close(window(x, (3, 2)), expected)


def lifes(model):
    return [m for m in model.modules() if isinstance(m, LIFE)]


def check_trains(model, x):
    """Forward and backward; every LIFE parameter gets a gradient."""
    outs = model(x)
    sum(o.square().mean() for o in outs).backward()
    grads = [p.grad for life in lifes(model) for p in life.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)
    return outs


def test_localvit_with_life_trains_and_deploys():
    torch.manual_seed(0)
    arch = dict(
        embed_dims=24,
        num_layers=2,
        num_heads=2,
        ffn_cfg=dict(channel_attention=dict(type='SE', reduction=4)))
    model = LocalViT(arch, img_size=(24, 40), patch_size=8, attn_cfg=LIFE_ON)
    model.init_weights()
    x = torch.randn(2, 3, 24, 40)  # a 3x5 lattice and a class token
    assert check_trains(model, x)[0].shape == (2, 24)
    assert len(lifes(model)) == 2 and all(
        hasattr(b, 'ffn') for b in model.blocks)
    # Deploy folds the FFN's BatchNorms and leaves LIFE as it is.
    model = randomize_bn(model).eval()
    life_state = {
        k: v.clone()
        for k, v in model.state_dict().items() if '.attn.qkv.' in k
    }
    with torch.no_grad():
        expected = model(x)[0]
        switch_to_deploy(model)
        torch.testing.assert_close(model(x)[0], expected)
    assert all(
        torch.equal(model.state_dict()[k], v) for k, v in life_state.items())
    direct = LocalViT(
        arch,
        img_size=(24, 40),
        patch_size=8,
        attn_cfg=LIFE_ON,
        ffn_cfg=dict(deploy=True)).eval()
    direct.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(direct(x)[0], model(x)[0])


def test_pvt_with_life_trains():
    """q on the stage lattice, kv on the reduced one; 16 and 32 channels
    split unevenly (6, 5, 5 / 11, 11, 10), the class token in stage 2.

    The outputs are feature maps: the depth-wise convs of a separate q only
    shape the image tokens' queries, which a class-token output of the last
    block never reads."""
    torch.manual_seed(0)
    model = LocalViTPVT(
        dict(
            embed_dims=[16, 32],
            num_layers=[1, 1],
            num_heads=[1, 2],
            mlp_ratios=[2, 2],
            sr_ratios=[2, 1]),
        patch_sizes=(4, 2),
        out_indices=(0, 1),
        with_cls_token=True,
        attn_cfg=LIFE_ON)
    attn = model.block1[0].attn
    assert (attn.q.num_chunks, attn.kv.num_chunks) == (1, 2)
    assert attn.kv.scale1.weight.shape == (12, 16)
    outs = check_trains(model, torch.randn(2, 3, 40, 56))
    assert [o.shape for o in outs] == [(2, 16, 10, 14), (2, 32, 5, 7)]


def test_swin_with_life_trains():
    torch.manual_seed(0)
    model = LocalViTSwin(
        dict(embed_dims=12, depths=[2, 2], num_heads=[2, 4]),
        window_size=3,
        out_indices=(0, 1),
        attn_cfg=LIFE_ON)
    assert len(lifes(model)) == 4
    outs = check_trains(model, torch.randn(2, 3, 28, 20))  # 7x5, 4x3
    assert [o.shape for o in outs] == [(2, 12, 7, 5), (2, 24, 4, 3)]


def test_tnt_with_life_trains():
    """One LIFE ``qkv`` in the inner (2x2 pixels, no extra token) and the
    outer (2x3 patches and the class token) attention of each layer."""
    torch.manual_seed(0)
    model = LocalViTTNT(
        dict(
            embed_dims=12,
            inner_dims=6,
            num_layers=1,
            num_heads=2,
            inner_num_heads=2),
        img_size=(16, 24),
        patch_size=8,
        out_type='featmap',
        attn_cfg=LIFE_ON)
    layer = model.blocks[0]
    for attn in (layer.inner.attn, layer.outer.attn):
        assert isinstance(attn.qkv, LIFE) and not hasattr(attn, 'qk')
    outs = check_trains(model, torch.randn(2, 3, 16, 24))
    assert outs[0].shape == (2, 12, 2, 3)


def test_t2t_with_life_trains():
    torch.manual_seed(0)
    model = LocalViTT2T(
        dict(embed_dims=32, num_layers=1, num_heads=2, token_dims=8),
        out_type='featmap',
        attn_cfg=LIFE_ON)
    assert len(lifes(model)) == 1  # the performers keep their kqv
    assert isinstance(model.tokens_to_token.attention1.attn.kqv, nn.Linear)
    outs = check_trains(model, torch.randn(2, 3, 32, 48))
    assert outs[0].shape == (2, 32, 2, 3)


@pytest.mark.parametrize('name,base', [
    ('localvit-tiny-life', 'localvit-tiny'),
    ('deit-tiny-life', 'deit-tiny'),
])
def test_life_configs_change_only_the_option(name, base):
    folder = osp.join(REPO, 'configs', 'localvit')
    cfg = Config.fromfile(osp.join(folder, f'{name}_8xb128_in1k.py'))
    ref = Config.fromfile(osp.join(folder, f'{base}_8xb128_in1k.py'))
    backbone = cfg.model.backbone.to_dict()
    assert backbone.pop('attn_cfg') == LIFE_ON
    assert backbone == ref.model.backbone.to_dict()
    cfg.model.pop('backbone')
    ref.model.pop('backbone')
    assert cfg.to_dict() == ref.to_dict()

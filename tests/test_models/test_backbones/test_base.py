"""The shared backbone base: arch lookup, FFN options, attention configs,
patch embedding and position-embedding loading."""
import pytest
import torch
import torch.nn as nn

from localvit_mm.models import LocalViT, LocalViTPVT
from localvit_mm.models.layers import (Attention, LocalViTBlock, PatchEmbed,
                                       SELayer, SpatialReductionAttention,
                                       build_attention, load_pos_embed,
                                       resize_pos_embed)


def test_unknown_arch_lists_the_valid_ones():
    with pytest.raises(ValueError) as info:
        LocalViT('tinny')
    message = str(info.value)
    assert "'tinny'" in message
    assert str(sorted(LocalViT.arch_zoo)) in message
    with pytest.raises(
            ValueError, match=r"custom arch misses \['num_heads'\]"):
        LocalViT(arch=dict(embed_dims=32, num_layers=2))


def test_unknown_ffn_keys_are_named():
    with pytest.raises(ValueError, match=r"unknown ffn_cfg keys \['act'\]"):
        LocalViTPVT('tiny', ffn_cfg=dict(act=dict(type='ReLU6')))


def test_pvt_takes_its_ffn_from_the_arch_and_ffn_cfg():
    """No activation or SE is hard-coded in LocalViTPVT: the arch row says
    h-swish + SE (reduction = stage dims), ffn_cfg overrides it, and a
    custom arch brings its own FFN options."""
    tiny = LocalViTPVT('tiny')
    ffn = tiny.block2[0].ffn
    assert isinstance(ffn.act1, nn.Hardswish)
    assert isinstance(ffn.channel_attention, SELayer)
    assert ffn.channel_attention.fc[0].out_features == 8  # 1024 // 128
    relu6 = LocalViTPVT(
        'tiny',
        ffn_cfg=dict(act_cfg=dict(type='ReLU6'), channel_attention=None))
    assert isinstance(relu6.block2[0].ffn.act1, nn.ReLU6)
    assert isinstance(relu6.block2[0].ffn.channel_attention, nn.Identity)
    custom = LocalViTPVT(
        arch=dict(
            embed_dims=[16, 32],
            num_layers=[1, 1],
            num_heads=[1, 2],
            mlp_ratios=[2, 2],
            sr_ratios=[2, 1],
            ffn_cfg=dict(channel_attention=dict(type='ECA'))),
        patch_sizes=(4, 2),
        out_indices=(0, 1))
    assert type(custom.block1[0].ffn.channel_attention).__name__ == 'ECALayer'
    plain = LocalViTPVT(
        arch=dict(
            embed_dims=[16, 32],
            num_layers=[1, 1],
            num_heads=[1, 2],
            mlp_ratios=[2, 2],
            sr_ratios=[2, 1],
            ffn_cfg=None),
        patch_sizes=(4, 2),
        out_indices=(0, 1),
        ffn_cfg=dict(kernel_size=5))
    assert not hasattr(plain.block1[0], 'ffn')
    with pytest.raises(ValueError, match='mlp_ratios'):
        LocalViTPVT('tiny', ffn_cfg=dict(mlp_ratio=2))


def test_block_builds_its_attention_from_the_config():
    block = LocalViTBlock(
        16,
        2,
        attn_cfg=dict(
            type='SpatialReductionAttention', sr_ratio=2, qkv_bias=False))
    assert isinstance(block.attn, SpatialReductionAttention)
    assert block.attn.q.bias is None and block.attn.sr.stride == (2, 2)
    assert isinstance(LocalViTBlock(16, 2).attn, Attention)
    assert LocalViTBlock(16, 2).attn.qkv.bias.shape == (3 * 16, )
    with pytest.raises(KeyError, match='NoSuchAttention'):
        build_attention(dict(type='NoSuchAttention'), 16, 2)
    with pytest.raises(ValueError, match='not divisible by num_heads 3'):
        build_attention(None, 16, 3)
    x = torch.randn(2, 12, 16)
    assert block(x, (3, 4), 0).shape == x.shape


def test_patch_embed_pads_and_normalizes():
    embed = PatchEmbed(3, 8, 4, norm_eps=1e-5, pad=True)
    tokens, hw = embed(torch.randn(2, 3, 13, 9))
    assert hw == (4, 3) and tokens.shape == (2, 12, 8)
    assert embed.norm.eps == 1e-5
    # Padding is zeros at the bottom and right: the same as padding by hand.
    x = torch.randn(1, 3, 13, 9)
    padded = torch.nn.functional.pad(x, (0, 3, 0, 3))
    torch.testing.assert_close(embed(x)[0], embed(padded)[0])
    plain = PatchEmbed(3, 8, 4)
    assert plain.norm is None and plain(torch.randn(1, 3, 16, 8))[1] == (4, 2)


def test_load_pos_embed_resizes_and_drops_the_class_entry():
    pos = torch.randn(1, 1 + 16, 4)
    state = {'pos_embed': pos.clone()}
    load_pos_embed(state, 'pos_embed', (2, 3), 0)  # model without cls
    torch.testing.assert_close(state['pos_embed'],
                               resize_pos_embed(pos, (4, 4), (2, 3))[:, 1:])
    state = {'pos_embed': pos.clone()}
    load_pos_embed(state, 'pos_embed', (4, 4), 1)
    assert torch.equal(state['pos_embed'], pos)
    state = {'pos_embed': torch.randn(1, 16, 4)}  # no cls entry, model has
    load_pos_embed(state, 'pos_embed', (4, 4), 1)
    assert state['pos_embed'].shape == (1, 16, 4)  # load_state_dict reports
    with pytest.raises(ValueError, match='not a square lattice'):
        load_pos_embed({'pos_embed': torch.randn(1, 1 + 12, 4)},
                       'pos_embed', (4, 4),
                       1,
                       ckpt_extra_tokens=1)


def test_attention_qk_scale():
    """``qk_scale`` replaces head_dims ** -0.5 (T2T-ViT-7's 256 ** -0.5)."""
    torch.manual_seed(0)
    attn = build_attention(dict(type='Attention', qk_scale=256**-0.5), 16, 2)
    x = torch.randn(2, 5, 16)
    q, k, v = attn.qkv(x).reshape(2, 5, 3, 2, 8).permute(2, 0, 3, 1, 4)
    weights = (q @ k.transpose(-2, -1) / 16).softmax(-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), expected)
    default = build_attention(None, 16, 2)
    default.load_state_dict(attn.state_dict())
    assert not torch.allclose(default(x), expected)


def test_se_reduction_in_terms_of_the_block_channels():
    from localvit_mm.models.layers import LocalityFeedForward

    def squeeze(reduction, dims=96):
        ffn = LocalityFeedForward(
            dims, channel_attention=dict(type='SE', reduction=reduction))
        return ffn.channel_attention.fc[0].out_features

    assert squeeze('embed_dims//4') == 16  # LocalViT-Swin: 384 // 24
    assert squeeze('embed_dims', dims=64) == 4  # LocalViT-PVT / TNT
    assert squeeze(192) == 2
    with pytest.raises(ValueError, match="'embed_dims//k'"):
        squeeze('dims//4')

"""LocalViT-T2T: official sizes, the performer, position encoding, any input
size, deploy, freezing."""
import math

import numpy as np
import pytest
import torch

from localvit_mm.models import LocalViTT2T, switch_to_deploy
from localvit_mm.models.backbones import localvit_t2t
from localvit_mm.models.backbones.localvit_t2t import sinusoid_encoding
from localvit_mm.models.layers import PerformerAttention

# A narrow arch for fast checks: 2 blocks of 32 dims, token layers of 16
# channels, SE keeping 4 channels in the blocks.
SMALL = dict(
    embed_dims=32,
    num_layers=2,
    num_heads=2,
    mlp_ratio=2,
    token_dims=16,
    ffn_cfg=dict(channel_attention=dict(type='SE', reduction=16)))


def small(seed=0, **kwargs):
    """A narrow LocalViT-T2T with random BN affine weights and statistics."""
    torch.manual_seed(seed)
    model = LocalViTT2T(**dict(dict(arch=SMALL), **kwargs))
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model


def classifier(arch):
    """mmpretrain's ImageClassifier with a 1000-class head, on 'meta'."""
    from mmpretrain.registry import MODELS
    with torch.device('meta'):
        return MODELS.build(
            dict(
                type='ImageClassifier',
                backbone=dict(type='LocalViTT2T', arch=arch),
                neck=None,
                head=dict(
                    type='LinearClsHead', num_classes=1000, in_channels=256)))


@pytest.mark.parametrize('arch,expected', [('7', 4_330_602),
                                           ('t2t-vit-7', 4_255_694)])
def test_parameter_counts(arch, expected):
    model = classifier(arch)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    # Everything trainable: the position encoding is computed, the random
    # features are buffers (2 layers x 32 x 64).
    assert sum(p.numel() for p in model.parameters()) == expected
    features = [
        b for n, b in model.named_buffers() if n.endswith('random_features')
    ]
    assert [tuple(b.shape) for b in features] == [(32, 64), (32, 64)]


def test_official_count_minus_unused_norms():
    """The official localvit_T2t_conv7 counts 4,330,858 trainable
    parameters, two LayerNorm(64) its token layers never call included."""
    unused = 2 * (64 + 64)
    assert sum(p.numel() for p in classifier('7').parameters()) + unused \
        == 4_330_858


def test_arch_rows():
    model = LocalViTT2T('7')
    t2t = model.tokens_to_token
    for layer, in_dims in ((t2t.attention1, 147), (t2t.attention2, 576)):
        assert layer.norm1.normalized_shape == (in_dims, )
        assert layer.attn.kqv.in_features == in_dims
        assert layer.attn.kqv.out_features == 3 * 64
        assert layer.ffn.fc1.out_features == 64  # gamma 1
        assert isinstance(layer.ffn.act1, torch.nn.Hardswish)
        assert isinstance(layer.ffn.channel_attention, torch.nn.Identity)
        assert not hasattr(layer, 'norm2')
    assert t2t.project.in_features == 576 and t2t.project.out_features == 256
    block = model.blocks[0]
    assert len(model.blocks) == 7
    assert block.attn.num_heads == 4 and block.attn.qkv.bias is None
    assert block.ffn.fc1.out_features == 512
    assert block.ffn.channel_attention.fc[0].out_features == 4
    assert isinstance(block.ffn.act1, torch.nn.Hardswish)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 2 + 7 + 1
    assert {m.eps for m in norms} == {1e-5}

    baseline = LocalViTT2T('t2t-vit-7')
    layer = baseline.tokens_to_token.attention1
    assert not hasattr(layer, 'ffn') and layer.mlp.fc1.out_features == 64
    assert layer.attn.proj_drop.p == 0.1 and layer.mlp_drop.p == 0.1
    assert not hasattr(baseline.blocks[0], 'ffn')
    assert baseline.blocks[0].mlp.fc1.out_features == 512
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in baseline.modules())


def test_random_features_are_fixed_orthogonal_rows():
    attn = PerformerAttention(6, 8, kernel_ratio=0.5)
    w = attn.random_features
    assert 'random_features' in attn.state_dict()
    assert not any(p is w for p in attn.parameters())
    torch.testing.assert_close(w @ w.t(), 4 * torch.eye(4))  # m = 4
    model = small()
    features = model.tokens_to_token.attention1.attn.random_features
    before = features.clone()
    model.train()
    model(torch.randn(2, 3, 32, 32))[0].sum().backward()
    assert not features.requires_grad and features.grad is None
    torch.testing.assert_close(features, before, rtol=0, atol=0)


def test_performer_against_hand_computation():
    """Positive random features, token by token, in float64."""
    torch.manual_seed(0)
    attn = PerformerAttention(5, 4, kernel_ratio=0.5).eval()
    x = torch.randn(2, 3, 5)
    with torch.no_grad():
        out = attn(x).double()
        kqv = attn.kqv(x).double()
    w = attn.random_features.double()
    m = w.shape[0]
    expected = torch.empty_like(out)
    for b in range(2):
        k, q, v = kqv[b, :, :4], kqv[b, :, 4:8], kqv[b, :, 8:]

        def phi(t):
            features = [
                math.exp(float(w[i] @ t - t @ t / 2)) / math.sqrt(m)
                for i in range(m)
            ]
            return torch.tensor(features, dtype=torch.float64)

        for t in range(3):
            weights = [float(phi(q[t]) @ phi(k[s])) for s in range(3)]
            y = sum(a * v[s] for s, a in enumerate(weights)) / (
                sum(weights) + 1e-8)
            expected[b, t] = v[t] + attn.proj.weight.double() @ y + \
                attn.proj.bias.double()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


def official_sinusoid(n_position, d_hid):
    """T2T-ViT's get_sinusoid_encoding, written out with numpy."""
    table = np.array(
        [[pos / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]
         for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


def test_sinusoid_encoding_is_the_official_table():
    torch.testing.assert_close(
        sinusoid_encoding(197, 256),
        official_sinusoid(197, 256),
        rtol=0,
        atol=1e-6)


@pytest.mark.parametrize('shape,lattice', [((32, 32), (2, 2)),
                                           ((70, 45), (5, 3))])
def test_position_encoding_follows_the_input(monkeypatch, shape, lattice):
    lengths = []

    def recording(num_positions, embed_dims, device=None):
        lengths.append((num_positions, embed_dims))
        return sinusoid_encoding(num_positions, embed_dims, device)

    monkeypatch.setattr(localvit_t2t, 'sinusoid_encoding', recording)
    model = small(out_type='featmap').eval()
    with torch.no_grad():
        out, = model(torch.randn(1, 3, *shape))
    assert out.shape == (1, 32, *lattice)
    assert lengths == [(lattice[0] * lattice[1] + 1, 32)]


@pytest.mark.parametrize(
    'shape,lattice',
    [
        ((64, 64), (4, 4)),
        ((70, 45), (5, 3)),  # non-square; 70 and 45 leave remainders
    ])
def test_forward_backward_any_size(shape, lattice):
    model = small(out_type='raw', out_indices=(0, 1))
    model.train()
    x = torch.randn(2, 3, *shape)
    outs = model(x)
    h, w = lattice
    assert [o.shape for o in outs] == [(2, 1 + h * w, 32)] * 2
    outs[-1].square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_out_types():
    model = small(out_indices=-1).eval()
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        raw = small(out_type='raw').eval()(x)[0]
        for out_type, expected in [
            ('cls_token', raw[:, 0]),
            ('featmap', raw[:, 1:].transpose(1, 2).reshape(1, 32, 3, 4)),
            ('avg_featmap', raw[:, 1:].mean(1)),
        ]:
            model.out_type = out_type
            torch.testing.assert_close(model(x)[0], expected)
    with pytest.raises(ValueError, match='out_type'):
        LocalViTT2T(SMALL, out_type='bogus')
    with pytest.raises(ValueError, match='out_indices'):
        LocalViTT2T(SMALL, out_indices=2)
    with pytest.raises(ValueError, match='not one of'):
        LocalViTT2T('14')


def test_full_size_forward():
    model = LocalViTT2T('7', out_type='raw').eval()
    with torch.no_grad():
        out, = model(torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 1 + 14 * 14, 256)
    assert torch.isfinite(out).all()


def test_switch_to_deploy_equals_eval():
    model = small().eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        expected = model(x)[0]
        switch_to_deploy(model)
        deployed = model(x)[0]
    ffns = [
        m for m in model.modules() if type(m).__name__ == 'LocalityFeedForward'
    ]
    assert len(ffns) == 4 and all(m.deploy for m in ffns)
    assert not any(
        isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    error = (deployed - expected).abs().max() / expected.abs().max()
    assert error < 1e-5
    # ffn_cfg=dict(deploy=True) builds that form, token layers included.
    built = LocalViTT2T(SMALL, ffn_cfg=dict(deploy=True)).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(built(x)[0], deployed)


def bn_statistics(module):
    return [
        m.running_mean.clone() for m in module.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]


def test_frozen_stages():
    model = small(frozen_stages=1)
    model.train()
    frozen = [model.tokens_to_token, model.blocks[0]]
    assert not model.cls_token.requires_grad
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert model.norm.weight.requires_grad
    assert not model.tokens_to_token.training and model.blocks[1].training
    before = [bn_statistics(m) for m in (*frozen, model.blocks[1])]
    model(torch.randn(2, 3, 32, 32))
    after = [bn_statistics(m) for m in (*frozen, model.blocks[1])]
    for old, new in zip(before[:2], after[:2]):
        for a, b in zip(old, new):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(before[2][0], after[2][0])
    everything = small(frozen_stages=2)
    assert not everything.norm.weight.requires_grad


def test_norm_eval():
    model = small(norm_eval=True)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert model.blocks[0].norm1.training
    before = bn_statistics(model)
    model(torch.randn(2, 3, 32, 32))
    for a, b in zip(before, bn_statistics(model)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_with_cp_gives_the_same_gradients():
    x = torch.randn(2, 3, 32, 32)
    grads = []
    for with_cp in (False, True):
        model = small(with_cp=with_cp)
        model.train()
        model(x)[0].square().sum().backward()
        grads.append({n: p.grad for n, p in model.named_parameters()})
    assert grads[0].keys() == grads[1].keys()
    for name, grad in grads[0].items():
        torch.testing.assert_close(grads[1][name], grad, msg=name)

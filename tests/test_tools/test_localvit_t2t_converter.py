"""Converting official LocalViT-T2T / T2T-ViT weights (``tokens_to_token``).

No LocalViT-T2T checkpoint was released, so the official layout is built
here from a random model, and an independent forward pass over that layout
(the official computation, written out with functional ops) is the
reference the converted model must reproduce.
"""
import importlib.util
import math
import os.path as osp

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from localvit_mm.models import LocalViTT2T
from localvit_mm.utils import UserInputError

SCRIPT = 'tools/model_converters/localvit_to_mmpretrain.py'
CONFIGS = osp.join(REPO, 'configs', 'localvit_t2t')
# The official FFN Sequential: conv, BN, act, dw conv, BN, act, [SE], conv, BN
WITH_SE = dict(
    fc1=0, norm1=1, dw_conv=3, norm2=4, channel_attention=6, fc2=7, norm3=8)
NO_SE = dict(fc1=0, norm1=1, dw_conv=3, norm2=4, fc2=6, norm3=7)
TOKEN_NAMES = {
    'attn.kqv': 'kqv',
    'attn.proj': 'proj',
    'attn.random_features': 'w',
    'mlp.fc1': 'mlp.0',
    'mlp.fc2': 'mlp.2'
}
SMALL = dict(
    embed_dims=32,
    num_layers=2,
    num_heads=2,
    mlp_ratio=2,
    token_dims=16,
    ffn_cfg=dict(channel_attention=dict(type='SE', reduction=16)))


def load_converter():
    spec = importlib.util.spec_from_file_location('localvit_converter',
                                                  osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_model(arch=SMALL, seed=0):
    """A LocalViT-T2T with random weights and BN statistics, and a head."""
    torch.manual_seed(seed)
    model = LocalViTT2T(arch)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.nn.Linear(model.embed_dims, 10)


def official_sinusoid(n_position, d_hid):
    """T2T-ViT's get_sinusoid_encoding, written out with numpy."""
    table = np.array(
        [[pos / np.power(10000, 2 * (j // 2) / d_hid) for j in range(d_hid)]
         for pos in range(n_position)])
    table[:, 0::2] = np.sin(table[:, 0::2])
    table[:, 1::2] = np.cos(table[:, 1::2])
    return torch.FloatTensor(table).unsqueeze(0)


def official_layout(model, head, img_size=224):
    """Our weights under the official names, plus what the official model
    also saves: the token layers' unused ``norm2`` and ``pos_embed``."""
    weights = {}
    for key, value in model.state_dict().items():
        if '.ffn.' in key:
            layer, rest = key.split('.ffn.')
            part, leaf = rest.split('.', 1)
            if part in ('fc1', 'fc2'):
                value = value[:, :, None, None]
            index = (WITH_SE if key.startswith('blocks.') else NO_SE)[part]
            key = f'{layer}.conv.conv.{index}.{leaf}'
            if key.startswith('tokens_to_token.') and part == 'fc1':
                dims = value.shape[0]
                weights[f'{layer}.norm2.weight'] = torch.ones(dims)
                weights[f'{layer}.norm2.bias'] = torch.zeros(dims)
        elif key.startswith('tokens_to_token.attention'):
            layer, rest = key[:len('tokens_to_token.attention1')], \
                key[len('tokens_to_token.attention1.'):]
            for ours, theirs in TOKEN_NAMES.items():
                if rest.startswith(ours):
                    rest = theirs + rest[len(ours):]
            key = f'{layer}.{rest}'
        weights[key] = value
    side = img_size // 16
    weights['pos_embed'] = official_sinusoid(side * side + 1, model.embed_dims)
    weights['head.weight'] = head.weight.detach()
    weights['head.bias'] = head.bias.detach()
    return weights


def reference_forward(w, images, num_heads):
    """The official LocalViT-T2T / T2T-ViT forward over official weights
    (eval mode, square images, LayerNorm eps 1e-5)."""

    def ln(x, name):
        return F.layer_norm(x, x.shape[-1:], w[f'{name}.weight'],
                            w[f'{name}.bias'], 1e-5)

    def bn(x, name):
        return F.batch_norm(x, w[f'{name}.running_mean'],
                            w[f'{name}.running_var'], w[f'{name}.weight'],
                            w[f'{name}.bias'], False, 0., 1e-5)

    def conv_ffn(lattice, name):  # x + conv(x), the Sequential by index
        p = f'{name}.conv.conv.'
        y = F.hardswish(bn(F.conv2d(lattice, w[p + '0.weight']), p + '1'))
        dw = w[p + '3.weight']
        y = F.conv2d(y, dw, padding=1, groups=dw.shape[0])
        y = F.hardswish(bn(y, p + '4'))
        last = 6
        if p + '6.fc.0.weight' in w:
            s = F.relu(
                F.linear(
                    y.mean((2, 3)), w[p + '6.fc.0.weight'],
                    w[p + '6.fc.0.bias']))
            s = F.relu6(
                F.linear(s, w[p + '6.fc.2.weight'], w[p + '6.fc.2.bias']) +
                3) / 6
            y, last = y * s[:, :, None, None], 7
        y = bn(F.conv2d(y, w[f'{p}{last}.weight']), f'{p}{last + 1}')
        return lattice + y

    def to_lattice(x):
        B, N, C = x.shape
        side = int(math.sqrt(N))
        return x.transpose(1, 2).reshape(B, C, side, side)

    def token_layer(x, name):
        x = ln(x, f'{name}.norm1')
        emb = w[f'{name}.proj.weight'].shape[0]
        k, q, v = torch.split(
            F.linear(x, w[f'{name}.kqv.weight'], w[f'{name}.kqv.bias']),
            emb,
            dim=-1)
        rf = w[f'{name}.w']
        m = rf.shape[0]

        def prm_exp(t):
            xd = (t * t).sum(-1, keepdim=True) / 2
            return torch.exp(torch.einsum('bti,mi->btm', t, rf) - xd) / \
                math.sqrt(m)

        kp, qp = prm_exp(k), prm_exp(q)
        D = torch.einsum('bti,bi->bt', qp, kp.sum(1)).unsqueeze(2)
        kptv = torch.einsum('bin,bim->bnm', v, kp)
        y = torch.einsum('bti,bni->btn', qp, kptv) / (D + 1e-8)
        x = v + F.linear(y, w[f'{name}.proj.weight'], w[f'{name}.proj.bias'])
        if f'{name}.conv.conv.0.weight' in w:
            return conv_ffn(to_lattice(x), name).flatten(2).transpose(1, 2)
        h = F.gelu(
            F.linear(
                ln(x, f'{name}.norm2'), w[f'{name}.mlp.0.weight'],
                w[f'{name}.mlp.0.bias']))
        return x + F.linear(h, w[f'{name}.mlp.2.weight'],
                            w[f'{name}.mlp.2.bias'])

    x = F.unfold(images, 7, stride=4, padding=2).transpose(1, 2)
    x = token_layer(x, 'tokens_to_token.attention1')
    x = F.unfold(to_lattice(x), 3, stride=2, padding=1).transpose(1, 2)
    x = token_layer(x, 'tokens_to_token.attention2')
    x = F.unfold(to_lattice(x), 3, stride=2, padding=1).transpose(1, 2)
    x = F.linear(x, w['tokens_to_token.project.weight'],
                 w['tokens_to_token.project.bias'])
    B, N, C = x.shape
    x = torch.cat([w['cls_token'].expand(B, -1, -1), x], dim=1)
    x = x + official_sinusoid(N + 1, C)
    depth = len({k.split('.')[1] for k in w if k.startswith('blocks.')})
    for i in range(depth):
        p = f'blocks.{i}.'
        qkv = F.linear(ln(x, p + 'norm1'), w[p + 'attn.qkv.weight'])
        q, k, v = qkv.reshape(B, N + 1, 3, num_heads,
                              -1).permute(2, 0, 3, 1, 4)
        attn = (q @ k.transpose(-2, -1) * q.shape[-1]**-0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N + 1, C)
        x = x + F.linear(y, w[p + 'attn.proj.weight'], w[p + 'attn.proj.bias'])
        if p + 'conv.conv.0.weight' in w:
            cls, tokens = x.split([1, N], dim=1)
            tokens = conv_ffn(to_lattice(tokens), p[:-1])
            x = torch.cat([cls, tokens.flatten(2).transpose(1, 2)], dim=1)
        else:
            h = F.gelu(
                F.linear(
                    ln(x, p + 'norm2'), w[p + 'mlp.fc1.weight'],
                    w[p + 'mlp.fc1.bias']))
            x = x + F.linear(h, w[p + 'mlp.fc2.weight'], w[p + 'mlp.fc2.bias'])
    x = ln(x, 'norm')[:, 0]
    return F.linear(x, w['head.weight'], w['head.bias'])


@pytest.mark.parametrize('locality', [True, False])
def test_converted_model_reproduces_the_official_forward(locality):
    converter = load_converter()
    arch = SMALL if locality else dict(SMALL, ffn_cfg=None, token_ffn_cfg=None)
    model, head = random_model(arch)
    weights = official_layout(model, head, img_size=64)
    family, converted, found = converter.convert(weights)
    assert (family, found) == ('LocalViTT2T', None)  # a custom arch
    assert 'backbone.pos_embed' not in converted
    # The official LocalViT token layers' norm2 is never used: dropped.
    unused = 'backbone.tokens_to_token.attention1.norm2.weight'
    assert (unused in converted) == (not locality)
    fresh = LocalViTT2T(arch).eval()
    fresh.load_state_dict(
        {
            k[len('backbone.'):]: v
            for k, v in converted.items() if k.startswith('backbone.')
        },
        strict=True)
    torch.testing.assert_close(converted['head.fc.weight'], head.weight)
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference_forward(weights, images, num_heads=2)
        ours = head(fresh(images)[0])
    torch.testing.assert_close(ours, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize('arch', ['7', 't2t-vit-7'])
def test_official_sizes_and_arch_detection(arch):
    converter = load_converter()
    model, head = random_model(arch)
    weights = official_layout(model, head)
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert shapes['pos_embed'] == (1, 197, 256)
    assert shapes['tokens_to_token.attention1.kqv.weight'] == (192, 147)
    assert shapes['tokens_to_token.attention1.w'] == (32, 64)
    assert shapes['tokens_to_token.attention2.kqv.weight'] == (192, 576)
    assert shapes['tokens_to_token.project.weight'] == (256, 576)
    assert shapes['blocks.6.attn.qkv.weight'] == (768, 256)
    assert 'blocks.0.attn.qkv.bias' not in shapes
    if arch == '7':
        assert shapes['tokens_to_token.attention1.conv.conv.0.weight'] == \
            (64, 64, 1, 1)
        assert shapes['tokens_to_token.attention2.conv.conv.7.weight'] == \
            (64, )
        assert shapes['blocks.0.conv.conv.6.fc.0.weight'] == (4, 512)
        assert shapes['blocks.0.conv.conv.7.weight'] == (256, 512, 1, 1)
    family, converted, found = converter.convert(weights)
    assert (family, found) == ('LocalViTT2T', arch)


def test_refusals(tmp_path):
    converter = load_converter()
    model, head = random_model(SMALL)
    weights = official_layout(model, head, img_size=64)
    bad = dict(weights, pos_embed=torch.zeros_like(weights['pos_embed']))
    with pytest.raises(ValueError, match='sinusoid'):
        converter.convert(bad)
    bad = dict(weights, **{'blocks.0.attn.q.weight': torch.zeros(2, 2)})
    with pytest.raises(ValueError, match='attn.q.weight'):
        converter.convert(bad)

    # A LocalViT-T2T release file against the T2T-ViT-7 config.
    model, head = random_model('7')
    src, dst = tmp_path / 'localvit_t2t.pth', tmp_path / 'out.pth'
    head = torch.nn.Linear(256, 1000)
    torch.save(dict(model=official_layout(model, head)), src)
    baseline = osp.join(CONFIGS, 't2t-vit-7_8xb128_in1k.py')
    with pytest.raises(UserInputError, match='missing|unexpected'):
        converter.main([str(src), str(dst), '--config', baseline])
    assert not dst.exists()
    converter.main([
        str(src),
        str(dst), '--config',
        osp.join(CONFIGS, 'localvit-t2t-vit-7_8xb128_in1k.py')
    ])
    saved = torch.load(dst, weights_only=True)
    assert saved['meta']['family'] == 'LocalViTT2T'
    assert saved['meta']['arch'] == '7'

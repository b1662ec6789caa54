"""Converting official LocalViT-TNT / TNT weights to :class:`LocalViTTNT`.

The official forward is written out below on the official key names (conv
over the whole image, unfold into 4x4 pixel patches, the in-place pixel
update of the patch tokens, attention with an explicit softmax, the
``conv.conv`` Sequential in eval mode), so the converted model is checked
against the official computation, not against itself.
"""
import argparse
import importlib.util
import os.path as osp
import re

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, run_tool

from localvit_mm.models import LocalViTTNT
from localvit_mm.utils import UserInputError

SCRIPT = 'tools/model_converters/localvit_to_mmpretrain.py'
CONFIGS = osp.join(REPO, 'configs', 'localvit_tnt')
# The official FFN: conv, BN, act, dw conv, BN, act, SE, conv, BN
OFFICIAL_INDEX = dict(
    fc1=0, norm1=1, dw_conv=3, norm2=4, channel_attention=6, fc2=7, norm3=8)
# Our module in a layer -> the official one.
OFFICIAL_LAYER = {
    'inner.norm1': 'norm_in',
    'inner.attn': 'attn_in',
    'inner.norm2': 'norm_mlp_in',
    'inner.mlp': 'mlp_in',
    'norm_proj': 'norm1_proj',
    'proj': 'proj',
    'outer.norm1': 'norm_out',
    'outer.attn': 'attn_out',
    'outer.norm2': 'norm_mlp',
    'outer.mlp': 'mlp'
}
SMALL = dict(
    embed_dims=32, inner_dims=8, num_layers=2, num_heads=2, inner_num_heads=2)


def load_converter():
    spec = importlib.util.spec_from_file_location('localvit_converter',
                                                  osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_classifier(arch='tiny', img_size=224, seed=0):
    """A LocalViT-TNT with random weights and BN statistics, and a head."""
    torch.manual_seed(seed)
    model = LocalViTTNT(arch, img_size=img_size)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    for name, p in model.named_parameters():
        if 'pos' in name or 'cls' in name or name.endswith('.bias'):
            p.data.normal_(0, 0.1)  # nonzero, so a misplaced one shows
    head = torch.nn.Linear(model.embed_dims, 1000)
    return model.eval(), head


def official_layout(model, head):
    """Our weights under the official release's names."""
    weights = {}
    for key, value in model.state_dict().items():
        if key.startswith('blocks.'):
            _, index, rest = key.split('.', 2)
            if rest.startswith('outer.ffn.'):
                part, leaf = rest[len('outer.ffn.'):].split('.', 1)
                if part in ('fc1', 'fc2'):
                    value = value[:, :, None, None]
                rest = f'conv.conv.{OFFICIAL_INDEX[part]}.{leaf}'
            else:
                module = next(
                    m for m in OFFICIAL_LAYER if rest.startswith(m + '.'))
                rest = OFFICIAL_LAYER[module] + rest[len(module):]
            key = f'blocks.{index}.{rest}'
        weights[key] = value
    weights['head.weight'] = head.weight.detach()
    weights['head.bias'] = head.bias.detach()
    return weights


def _ln(w, name, x):
    return F.layer_norm(
        x, x.shape[-1:], w[name + '.weight'], w[name + '.bias'], eps=1e-5)


def _linear(w, name, x):
    return F.linear(x, w[name + '.weight'], w.get(name + '.bias'))


def _bn(w, name, x):
    return F.batch_norm(x, w[name + '.running_mean'], w[name + '.running_var'],
                        w[name + '.weight'], w[name + '.bias'], False, 0.,
                        1e-5)


def _attention(w, name, x, heads):
    B, N, C = x.shape
    qk = _linear(w, name + '.qk', x).reshape(B, N, 2, heads, C // heads)
    q, k = qk.permute(2, 0, 3, 1, 4)
    v = _linear(w, name + '.v', x).reshape(B, N, heads, -1).transpose(1, 2)
    attn = ((q @ k.transpose(-2, -1)) * (C // heads)**-0.5).softmax(-1)
    return _linear(w, name + '.proj', (attn @ v).transpose(1,
                                                           2).reshape(B, N, C))


def _mlp(w, name, x):
    return _linear(w, name + '.fc2', F.gelu(_linear(w, name + '.fc1', x)))


def _conv_ffn(w, name, x):
    """The official ``conv.conv`` Sequential (h-swish, SE), eval mode."""
    x = F.hardswish(_bn(w, name + '1', F.conv2d(x, w[name + '0.weight'])))
    x = F.conv2d(x, w[name + '3.weight'], padding=1, groups=x.shape[1])
    x = F.hardswish(_bn(w, name + '4', x))
    s = F.relu(_linear(w, name + '6.fc.0', x.mean((2, 3))))
    gate = F.relu6(_linear(w, name + '6.fc.2', s) + 3) / 6  # h-sigmoid
    x = x * gate[:, :, None, None]
    return _bn(w, name + '8', F.conv2d(x, w[name + '7.weight']))


def official_forward(w, x, heads, inner_heads):
    """The official TNT / LocalViT-TNT classifier on square inputs."""
    B = x.shape[0]
    c, k = w['pixel_pos'].shape[1:3]
    pixel = F.conv2d(
        x,
        w['pixel_embed.proj.weight'],
        w['pixel_embed.proj.bias'],
        stride=4,
        padding=3)
    pixel = F.unfold(pixel, k, stride=k)
    N = pixel.shape[-1]
    pixel = pixel.transpose(1, 2).reshape(B * N, c, k, k) + w['pixel_pos']
    pixel = pixel.reshape(B * N, c, -1).transpose(1, 2)
    patch = _ln(
        w, 'norm2_proj',
        _linear(w, 'proj', _ln(w, 'norm1_proj', pixel.reshape(B, N, -1))))
    patch = torch.cat([w['cls_token'].expand(B, -1, -1), patch], 1)
    patch = patch + w['patch_pos']
    side, depth = int(N**0.5), 1 + max(
        int(key.split('.')[1]) for key in w if key.startswith('blocks.'))
    for i in range(depth):
        p = f'blocks.{i}.'
        pixel = pixel + _attention(w, p + 'attn_in',
                                   _ln(w, p + 'norm_in', pixel), inner_heads)
        pixel = pixel + _mlp(w, p + 'mlp_in', _ln(w, p + 'norm_mlp_in', pixel))
        patch = patch.clone()
        patch[:, 1:] = patch[:, 1:] + _linear(
            w, p + 'proj',
            _ln(w, p + 'norm1_proj', pixel).reshape(B, N, -1))
        patch = patch + _attention(w, p + 'attn_out',
                                   _ln(w, p + 'norm_out', patch), heads)
        if p + 'conv.conv.0.weight' in w:
            cls, img = patch.split([1, N], dim=1)
            img = img.transpose(1, 2).reshape(B, -1, side, side)
            img = img + _conv_ffn(w, p + 'conv.conv.', img)
            patch = torch.cat([cls, img.flatten(2).transpose(1, 2)], 1)
        else:
            patch = patch + _mlp(w, p + 'mlp', _ln(w, p + 'norm_mlp', patch))
    return _linear(w, 'head', _ln(w, 'norm', patch)[:, 0])


def test_official_layout_matches_the_release():
    weights = official_layout(*random_classifier())
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert len(weights) == 15 + 12 * 44  # top level + 12 layers
    assert shapes['pixel_embed.proj.weight'] == (12, 3, 7, 7)
    assert shapes['pixel_pos'] == (1, 12, 4, 4)
    assert shapes['patch_pos'] == (1, 197, 192)
    assert shapes['norm1_proj.weight'] == (192, )
    assert shapes['blocks.0.attn_in.qk.weight'] == (24, 12)
    assert shapes['blocks.0.attn_in.v.weight'] == (12, 12)
    assert 'blocks.0.attn_in.qk.bias' not in shapes
    assert shapes['blocks.0.mlp_in.fc1.weight'] == (48, 12)
    assert shapes['blocks.0.norm1_proj.weight'] == (12, )
    assert shapes['blocks.0.proj.weight'] == (192, 192)
    assert shapes['blocks.0.attn_out.qk.weight'] == (384, 192)
    assert shapes['blocks.11.conv.conv.0.weight'] == (768, 192, 1, 1)
    assert shapes['blocks.11.conv.conv.3.weight'] == (768, 1, 3, 3)
    assert shapes['blocks.11.conv.conv.6.fc.0.weight'] == (4, 768)
    assert shapes['blocks.11.conv.conv.7.weight'] == (192, 768, 1, 1)
    assert 'blocks.0.norm_mlp.weight' not in shapes


@pytest.mark.parametrize('arch', ['tiny', 'tnt-tiny', 'small', 'tnt-small'])
def test_convert_round_trip_and_arch(arch):
    converter = load_converter()
    with torch.device('meta'):
        model = LocalViTTNT(arch)
    head = torch.nn.Linear(model.embed_dims, 1000, device='meta')
    family, converted, found = converter.convert(official_layout(model, head))
    assert (family, found) == ('LocalViTTNT', arch)
    expected = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    assert converted.keys() == set(expected) | {
        'head.fc.weight', 'head.fc.bias'
    }
    for key, value in expected.items():
        assert converted[key].shape == value.shape, key


@pytest.mark.parametrize(
    'arch', [SMALL, dict(SMALL, ffn_cfg=None)], ids=['locality', 'plain'])
def test_converted_weights_give_the_official_logits(arch):
    converter = load_converter()
    model, head = random_classifier(arch, img_size=64)
    weights = official_layout(model, head)
    _, converted, _ = converter.convert(weights)
    fresh = LocalViTTNT(arch, img_size=64).eval()
    fresh.load_state_dict({
        k[len('backbone.'):]: v
        for k, v in converted.items() if k.startswith('backbone.')
    })
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ours = F.linear(
            fresh(x)[0], converted['head.fc.weight'],
            converted['head.fc.bias'])
        reference = official_forward(weights, x, 2, 2)
    torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-5)


def test_unknown_keys_are_refused():
    converter = load_converter()
    with torch.device('meta'):
        weights = official_layout(LocalViTTNT(SMALL), torch.nn.Linear(32, 10))
    weights['blocks.0.attn.qkv.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match='attn.qkv'):
        converter.convert(weights)


def test_an_arch_outside_the_zoo_needs_a_config(tmp_path):
    model, head = random_classifier(SMALL, img_size=64)
    src = tmp_path / 'custom.pth'
    torch.save(dict(model=official_layout(model, head)), src)
    message = ('no LocalViTTNT arch holds these weights (dims 32, inner dims '
               '8, 2 layers, locality FFN); pass --config')
    with pytest.raises(UserInputError, match=re.escape(message)):
        load_converter().main([str(src), str(tmp_path / 'out.pth')])


def test_script_converts_a_release_file(tmp_path):
    """Release file -> checkpoint of the config's classifier, official
    logits at 224; a baseline config is refused for LocalViT-TNT weights."""
    from mmpretrain.apis import get_model
    model, head = random_classifier('tiny')
    weights = official_layout(model, head)
    src, dst = tmp_path / 'localvit_tnt.pth', tmp_path / 'converted.pth'
    torch.save(
        dict(
            model=weights,
            args=argparse.Namespace(model='localvit_tnt_t_patch16_224')), src)
    baseline = osp.join(CONFIGS, 'tnt-t_8xb128_in1k.py')
    with pytest.raises(UserInputError, match='outer.ffn'):
        load_converter().main([str(src), str(dst), '--config', baseline])
    assert not dst.exists()
    result = run_tool('python', SCRIPT, str(src), str(dst))
    assert result.returncode == 0, result.stderr
    assert 'LocalViTTNT, arch tiny' in result.stdout
    config = osp.join(CONFIGS, 'localvit-tnt-t_8xb128_in1k.py')
    classifier = get_model(config, pretrained=str(dst)).eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        logits = classifier(x, mode='tensor')
        reference = official_forward(weights, x, 3, 3)
    torch.testing.assert_close(logits, reference, rtol=1e-4, atol=1e-5)

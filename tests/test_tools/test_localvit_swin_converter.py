"""Converting official LocalViT-Swin / Swin weights (``layers.{i}`` layout)."""
import argparse
import importlib.util
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.models import LocalViTSwin
from localvit_mm.models.layers.window_attention import (
    relative_position_index, shift_mask)
from localvit_mm.utils import UserInputError

SCRIPT = 'tools/model_converters/localvit_to_mmpretrain.py'
CONFIG = osp.join(REPO, 'configs', 'localvit_swin',
                  'localvit-swin-t_8xb128_in1k.py')
BASELINE_CONFIG = osp.join(REPO, 'configs', 'localvit_swin',
                           'swin-t_8xb128_in1k.py')
# The official FFN: conv, BN, act, dw conv, BN, act, SE, conv, BN
OFFICIAL_INDEX = dict(
    fc1=0, norm1=1, dw_conv=3, norm2=4, channel_attention=6, fc2=7, norm3=8)
# A narrow arch (window 7 as released) for the cheap round trips.
NARROW = dict(
    embed_dims=16,
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 2, 4],
    ffn_cfg=dict(
        act_cfg=dict(type='HSwish'),
        channel_attention=dict(type='SE', reduction='embed_dims//4')))


def load_converter():
    spec = importlib.util.spec_from_file_location('localvit_converter',
                                                  osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_classifier(arch='tiny', seed=0):
    """A LocalViT-Swin classifier backbone (stage-4 output) with random
    weights and BN statistics, and a 1000-way head."""
    torch.manual_seed(seed)
    model = LocalViTSwin(arch, out_indices=3)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.nn.Linear(model.embed_dims[-1], 1000)


def official_layout(model, head, resolution=56):
    """Our weights under the official release's names, with the buffers the
    official model saves (relative position indices, and the shift masks of
    the shifted blocks whose lattice is wider than the window)."""
    weights = {}
    for key, value in model.state_dict().items():
        if '.ffn.' in key:
            block, rest = key.split('.ffn.')
            part, leaf = rest.split('.', 1)
            if part in ('fc1', 'fc2'):
                value = value[:, :, None, None]
            key = f'{block}.conv.conv.{OFFICIAL_INDEX[part]}.{leaf}'
        elif key.startswith('norm3.'):
            key = 'norm.' + key[len('norm3.'):]
        weights[key] = value
    for i, stage in enumerate(model.layers):
        side = resolution // 2**i
        for j, block in enumerate(stage.blocks):
            ws = block.attn.window_size
            weights[f'layers.{i}.blocks.{j}.attn.relative_position_index'] = \
                relative_position_index(ws)
            if j % 2 and side > ws:
                weights[f'layers.{i}.blocks.{j}.attn_mask'] = shift_mask(
                    (side, side), ws, ws // 2)
    weights['head.weight'] = head.weight.detach()
    weights['head.bias'] = head.bias.detach()
    return weights


def test_official_layout_matches_the_release():
    with torch.device('meta'):
        model = LocalViTSwin('tiny', out_indices=3)
        head = torch.nn.Linear(768, 1000)
    weights = official_layout(model, head)
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert shapes['patch_embed.proj.weight'] == (96, 3, 4, 4)
    assert shapes['patch_embed.norm.weight'] == (96, )
    assert shapes['layers.0.blocks.0.attn.relative_position_bias_table'] == \
        (169, 3)
    assert shapes['layers.3.blocks.1.attn.relative_position_bias_table'] == \
        (169, 24)
    assert shapes['layers.0.blocks.0.attn.qkv.weight'] == (288, 96)
    assert shapes['layers.0.blocks.0.conv.conv.0.weight'] == (384, 96, 1, 1)
    assert shapes['layers.0.blocks.0.conv.conv.3.weight'] == (384, 1, 3, 3)
    assert shapes['layers.0.blocks.0.conv.conv.6.fc.0.weight'] == (16, 384)
    assert shapes['layers.2.blocks.5.conv.conv.6.fc.0.weight'] == (16, 1536)
    assert shapes['layers.0.downsample.norm.weight'] == (384, )
    assert shapes['layers.0.downsample.reduction.weight'] == (192, 384)
    assert shapes['layers.0.blocks.1.attn_mask'] == (64, 49, 49)
    assert 'layers.3.blocks.1.attn_mask' not in shapes  # 7x7: no shift
    assert 'layers.3.downsample.norm.weight' not in shapes
    assert shapes['norm.weight'] == (768, )
    # parameters of the official classifier: everything but the buffers
    params = sum(v.numel() for k, v in weights.items()
                 if not k.endswith(('relative_position_index', 'attn_mask',
                                    'running_mean', 'running_var',
                                    'num_batches_tracked')))
    assert params == 29_079_010


@pytest.mark.parametrize('arch', ['tiny', 'swin-tiny'])
def test_convert_round_trip_and_arch(arch):
    converter = load_converter()
    with torch.device('meta'):
        model = LocalViTSwin(arch, out_indices=3)
        head = torch.nn.Linear(768, 1000)
    family, converted, found = converter.convert(official_layout(model, head))
    assert (family, found) == ('LocalViTSwin', arch)
    expected = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    expected['head.fc.weight'] = head.weight
    expected['head.fc.bias'] = head.bias
    assert converted.keys() == expected.keys()
    assert all(converted[k].shape == v.shape for k, v in expected.items())


def test_convert_narrow_round_trip_values():
    converter = load_converter()
    model, head = random_classifier(NARROW)
    family, converted, found = converter.convert(official_layout(model, head))
    assert family == 'LocalViTSwin' and found is None  # not an arch_zoo row
    expected = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    expected['head.fc.weight'] = head.weight.detach()
    expected['head.fc.bias'] = head.bias.detach()
    assert converted.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0)


def test_unknown_keys_are_refused():
    converter = load_converter()
    model, head = random_classifier(NARROW)
    weights = official_layout(model, head)
    weights['layers.1.blocks.0.attn.q.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match='attn.q.weight'):
        converter.convert(weights)


def reference_logits(model, head, images):
    """The classifier computed from our model directly: stage-4 map (norm3
    applied), global average pooling, linear head."""
    with torch.no_grad():
        feat = model(images)[-1]
        return head(feat.mean((2, 3)))


def test_script_converts_a_release_file_that_gives_the_same_logits(tmp_path):
    """Release file -> converter script (checked against a config) ->
    mmpretrain classifier with the converted checkpoint: the logits of the
    model the release was made from."""
    from mmpretrain.apis import init_model
    model, head = random_classifier(NARROW)
    src, dst = tmp_path / 'localvit_swin.pth', tmp_path / 'converted.pth'
    torch.save(
        dict(
            model=official_layout(model, head, resolution=14),
            args=argparse.Namespace(
                model='localvit_swin_tiny_patch4_window7_224')), src)
    config = tmp_path / 'narrow.py'
    arch = dict(NARROW, _delete_=True)
    config.write_text(f'_base_ = [{CONFIG!r}]\n'
                      f'model = dict(backbone=dict(arch={arch!r}), '
                      'head=dict(in_channels=128))\n')
    result = run_tool('python', SCRIPT, str(src), str(dst), '--config',
                      str(config))
    assert result.returncode == 0, result.stderr
    assert 'LocalViTSwin' in result.stdout
    classifier = init_model(str(config), str(dst), device='cpu').eval()
    images = torch.randn(2, 3, 61, 83)
    with torch.no_grad():
        logits = classifier(images, mode='tensor')
    torch.testing.assert_close(logits, reference_logits(model, head, images))

    converter = load_converter()
    # not an arch_zoo row: the script asks for a config
    with pytest.raises(UserInputError, match='pass --config'):
        converter.main([str(src), str(tmp_path / 'no-arch.pth')])
    # the Swin-T baseline config does not hold these weights: refused
    with pytest.raises(UserInputError, match='cannot convert.*missing'):
        converter.main([
            str(src),
            str(tmp_path / 'refused.pth'), '--config', BASELINE_CONFIG
        ])
    assert not osp.exists(tmp_path / 'no-arch.pth')
    assert not osp.exists(tmp_path / 'refused.pth')


def test_converted_weights_initialize_a_dense_backbone(tmp_path):
    converter = load_converter()
    model, head = random_classifier(NARROW)
    _, converted, _ = converter.convert(official_layout(model, head))
    path = tmp_path / 'converted.pth'
    torch.save(dict(state_dict=converted), path)
    dense = LocalViTSwin(
        NARROW,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(path), prefix='backbone.'))
    dense.init_weights()
    for key, value in model.state_dict().items():
        torch.testing.assert_close(dense.state_dict()[key], value, msg=key)
    assert torch.equal(dense.norm0.weight, torch.ones(16))

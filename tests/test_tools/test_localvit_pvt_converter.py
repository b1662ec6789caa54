"""Converting official LocalViT-PVT / PVT weights (``block{s}.{j}`` layout)."""
import argparse
import importlib.util
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.models import LocalViTPVT

SCRIPT = 'tools/model_converters/localvit_to_mmpretrain.py'
CONFIG = osp.join(REPO, 'configs', 'localvit_pvt_t.py')
# The official LocalViT-PVT FFN: conv, BN, act, dw conv, BN, act, SE, conv, BN
OFFICIAL_INDEX = dict(
    fc1=0, norm1=1, dw_conv=3, norm2=4, channel_attention=6, fc2=7, norm3=8)


def load_converter():
    spec = importlib.util.spec_from_file_location('localvit_converter',
                                                  osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_classifier(arch='tiny', seed=0):
    """A classification LocalViT-PVT with random weights and BN statistics."""
    torch.manual_seed(seed)
    model = LocalViTPVT(
        arch, with_cls_token=True, out_type='cls_token', out_indices=3)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval(), torch.nn.Linear(512, 1000)


def official_layout(model, head):
    """Our weights under the official release's names."""
    weights = {}
    for key, value in model.state_dict().items():
        if '.ffn.' in key:
            block, rest = key.split('.ffn.')
            part, leaf = rest.split('.', 1)
            if part in ('fc1', 'fc2'):
                value = value[:, :, None, None]
            key = f'{block}.conv.conv.{OFFICIAL_INDEX[part]}.{leaf}'
        weights[key] = value
    weights['head.weight'] = head.weight.detach()
    weights['head.bias'] = head.bias.detach()
    return weights


def test_official_layout_matches_the_release():
    weights = official_layout(*random_classifier())
    shapes = {k: tuple(v.shape) for k, v in weights.items()}
    assert shapes['pos_embed1'] == (1, 3136, 64)
    assert shapes['pos_embed4'] == (1, 50, 512)
    assert shapes['cls_token'] == (1, 1, 512)
    assert shapes['block1.0.conv.conv.0.weight'] == (512, 64, 1, 1)
    assert shapes['block1.0.conv.conv.3.weight'] == (512, 1, 3, 3)
    assert shapes['block1.0.conv.conv.6.fc.0.weight'] == (8, 512)
    assert shapes['block3.1.conv.conv.6.fc.0.weight'] == (4, 1280)
    assert shapes['block1.1.attn.sr.weight'] == (64, 64, 8, 8)
    assert 'block4.0.attn.sr.weight' not in shapes
    assert shapes['patch_embed4.proj.weight'] == (512, 320, 2, 2)


@pytest.mark.parametrize('arch', ['tiny', 'pvt-tiny'])
def test_convert_round_trip_and_arch(arch):
    converter = load_converter()
    model, head = random_classifier(arch)
    family, converted, found = converter.convert(official_layout(model, head))
    assert (family, found) == ('LocalViTPVT', arch)
    expected = {f'backbone.{k}': v for k, v in model.state_dict().items()}
    expected['head.fc.weight'] = head.weight.detach()
    expected['head.fc.bias'] = head.bias.detach()
    assert converted.keys() == expected.keys()
    for key, value in expected.items():
        torch.testing.assert_close(converted[key], value, rtol=0, atol=0)


def test_unknown_keys_are_refused():
    converter = load_converter()
    weights = official_layout(*random_classifier())
    weights['block2.0.attn.qkv.weight'] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match='attn.qkv'):
        converter.convert(weights)


def test_script_converts_a_release_file_for_detection(tmp_path):
    """Release file -> mmpretrain checkpoint -> a dense backbone's init."""
    model, head = random_classifier()
    src, dst = tmp_path / 'localvit_pvt.pth', tmp_path / 'converted.pth'
    torch.save(
        dict(
            model=official_layout(model, head),
            args=argparse.Namespace(model='localvit_pvt_tiny')), src)
    result = run_tool('python', SCRIPT, str(src), str(dst), '--config', CONFIG)
    assert result.returncode == 0, result.stderr
    assert 'LocalViTPVT' in result.stdout and 'tiny' in result.stdout
    dense = LocalViTPVT(
        'tiny',
        pretrain_img_size=512,
        init_cfg=dict(
            type='Pretrained', checkpoint=str(dst), prefix='backbone.'))
    dense.init_weights()
    torch.testing.assert_close(dense.block2[1].ffn.fc2.weight,
                               model.block2[1].ffn.fc2.weight)
    assert dense.pos_embed4.shape == (1, 16 * 16, 512)
    assert not hasattr(dense, 'cls_token')

"""The official-checkpoint converter: round trip, arch detection, refusals."""
import argparse
import datetime
import importlib.util
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.models import LocalViT
from localvit_mm.utils import UserInputError

SCRIPT = 'tools/model_converters/localvit_to_mmpretrain.py'
CONFIGS = osp.join(REPO, 'configs', 'localvit')
TINY = osp.join(CONFIGS, 'localvit-tiny_8xb128_in1k.py')


def load_converter():
    spec = importlib.util.spec_from_file_location('localvit_converter',
                                                  osp.join(REPO, SCRIPT))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def official_layout(model: LocalViT, head: torch.nn.Linear) -> dict:
    """Our model's weights under the official release's names.

    The FFN index of each part follows the official construction: conv, BN,
    act, [dw conv, BN, act], [SE/ECA], conv, BN.
    """
    weights = {}
    for i, block in enumerate(model.blocks):
        ffn = getattr(block, 'ffn', None)
        if ffn is None:
            continue
        order = ['fc1', 'norm1', 'act']
        if isinstance(ffn.dw_conv, torch.nn.Conv2d):
            order += ['dw_conv', 'norm2', 'act']
        if not isinstance(ffn.channel_attention, torch.nn.Identity):
            order.append('channel_attention')
        order += ['fc2', 'norm3']
        for name, value in ffn.state_dict().items():
            part, rest = name.split('.', 1)
            if part in ('fc1', 'fc2'):
                value = value[:, :, None, None]
            weights[f'blocks.{i}.conv.conv.{order.index(part)}.{rest}'] = \
                value
    for name, value in model.state_dict().items():
        if '.ffn.' not in name:
            weights[name] = value
    weights['head.weight'] = head.weight.detach()
    weights['head.bias'] = head.bias.detach()
    return weights


def random_model(seed=0, **kwargs):
    """A LocalViT with random weights and BN statistics, and a head."""
    torch.manual_seed(seed)
    model = LocalViT(**kwargs)
    model.init_weights()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    head = torch.nn.Linear(model.embed_dims, 1000)
    return model.eval(), head


def save_release(path, weights):
    """An official-style release file, with the Namespace under 'args'."""
    torch.save(
        dict(
            model=weights,
            args=argparse.Namespace(
                model='localvit_tiny_mlp4_act3_r192', lr=1e-3)), path)


@pytest.fixture(scope='module')
def tiny_release(tmp_path_factory):
    model, head = random_model(arch='tiny')
    path = str(tmp_path_factory.mktemp('release') / 'localvit_t.pth')
    save_release(path, official_layout(model, head))
    return path, model, head


def test_round_trip_through_script(tiny_release, tmp_path):
    from mmpretrain.apis import get_model, init_model
    src, model, head = tiny_release
    dst = str(tmp_path / 'localvit-tiny.pth')
    result = run_tool('python', SCRIPT, src, dst, '--config', TINY)
    assert result.returncode == 0, result.stderr
    assert 'arch tiny' in result.stdout
    ckpt = torch.load(dst, map_location='cpu', weights_only=True)
    assert ckpt['meta'] == dict(source=src, family='LocalViT', arch='tiny')
    assert 'backbone.blocks.0.ffn.channel_attention.fc.0.weight' in \
        ckpt['state_dict']
    assert ckpt['state_dict']['backbone.blocks.0.ffn.fc1.weight'].shape == \
        (768, 192)

    fresh = get_model(TINY)
    incompatible = fresh.load_state_dict(ckpt['state_dict'], strict=True)
    assert not incompatible.missing_keys
    assert not incompatible.unexpected_keys

    classifier = init_model(TINY, dst).eval()
    x = torch.randn(2, 3, 64, 48)
    with torch.no_grad():
        logits = classifier(x)
        expected = head(model(x)[-1])
    torch.testing.assert_close(logits, expected)


def test_arch_detected_without_config(tiny_release, tmp_path):
    converter = load_converter()
    weights = converter.load_official(tiny_release[0])
    family, state_dict, arch = converter.convert(weights)
    assert (family, arch) == ('LocalViT', 'tiny')
    assert set(state_dict) == {
        f'backbone.{k}'
        for k in tiny_release[1].state_dict()
    } | {'head.fc.weight', 'head.fc.bias'}


@pytest.mark.parametrize(
    'kwargs,arch',
    [
        (dict(arch='tiny-se4'), 'tiny-se4'),
        (dict(arch='deit-tiny'), 'deit-tiny'),
        (dict(arch='tiny-relu6-mlp6'), 'tiny-relu6-mlp6'),
        # h-swish without SE is no arch row: it needs a config.
        (dict(arch='tiny', ffn_cfg=dict(channel_attention=None)), None),
    ])
def test_arch_detection(kwargs, arch):
    converter = load_converter()
    with torch.device('meta'):
        model = LocalViT(**kwargs)
        head = torch.nn.Linear(model.embed_dims, 1000)
    _, _, detected = converter.convert(official_layout(model, head))
    assert detected == arch


def test_no_arch_match_asks_for_config(tmp_path):
    converter = load_converter()
    model, head = random_model(
        arch='tiny', ffn_cfg=dict(channel_attention=None, with_dw_conv=False))
    src = str(tmp_path / 'hs_wo_dw.pth')
    save_release(src, official_layout(model, head))
    with pytest.raises(UserInputError) as error:
        converter.main([src, str(tmp_path / 'out.pth')])
    assert str(error.value) == (
        f'cannot convert {src}: no LocalViT arch holds these weights (embed '
        f'dims 192, 12 blocks, locality FFN in {list(range(12))} (hidden '
        '768, no dw conv)); pass --config')
    # The matching ablation config takes it (shifted FFN indices).
    config = osp.join(CONFIGS, 'ablations',
                      'localvit-tiny-relu6-nodw_8xb128_in1k.py')
    converter.main([src, str(tmp_path / 'out.pth'), '--config', config])
    ckpt = torch.load(str(tmp_path / 'out.pth'), weights_only=True)
    assert ckpt['meta']['arch'] == 'tiny'
    assert 'backbone.blocks.3.ffn.fc2.weight' in ckpt['state_dict']
    assert 'backbone.blocks.3.ffn.dw_conv.weight' not in ckpt['state_dict']


def test_wrong_variant_is_refused(tiny_release, tmp_path):
    se4 = osp.join(CONFIGS, 'localvit-tiny-se4_8xb128_in1k.py')
    dst = str(tmp_path / 'out.pth')
    result = run_tool('python', SCRIPT, tiny_release[0], dst, '--config', se4)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f'error: cannot convert {tiny_release[0]} with {se4}: shape '
        "(checkpoint vs config): ['backbone.blocks.0.ffn.channel_attention."
        "fc.0.bias (4,) vs (192,)', 'backbone.blocks.0.ffn.channel_attention."
        "fc.0.weight (4, 768) vs (192, 768)', 'backbone.blocks.0.ffn."
        "channel_attention.fc.2.weight (768, 4) vs (768, 192)'] ...")
    assert not osp.exists(dst)

    deit = osp.join(CONFIGS, 'deit-tiny_8xb128_in1k.py')
    with pytest.raises(
            UserInputError,
            match=r'^cannot convert .* with .*deit-'
            r"tiny_8xb128_in1k.py: missing: \['backbone.blocks.0"
            r".mlp.fc1.bias'"):
        load_converter().main([tiny_release[0], dst, '--config', deit])


def test_unsafe_pickle_is_refused(tmp_path):
    src = str(tmp_path / 'unsafe.pth')
    torch.save(dict(model={}, args=datetime.date(2021, 4, 7)), src)
    with pytest.raises(
            UserInputError,
            match=r"^checkpoint '.*unsafe.pth' holds an object that is not "
            r'known to be safe \(GLOBAL datetime.date\)'):
        load_converter().load_official(src)


def test_ema_weights(tmp_path):
    converter = load_converter()
    src = str(tmp_path / 'ema.pth')
    torch.save(
        dict(model={'a': torch.zeros(1)}, model_ema={'a': torch.ones(1)}), src)
    assert torch.equal(
        converter.load_official(src, ema=True)['a'], torch.ones(1))
    torch.save(dict(model={'a': torch.zeros(1)}), src)
    with pytest.raises(UserInputError, match='holds no "model_ema" weights'):
        converter.load_official(src, ema=True)

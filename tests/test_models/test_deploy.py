"""Deploy mode: every BatchNorm of the locality FFN folded, outputs kept."""
import copy
import inspect
import os.path as osp

import pytest
import torch
import torch.nn as nn
from bn_stats import randomize_bn
from conftest import REPO, run_tool

from localvit_mm.models import (DeployMixin, LocalViT, LocalViTPVT,
                                has_deploy_mode, switch_to_deploy)
from localvit_mm.models.layers import LocalityFeedForward
from localvit_mm.registry import MODELS

OPTIONS = [
    dict(),
    dict(act_cfg=dict(type='ReLU6')),
    dict(channel_attention=dict(type='SE', reduction=4)),
    dict(channel_attention=dict(type='SE', reduction=64)),
    dict(channel_attention=dict(type='ECA', gate='sigmoid')),
    dict(channel_attention=dict(type='ECA', gate='hsigmoid')),
    dict(expansion_ratio=1),
    dict(expansion_ratio=6, act_cfg=dict(type='ReLU6')),
    dict(kernel_size=5),
    dict(with_dw_conv=False),
    dict(with_dw_conv=False, channel_attention=dict(type='SE', reduction=4)),
]


def relative_error(actual, expected):
    if isinstance(expected, (list, tuple)):
        return max(relative_error(a, e) for a, e in zip(actual, expected))
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@pytest.mark.parametrize('options', OPTIONS)
@pytest.mark.parametrize('extra', [0, 1])
def test_ffn_deploy_equals_eval(options, extra):
    torch.manual_seed(0)
    ffn = randomize_bn(LocalityFeedForward(32, **options)).eval()
    x = torch.randn(4, extra + 20, 32)
    with torch.no_grad():
        expected = ffn(x, (4, 5), extra)
    ffn.switch_to_deploy()
    assert ffn.deploy
    assert not any(isinstance(m, nn.BatchNorm2d) for m in ffn.modules())
    hidden = int(32 * options.get('expansion_ratio', 4))
    assert ffn.fc1.bias.shape == (hidden, ) and ffn.fc2.bias.shape == (32, )
    if options.get('with_dw_conv', True):
        assert ffn.dw_conv.bias.shape == (hidden, )
    with torch.no_grad():
        out = ffn(x, (4, 5), extra)
    assert relative_error(out, expected) < 1e-5
    assert torch.equal(out[:, :extra], x[:, :extra])
    # With gradients on (no in-place path) the result is the same.
    assert relative_error(ffn(x, (4, 5), extra), expected) < 1e-5
    # Built directly in deploy form, it holds exactly these weights.
    direct = LocalityFeedForward(32, deploy=True, **options)
    direct.load_state_dict(ffn.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.equal(direct.eval()(x, (4, 5), extra), out)


def test_ffn_deploy_keys_and_refusals():
    ffn = LocalityFeedForward(
        8, channel_attention=dict(type='SE', reduction=4))
    ffn.switch_to_deploy()
    ffn.switch_to_deploy()  # a second call changes nothing
    assert sorted(ffn.state_dict()) == [
        'channel_attention.fc.0.bias', 'channel_attention.fc.0.weight',
        'channel_attention.fc.2.bias', 'channel_attention.fc.2.weight',
        'dw_conv.bias', 'dw_conv.weight', 'fc1.bias', 'fc1.weight', 'fc2.bias',
        'fc2.weight'
    ]
    gn = LocalityFeedForward(8, norm_cfg=dict(type='GN', num_groups=4))
    with pytest.raises(ValueError, match='folds BatchNorm'):
        gn.switch_to_deploy()


def backbones_with_locality():
    """Every registered backbone class offering deploy mode, built with
    its defaults (future backbones on the shared FFN are tested too)."""
    classes = sorted(
        {
            cls
            for cls in MODELS.module_dict.values()
            if inspect.isclass(cls) and issubclass(cls, DeployMixin)
        },
        key=lambda c: c.__name__)
    assert {LocalViT, LocalViTPVT} <= set(classes)
    return classes


@pytest.mark.parametrize(
    'cls', backbones_with_locality(), ids=lambda c: c.__name__)
def test_every_backbone_deploys(cls):
    torch.manual_seed(0)
    model = cls()
    model.init_weights()
    randomize_bn(model)
    model.eval()
    assert has_deploy_mode(model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(x)
    model.switch_to_deploy()
    assert model.deploy and not has_deploy_mode(model)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    with torch.no_grad():
        assert relative_error(model(x), expected) < 1e-5


@pytest.mark.parametrize('build', [
    lambda deploy: LocalViT(
        arch='tiny-relu6-mlp6',
        locality_layers=[1, 3],
        out_type='featmap',
        out_indices=(1, 3),
        ffn_cfg=dict(deploy=deploy)),
    lambda deploy: LocalViT(
        arch=dict(embed_dims=64, num_layers=2, num_heads=2, ffn_cfg=dict()),
        ffn_cfg=dict(with_dw_conv=False, deploy=deploy)),
    lambda deploy: LocalViTPVT(
        arch='tiny',
        with_cls_token=True,
        out_type='cls_token',
        ffn_cfg=dict(deploy=deploy)),
])
def test_deploy_config_knob_loads_deploy_weights(build):
    """``ffn_cfg=dict(deploy=True)`` builds the folded model directly; a
    deploy state dict loads into it strictly and gives the same outputs on
    a non-square input."""
    torch.manual_seed(0)
    model = randomize_bn(build(False)).eval()
    x = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        expected = model(x)
    switch_to_deploy(model)
    direct = build(True)
    direct.load_state_dict(model.state_dict(), strict=True)
    direct.eval()
    with torch.no_grad():
        assert relative_error(direct(x), expected) < 1e-5


def test_deit_has_nothing_to_deploy():
    deit = LocalViT(arch='deit-tiny')
    assert not has_deploy_mode(deit)
    before = copy.deepcopy(deit.state_dict())
    deit.switch_to_deploy()
    assert deit.state_dict().keys() == before.keys()


def test_deploy_converter_script(tmp_path):
    """tools/model_converters/localvit_deploy.py: a trained-looking
    checkpoint in, a deploy checkpoint and a deploy config out; the config
    builds a model that loads the checkpoint strictly and matches eval."""
    from mmpretrain.apis import get_model

    from localvit_mm.utils import load_config, safe_load
    config = osp.join(REPO, 'configs', 'localvit',
                      'localvit-tiny_8xb128_in1k.py')
    model = randomize_bn(get_model(config)).eval()
    ckpt = str(tmp_path / 'trained.pth')
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
    dst, cfg_path = str(tmp_path / 'deploy.pth'), str(tmp_path / 'deploy.py')
    result = run_tool('python', 'tools/model_converters/localvit_deploy.py',
                      config, ckpt, dst, '--save-config', cfg_path, '--shape',
                      '96', '128')
    assert result.returncode == 0, result.stderr
    assert 'BatchNorms folded' in result.stdout
    state = safe_load(dst, map_location='cpu')
    assert state['meta']['deploy'] is True
    assert not any('norm3' in k or 'running_mean' in k
                   for k in state['state_dict'])
    deployed = get_model(load_config(cfg_path))
    deployed.load_state_dict(state['state_dict'], strict=True)
    deployed.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert relative_error(
            deployed(x, mode='tensor'), model(x, mode='tensor')) < 1e-5

    deit = osp.join(REPO, 'configs', 'localvit', 'deit-tiny_8xb128_in1k.py')
    refused = run_tool('python', 'tools/model_converters/localvit_deploy.py',
                       deit, ckpt, str(tmp_path / 'x.pth'))
    assert refused.returncode == 2 and 'nothing to fold' in refused.stderr


def test_torch_compile_matches_eager():
    """The eval model compiles (inductor, CPU) and gives eager's outputs,
    in the regular (BN folded on the fly) and the deploy form."""
    torch.manual_seed(0)
    model = randomize_bn(
        LocalViT(
            arch=dict(
                embed_dims=32,
                num_layers=1,
                num_heads=2,
                ffn_cfg=dict(channel_attention=dict(type='SE', reduction=8))),
            img_size=64,
            patch_size=8)).eval()
    deployed = switch_to_deploy(copy.deepcopy(model))
    x = torch.randn(2, 3, 64, 64)
    torch._dynamo.reset()
    with torch.no_grad():
        expected = model(x)
        for candidate in (model, deployed):
            compiled = torch.compile(candidate)
            assert relative_error(compiled(x), expected) < 1e-4

"""LocalViT-PVT: structure, exact sizes, freezing, checkpoint loading."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from localvit_mm.models import LocalViTPVT
from localvit_mm.models.layers import LocalityFeedForward

REPO = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def classifier_params(arch):
    """Parameters of the classifier: backbone + 1000-way linear head."""
    backbone = LocalViTPVT(
        arch, with_cls_token=True, out_type='cls_token', out_indices=3)
    head = nn.Linear(512, 1000)
    return sum(p.numel() for m in (backbone, head) for p in m.parameters())


@pytest.mark.parametrize('arch,params', [('tiny', 13_456_152),
                                         ('pvt-tiny', 13_229_288)])
def test_parameter_count_is_exact(arch, params):
    assert classifier_params(arch) == params


def test_arch_structure_and_official_eps():
    model = LocalViTPVT('small')
    assert [len(getattr(model, f'block{s}')) for s in range(1, 5)] == \
        [3, 4, 6, 3]
    assert LocalViTPVT.arch_zoo['medium']['num_layers'] == [3, 4, 18, 3]
    assert LocalViTPVT.arch_zoo['large']['num_layers'] == [3, 8, 27, 3]
    for s, (dims,
            squeeze) in enumerate(zip([64, 128, 320, 512], [8, 8, 4, 4]), 1):
        block = getattr(model, f'block{s}')[0]
        assert isinstance(block.ffn, LocalityFeedForward)
        assert isinstance(block.ffn.act1, nn.Hardswish)
        # SE reduction = stage channels: gamma channels are kept
        assert block.ffn.channel_attention.fc[0].out_features == squeeze
        assert block.norm1.eps == 1e-6 and block.norm1.normalized_shape == (
            dims, )
        assert getattr(model, f'patch_embed{s}').norm.eps == 1e-5
        if s < 4:
            assert block.attn.norm.eps == 1e-5
            assert block.attn.sr.stride == (2**(4 - s), ) * 2
    assert model.norm.eps == 1e-6
    baseline = LocalViTPVT('pvt-tiny')
    assert not hasattr(baseline.block1[0], 'ffn')
    assert baseline.block1[0].mlp.fc1.out_features == 512


def test_mmdet_style_keys():
    # mmdet's PVT config keys: base embed_dims times num_heads, per-stage lists
    model = LocalViTPVT(
        embed_dims=32,
        num_layers=[1, 1, 1, 1],
        num_heads=[1, 2, 4, 8],
        sr_ratios=[4, 2, 1, 1],
        mlp_ratios=[2, 2, 2, 2])
    assert model.embed_dims == [32, 64, 128, 256]
    out = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in out] == [32, 64, 128, 256]
    with pytest.raises(ValueError, match='arch'):
        LocalViTPVT('huge')
    with pytest.raises(ValueError, match='with_cls_token'):
        LocalViTPVT(out_type='cls_token')
    with pytest.raises(ValueError, match='differ in length'):
        LocalViTPVT(num_layers=[2, 2, 2])


@pytest.mark.parametrize('size', [(224, 224), (256, 192), (225, 301),
                                  (100, 150)])
def test_pyramid_shapes(size):
    model = LocalViTPVT('tiny').eval()
    with torch.no_grad():
        outs = model(torch.randn(2, 3, *size))
    for out, stride, dims in zip(outs, [4, 8, 16, 32], [64, 128, 320, 512]):
        assert out.shape == (2, dims, math.ceil(size[0] / stride),
                             math.ceil(size[1] / stride))
        assert torch.isfinite(out).all()


def test_out_indices_and_cls_token_output():
    model = LocalViTPVT('pvt-tiny', out_indices=(1, 3)).eval()
    outs = model(torch.randn(1, 3, 128, 96))
    assert [tuple(o.shape) for o in outs] == [(1, 128, 16, 12), (1, 512, 4, 3)]
    cls_model = LocalViTPVT(
        with_cls_token=True, out_type='cls_token', out_indices=(2, 3)).eval()
    outs = cls_model(torch.randn(2, 3, 224, 224))
    assert outs[0].shape == (2, 320, 14, 14) and outs[1].shape == (2, 512)
    assert cls_model.pos_embed4.shape == (1, 50, 512)


def test_class_token_bypasses_the_ffn():
    model = LocalViTPVT(
        with_cls_token=True, out_type='cls_token', out_indices=3).eval()
    block = model.block4[0]
    x = torch.randn(1, 1 + 12, 512)
    y = block.ffn(x, (3, 4), num_extra_tokens=1)
    torch.testing.assert_close(y[:, 0], x[:, 0])


def test_pos_embed_is_resized_at_forward():
    model = LocalViTPVT('pvt-tiny', pretrain_img_size=64).eval()
    grid = model.pos_embed1.detach().reshape(1, 16, 16, 64).permute(0, 3, 1, 2)
    expected = F.interpolate(
        grid, size=(24, 8), mode='bilinear',
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(model._pos_embed(0, (24, 8), 0), expected)
    assert model._pos_embed(0, (16, 16), 0) is model.pos_embed1


def _train_step(model, size=(64, 64)):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    loss = sum(o.square().mean() for o in model(torch.randn(2, 3, *size)))
    loss.backward()
    optimizer.step()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_stages_stay_frozen():
    model = LocalViTPVT('tiny', frozen_stages=2, drop_path_rate=0.)
    before = _snapshot(model)
    _train_step(model)
    assert not model.block1.training and not model.patch_embed2.training
    assert model.block3.training
    after = model.state_dict()
    frozen = ('patch_embed1.', 'pos_embed1', 'block1.', 'patch_embed2.',
              'pos_embed2', 'block2.')
    for key, value in before.items():
        if key.startswith(frozen):  # weights and BN running stats
            torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    for key in ('block3.0.attn.q.weight', 'block3.0.ffn.norm1.running_mean',
                'pos_embed3', 'norm.weight'):
        assert not torch.equal(after[key], before[key]), key
    assert not any(p.requires_grad for p in model.block2.parameters())


def test_norm_eval_freezes_batchnorm_statistics():
    model = LocalViTPVT(
        'tiny',
        norm_eval=True,
        drop_path_rate=0.,
        ffn_cfg=dict(norm_cfg=dict(type='BN', requires_grad=False)))
    before = _snapshot(model)
    _train_step(model)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(bns) == 3 * 8 and not any(m.training for m in bns)
    after = model.state_dict()
    for name, module in model.named_modules():
        if isinstance(module, _BatchNorm):
            for key in ('weight', 'bias', 'running_mean', 'running_var',
                        'num_batches_tracked'):
                full = f'{name}.{key}'
                torch.testing.assert_close(
                    after[full], before[full], rtol=0, atol=0)
    assert not torch.equal(after['block1.0.ffn.fc1.weight'],
                           before['block1.0.ffn.fc1.weight'])
    # without norm_eval the statistics move
    model = LocalViTPVT('tiny', drop_path_rate=0.)
    before = _snapshot(model)
    _train_step(model)
    assert not torch.equal(model.block1[0].ffn.norm1.running_mean,
                           before['block1.0.ffn.norm1.running_mean'])


def test_with_cp_matches_plain_forward_and_backward():
    torch.manual_seed(0)
    plain = LocalViTPVT('tiny', drop_path_rate=0., norm_eval=True)
    ckpt = LocalViTPVT('tiny', drop_path_rate=0., norm_eval=True, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 64, 96)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.sum() for o in model(x)).backward()
        grads.append(model.block2[0].ffn.fc1.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_load_resizes_pos_embed_and_drops_class_token():
    source = LocalViTPVT(
        'tiny', with_cls_token=True, out_type='cls_token', out_indices=3)
    source.init_weights()
    target = LocalViTPVT('tiny', pretrain_img_size=(256, 320))
    missing, unexpected = target.load_state_dict(source.state_dict())
    assert missing == [] and unexpected == []
    assert target.pos_embed1.shape == (1, 64 * 80, 64)
    assert target.pos_embed4.shape == (1, 8 * 10, 512)
    grid = source.pos_embed4.detach()[:, 1:].reshape(1, 7, 7,
                                                     512).permute(0, 3, 1, 2)
    expected = F.interpolate(
        grid, size=(8, 10), mode='bilinear',
        align_corners=False).flatten(2).transpose(1, 2)
    torch.testing.assert_close(target.pos_embed4.detach(), expected)
    torch.testing.assert_close(target.block3[1].ffn.fc2.weight,
                               source.block3[1].ffn.fc2.weight)
    # same size, no class token in the model: the class entry is dropped
    same = LocalViTPVT('tiny')
    same.load_state_dict(source.state_dict())
    torch.testing.assert_close(same.pos_embed4, source.pos_embed4[:, 1:])


def test_load_reports_other_mismatches():
    dense = LocalViTPVT('tiny').state_dict()
    with_cls = LocalViTPVT('tiny', with_cls_token=True)
    with pytest.raises(RuntimeError, match='cls_token'):
        with_cls.load_state_dict(dense)
    with pytest.raises(RuntimeError, match='size mismatch for patch_embed1'):
        LocalViTPVT('tiny', in_channels=1).load_state_dict(dense)


def _backbone_cfg(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    return cfg, cfg.model.backbone.to_dict()


@pytest.mark.parametrize('config,scope', [
    ('configs/localvit_pvt_t.py', 'mmpretrain'),
    ('configs/detection/retinanet_localvit-pvt-t_fpn_1x_coco.py', 'mmdet'),
    ('configs/segmentation/fpn_localvit-pvt-t_8xb4-40k_ade20k-512x512.py',
     'mmseg'),
])
def test_build_from_each_codebase(config, scope):
    import importlib
    registry = importlib.import_module(f'{scope}.registry').MODELS
    cfg, backbone = _backbone_cfg(config)
    assert cfg.default_scope == scope
    assert cfg.custom_imports.imports == ['localvit_mm.models']
    backbone.pop('init_cfg', None)
    model = registry.build(backbone)
    assert type(model) is LocalViTPVT
    reference = LocalViTPVT('tiny')
    own = {
        k: v.shape
        for k, v in model.state_dict().items()
        if k not in ('cls_token', 'pos_embed4')
    }
    assert own == {
        k: v.shape
        for k, v in reference.state_dict().items() if k != 'pos_embed4'
    }


def test_init_from_classification_checkpoint(tmp_path):
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS
    cfg, _ = _backbone_cfg('configs/localvit_pvt_t.py')
    classifier = MMPRETRAIN_MODELS.build(cfg.model)
    classifier.init_weights()
    path = str(tmp_path / 'localvit-pvt-t_in1k.pth')
    torch.save(dict(state_dict=classifier.state_dict()), path)

    det_cfg, backbone = _backbone_cfg(
        'configs/detection/retinanet_localvit-pvt-t_fpn_1x_coco.py')
    assert backbone['init_cfg']['prefix'] == 'backbone.'
    backbone['init_cfg']['checkpoint'] = path
    backbone['ffn_cfg']['norm_cfg']['type'] = 'BN'
    model = MMDET_MODELS.build(backbone)
    model.init_weights()
    source = classifier.backbone.state_dict()
    for key, value in model.state_dict().items():
        expected = source[key][:, 1:] if key == 'pos_embed4' else source[key]
        torch.testing.assert_close(value, expected, msg=key)
    # mmdet PVT style: init_cfg without a type means Pretrained
    model = LocalViTPVT(init_cfg=dict(checkpoint=path, prefix='backbone.'))
    model.init_weights()
    torch.testing.assert_close(model.block4[1].attn.kv.weight,
                               source['block4.1.attn.kv.weight'])

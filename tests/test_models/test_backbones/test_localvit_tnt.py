"""LocalViT-TNT: exact sizes, structure, any input size, deploy, freezing,
position-embedding resize on load."""
import copy
import os.path as osp

import pytest
import torch
import torch.nn as nn
from torch.nn.modules.batchnorm import _BatchNorm

from localvit_mm.models import LocalViTTNT
from localvit_mm.models.layers import (LocalityFeedForward, TNTAttention,
                                       resize_pos_embed)
from localvit_mm.registry import ATTENTIONS

REPO = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
SMALL = dict(
    embed_dims=24, inner_dims=6, num_layers=2, num_heads=2, inner_num_heads=2)


def randomize_bn(model, seed=0):
    """Non-trivial BN statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
    return model


@pytest.mark.parametrize('arch,params', [('tiny', 6_261_064),
                                         ('tnt-tiny', 6_069_784)])
def test_parameter_count_is_exact(arch, params):
    with torch.device('meta'):
        backbone = LocalViTTNT(arch)
        head = nn.Linear(192, 1000)
    assert sum(p.numel() for m in (backbone, head)
               for p in m.parameters()) == params


def test_structure_follows_the_official_tnt_t():
    model = LocalViTTNT('tiny')
    assert ATTENTIONS.get('TNTAttention') is TNTAttention
    conv = model.pixel_embed.proj
    assert (conv.in_channels, conv.out_channels) == (3, 12)
    assert (conv.kernel_size, conv.stride, conv.padding) == ((7, 7), (4, 4),
                                                             (3, 3))
    assert model.pixel_pos.shape == (1, 12, 4, 4)
    assert model.patch_pos.shape == (1, 197, 192)
    assert model.proj.in_features == 16 * 12
    block = model.blocks[0]
    # inner: TNT attention without qk/v bias, GELU MLP with ratio 4
    assert isinstance(block.inner.attn, TNTAttention)
    assert block.inner.attn.qk.bias is None and block.inner.attn.v.bias is None
    assert block.inner.attn.qk.weight.shape == (24, 12)
    assert block.inner.attn.num_heads == 3
    assert isinstance(block.inner.mlp.act, nn.GELU)
    assert block.inner.mlp.fc1.out_features == 48
    assert block.proj.weight.shape == (192, 192)
    # outer: locality FFN, h-swish, SE keeping 4 channels, no norm before it
    assert isinstance(block.outer.attn, TNTAttention)
    assert block.outer.attn.num_heads == 3
    ffn = block.outer.ffn
    assert isinstance(ffn, LocalityFeedForward)
    assert isinstance(ffn.act1, nn.Hardswish)
    assert ffn.channel_attention.fc[0].out_features == 4
    assert not hasattr(block.outer, 'norm2')
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 3 + 12 * 4 and all(m.eps == 1e-5 for m in norms)
    baseline = LocalViTTNT('tnt-tiny').blocks[0].outer
    assert not hasattr(baseline, 'ffn')
    assert baseline.mlp.fc1.out_features == 768
    small = LocalViTTNT.arch_zoo['small']
    assert (small['embed_dims'], small['inner_dims'], small['num_heads'],
            small['inner_num_heads']) == (384, 24, 6, 4)


def test_full_tiny_forward_backward_at_224():
    torch.manual_seed(0)
    model = LocalViTTNT('tiny', drop_path_rate=0.1)
    model.init_weights()
    model.train()
    out = model(torch.randn(2, 3, 224, 224))
    assert len(out) == 1 and out[0].shape == (2, 192)
    out[0].pow(2).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize('size,lattice', [((64, 96), (4, 6)),
                                          ((50, 70), (4, 5))])
def test_non_square_and_padded_inputs(size, lattice):
    torch.manual_seed(0)
    model = LocalViTTNT(SMALL, out_indices=(0, 1), out_type='featmap')
    model.init_weights()
    x = torch.randn(2, 3, *size, requires_grad=True)
    outs = model(x)
    assert [o.shape for o in outs] == [(2, 24, *lattice)] * 2
    sum(o.sum() for o in outs).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert x.grad.shape == x.shape
    if size[0] % 16:
        # zero padding at the bottom and right, no other change
        padded = torch.zeros(2, 3, 64, 80)
        padded[:, :, :size[0], :size[1]] = x.detach()
        model.eval()
        with torch.no_grad():
            torch.testing.assert_close(model(x.detach())[1], model(padded)[1])


def test_out_types_and_indices():
    torch.manual_seed(0)
    model = LocalViTTNT(SMALL, out_indices=-1, out_type='raw').eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        raw = model(x)[0]
        assert raw.shape == (2, 1 + 12, 24)
        for out_type, expected in [
            ('cls_token', raw[:, 0]),
            ('avg_featmap', raw[:, 1:].mean(1)),
            ('featmap', raw[:, 1:].transpose(1, 2).reshape(2, 24, 3, 4)),
        ]:
            model.out_type = out_type
            torch.testing.assert_close(model(x)[0], expected)
    model = LocalViTTNT(SMALL, out_indices=(0, -1), final_norm=False)
    assert model.out_indices == [0, 1] and isinstance(model.norm, nn.Identity)
    with pytest.raises(ValueError, match='out_indices'):
        LocalViTTNT(SMALL, out_indices=2)
    with pytest.raises(ValueError, match='out_type'):
        LocalViTTNT(SMALL, out_type='pooled')
    with pytest.raises(ValueError, match='arch'):
        LocalViTTNT('huge')
    with pytest.raises(ValueError, match='inner_dims'):
        LocalViTTNT(
            dict(embed_dims=24, num_layers=2, num_heads=2, inner_num_heads=2))
    with pytest.raises(ValueError, match='pixel_stride'):
        LocalViTTNT(SMALL, pixel_stride=3)
    with pytest.raises(ValueError, match='plain MLPs'):
        LocalViTTNT('tnt-tiny', ffn_cfg=dict(act_cfg=dict(type='ReLU6')))


def test_ffn_cfg_overrides():
    model = LocalViTTNT(
        SMALL,
        ffn_cfg=dict(
            act_cfg=dict(type='ReLU6'), channel_attention=None, mlp_ratio=2))
    ffn = model.blocks[0].outer.ffn
    assert isinstance(ffn.act1, nn.ReLU6)
    assert ffn.fc1.out_features == 48 and isinstance(ffn.channel_attention,
                                                     nn.Identity)
    # SE reduction = dims by default for custom archs: 96 // 24 = 4 kept
    default = LocalViTTNT(SMALL).blocks[0].outer.ffn
    assert default.channel_attention.fc[0].out_features == 4
    plain = LocalViTTNT(dict(SMALL, ffn_cfg=None), ffn_cfg=dict(mlp_ratio=2))
    assert plain.blocks[0].outer.mlp.fc1.out_features == 48


def test_switch_to_deploy_matches_eval_output():
    torch.manual_seed(0)
    model = randomize_bn(LocalViTTNT(SMALL))
    model.init_weights()
    model.eval()
    x = torch.randn(2, 3, 48, 80)
    with torch.no_grad():
        expected = model(x)[0]
        model.switch_to_deploy()
        deployed = model(x)[0]
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    torch.testing.assert_close(deployed, expected, rtol=1e-5, atol=1e-6)
    # a model built in deploy form loads the switched weights
    built = LocalViTTNT(SMALL, ffn_cfg=dict(deploy=True)).eval()
    built.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(built(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_frozen_stages_and_norm_eval():
    model = LocalViTTNT(SMALL, frozen_stages=1)
    model.train()
    frozen = [
        model.pixel_embed, model.norm1_proj, model.proj, model.norm2_proj,
        model.blocks[0]
    ]
    for module in frozen:
        assert all(not p.requires_grad for p in module.parameters())
    assert not any(
        p.requires_grad
        for p in (model.cls_token, model.patch_pos, model.pixel_pos))
    assert all(p.requires_grad for p in model.blocks[1].parameters())
    assert all(p.requires_grad for p in model.norm.parameters())
    assert not model.blocks[0].outer.ffn.norm1.training
    assert model.blocks[1].outer.ffn.norm1.training
    stats = model.blocks[0].outer.ffn.norm1.running_mean.clone()
    model(torch.randn(2, 3, 32, 32))
    torch.testing.assert_close(
        model.blocks[0].outer.ffn.norm1.running_mean, stats, rtol=0, atol=0)
    everything = LocalViTTNT(SMALL, frozen_stages=2).train()
    assert not any(p.requires_grad for p in everything.parameters())

    model = LocalViTTNT(SMALL, norm_eval=True).train()
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(m.training for m in bns)
    assert model.blocks[0].inner.training
    assert all(p.requires_grad for p in model.parameters())


def test_with_cp_gives_the_same_output_and_gradients():
    torch.manual_seed(0)
    model = LocalViTTNT(SMALL)
    model.init_weights()
    checkpointed = copy.deepcopy(model)
    checkpointed.with_cp = True
    x = torch.randn(2, 3, 32, 48)
    outs = [m.train()(x)[0] for m in (model, checkpointed)]
    torch.testing.assert_close(outs[1], outs[0])
    for out in outs:
        out.sum().backward()
    for (name, p), q in zip(model.named_parameters(),
                            checkpointed.parameters()):
        torch.testing.assert_close(q.grad, p.grad, msg=name)


def test_patch_pos_is_resized_on_load():
    torch.manual_seed(0)
    source = LocalViTTNT(SMALL, img_size=64)  # 4x4 patches
    source.init_weights()
    source.eval()
    target = LocalViTTNT(SMALL, img_size=(96, 128)).eval()  # 6x8 patches
    target.load_state_dict(source.state_dict())
    assert target.patch_pos.shape == (1, 1 + 48, 24)
    torch.testing.assert_close(
        target.patch_pos,
        resize_pos_embed(source.patch_pos, (4, 4), (6, 8), 'bicubic', 1))
    # loading resizes exactly as the forward pass does
    x = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        torch.testing.assert_close(target(x)[0], source(x)[0])
    bad = source.state_dict()
    bad['patch_pos'] = bad['patch_pos'][:, :-2]
    with pytest.raises(ValueError, match='square lattice'):
        target.load_state_dict(bad)


def test_configs_build_with_the_paper_recipe():
    from mmengine.optim import build_optim_wrapper
    from mmpretrain.apis import get_model

    from localvit_mm.utils import load_config
    configs = osp.join(REPO, 'configs', 'localvit_tnt')
    for name, arch, params in [('localvit-tnt-t', 'tiny', 6_261_064),
                               ('tnt-t', 'tnt-tiny', 6_069_784)]:
        cfg = load_config(osp.join(configs, f'{name}_8xb128_in1k.py'))
        assert cfg.model.backbone.arch == arch
        assert cfg.model.backbone.drop_path_rate == 0.1
        with torch.device('meta'):
            model = get_model(cfg)
        assert sum(p.numel() for p in model.parameters()) == params
    # one training step at 64x64: the official no-decay list holds
    torch.manual_seed(0)
    model = get_model(cfg)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {
        name: group['weight_decay']
        for group in optim_wrapper.optimizer.param_groups
        for name in [
            n for n, p in model.named_parameters()
            if any(p is q for q in group['params'])
        ]
    }
    for name in ('backbone.patch_pos', 'backbone.pixel_pos',
                 'backbone.cls_token', 'backbone.blocks.0.proj.bias'):
        assert decay[name] == 0, name
    assert decay['backbone.blocks.0.proj.weight'] == 0.05
    batch = dict(inputs=[
        torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(4)
    ])
    from mmpretrain.structures import DataSample
    batch['data_samples'] = [DataSample().set_gt_label(i) for i in range(4)]
    before = model.backbone.pixel_pos.detach().clone()
    model.train()
    losses = model.train_step(batch, optim_wrapper)
    assert torch.isfinite(losses['loss'])
    assert not torch.equal(model.backbone.pixel_pos, before)

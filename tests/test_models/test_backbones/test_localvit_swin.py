"""LocalViT-Swin: exact sizes, shifted windows against a naive reference,
odd input sizes, the dense configs, deploy, freezing."""
import math
import os.path as osp

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from torch.nn.modules.batchnorm import _BatchNorm

from localvit_mm.models import LocalViTSwin
from localvit_mm.models.backbones.localvit_swin import PatchMerging
from localvit_mm.models.layers import LocalityFeedForward, LocalViTBlock
from localvit_mm.models.layers.window_attention import WindowAttention
from localvit_mm.registry import ATTENTIONS

REPO = osp.dirname(
    osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
DET_CONFIG = 'configs/detection/mask-rcnn_localvit-swin-t_fpn_1x_coco.py'
SEG_CONFIG = ('configs/segmentation/'
              'upernet_localvit-swin-t_8xb2-160k_ade20k-512x512.py')
# A narrow four-stage arch for cheap tests.
NARROW = dict(
    embed_dims=16,
    depths=[2, 2, 2, 2],
    num_heads=[1, 2, 2, 4],
    ffn_cfg=dict(
        act_cfg=dict(type='HSwish'),
        channel_attention=dict(type='SE', reduction='embed_dims//4')))


def randomize_bn(model, seed=0):
    """Random BN affine parameters and running statistics."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, _BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) + 0.5
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
    return model


def classifier_params(arch):
    """Backbone (stage-4 output with its norm) + 1000-way linear head,
    counted on the meta device."""
    with torch.device('meta'):
        backbone = LocalViTSwin(arch, out_indices=3)
        head = nn.Linear(backbone.embed_dims[-1], 1000)
    return sum(p.numel() for m in (backbone, head) for p in m.parameters())


# LocalViT-Swin-T (official release) and the official Swin-T/S/B.
@pytest.mark.parametrize('arch,params', [('tiny', 29_079_010),
                                         ('swin-tiny', 28_288_354),
                                         ('swin-small', 49_606_258),
                                         ('swin-base', 87_768_224)])
def test_parameter_count_is_exact(arch, params):
    assert classifier_params(arch) == params


def test_relative_position_index_is_a_buffer_not_saved():
    model = LocalViTSwin(NARROW, out_indices=3)
    attn = model.layers[0].blocks[0].attn
    names = dict(model.named_parameters())
    assert 'layers.0.blocks.0.attn.relative_position_bias_table' in names
    assert not any('relative_position_index' in k for k in names)
    assert not any('relative_position_index' in k for k in model.state_dict())
    assert attn.relative_position_bias_table.shape == (13 * 13, 1)
    # index (i, j) = (dy + 6) * 13 + (dx + 6), dy/dx = offset of i from j
    index = attn.relative_position_index
    assert index.shape == (49, 49)
    assert index[0, 0] == 6 * 13 + 6
    assert index[48, 0] == 12 * 13 + 12 and index[0, 48] == 0
    assert index[1, 0] == 6 * 13 + 7 and index[7, 0] == 7 * 13 + 6


def test_arch_structure():
    with torch.device('meta'):
        model = LocalViTSwin('tiny')
        small = LocalViTSwin('small')
        base = LocalViTSwin('swin-base')
    assert [len(s.blocks) for s in model.layers] == [2, 2, 6, 2]
    assert [len(s.blocks) for s in small.layers] == [2, 2, 18, 2]
    assert base.embed_dims == [128, 256, 512, 1024]
    assert [s.blocks[0].attn.num_heads for s in base.layers] == \
        [4, 8, 16, 32]
    assert model.embed_dims == [96, 192, 384, 768]
    for i, stage in enumerate(model.layers):
        dims = 96 * 2**i
        for j, block in enumerate(stage.blocks):
            assert isinstance(block, LocalViTBlock)
            assert isinstance(block.attn, WindowAttention)
            assert block.attn.window_size == 7
            assert block.attn.shift_size == (3 if j % 2 else 0)
            assert block.norm1.eps == 1e-5
            assert isinstance(block.ffn, LocalityFeedForward)
            assert isinstance(block.ffn.act1, nn.Hardswish)
            # SE reduction dims // 4 on 4 * dims channels: 16 kept
            assert block.ffn.fc1.out_features == 4 * dims
            assert block.ffn.channel_attention.fc[0].out_features == 16
            assert not hasattr(block, 'norm2')
        if i < 3:
            assert stage.downsample.reduction.weight.shape == (2 * dims,
                                                               4 * dims)
            assert stage.downsample.reduction.bias is None
        else:
            assert stage.downsample is None
        assert getattr(model, f'norm{i}').eps == 1e-5
    assert model.patch_embed.proj.stride == (4, 4)
    assert model.patch_embed.norm.eps == 1e-5
    # drop path: linear 0 -> 0.1 over the 12 blocks
    last = model.layers[3].blocks[1].drop_path.drop_prob
    assert last == pytest.approx(0.1)
    assert model.layers[2].blocks[0].drop_path.drop_prob == \
        pytest.approx(0.1 * 4 / 11)
    with torch.device('meta'):
        baseline = LocalViTSwin('swin-tiny')
    block = baseline.layers[1].blocks[1]
    assert not hasattr(block, 'ffn') and block.norm2.eps == 1e-5
    assert isinstance(block.mlp.act, nn.GELU)
    assert block.mlp.fc1.out_features == 4 * 192


def test_bad_arguments():
    with pytest.raises(ValueError, match='arch'):
        LocalViTSwin('huge')
    with pytest.raises(ValueError, match='misses'):
        LocalViTSwin(dict(embed_dims=16, depths=[1, 1]))
    with pytest.raises(ValueError, match='differ in length'):
        LocalViTSwin(dict(embed_dims=16, depths=[1, 1], num_heads=[1]))
    with pytest.raises(ValueError, match='out_indices'):
        LocalViTSwin(NARROW, out_indices=4)
    with pytest.raises(ValueError, match='shift_size'):
        WindowAttention(16, 2, window_size=4, shift_size=4)


def test_window_attention_is_in_the_registry():
    attn = ATTENTIONS.build(
        dict(
            type='WindowAttention',
            embed_dims=8,
            num_heads=2,
            window_size=4,
            shift_size=2))
    assert isinstance(attn, WindowAttention) and attn.shift_size == 2
    block = LocalViTBlock(
        8,
        2,
        attn_cfg=dict(type='WindowAttention', window_size=4, shift_size=2))
    assert isinstance(block.attn, WindowAttention)


def naive_window_attention(attn, x, hw_shape, shift):
    """Reference SW-MSA: pad, roll, then for every window an explicit
    softmax over its tokens with the bias looked up by explicit offsets and
    the region mask built from the official slices."""
    B, _, C = x.shape
    H, W = hw_shape
    ws, heads = attn.window_size, attn.num_heads
    Hp, Wp = math.ceil(H / ws) * ws, math.ceil(W / ws) * ws
    grid = torch.zeros(B, Hp, Wp, C)
    grid[:, :H, :W] = x.view(B, H, W, C)
    region = torch.zeros(Hp, Wp, dtype=torch.long)
    if shift:
        grid = torch.roll(grid, (-shift, -shift), dims=(1, 2))
        slices = (slice(0, -ws), slice(-ws, -shift), slice(-shift, None))
        count = 0
        for hs in slices:
            for wsl in slices:
                region[hs, wsl] = count
                count += 1
    table = attn.relative_position_bias_table
    qkv = attn.qkv(grid)  # B, Hp, Wp, 3C
    out = torch.zeros(B, Hp, Wp, C)
    c = C // heads
    for top in range(0, Hp, ws):
        for left in range(0, Wp, ws):
            cells = [(top + i, left + j) for i in range(ws) for j in range(ws)]
            tokens = torch.stack([qkv[:, r, s] for r, s in cells], 1)
            q, k, v = tokens.view(B, len(cells), 3, heads, c).unbind(2)
            logits = torch.einsum('bnhc,bmhc->bhnm', q, k) * c**-0.5
            for n, (rn, sn) in enumerate(cells):
                for m, (rm, sm) in enumerate(cells):
                    index = (rn - rm + ws - 1) * (2 * ws - 1) + (
                        sn - sm + ws - 1)
                    logits[:, :, n, m] += table[index]
                    if region[rn, sn] != region[rm, sm]:
                        logits[:, :, n, m] -= 100
            y = torch.einsum('bhnm,bmhc->bnhc', logits.softmax(-1), v)
            for n, (r, s) in enumerate(cells):
                out[:, r, s] = y[:, n].reshape(B, C)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    return attn.proj(out[:, :H, :W].reshape(B, H * W, C))


@pytest.mark.parametrize('hw_shape,shift', [((9, 11), 2), ((8, 8), 2),
                                            ((9, 11), 0), ((5, 10), 0)])
def test_shifted_window_attention_equals_naive_reference(hw_shape, shift):
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window_size=4, shift_size=shift)
    nn.init.normal_(attn.relative_position_bias_table, std=1.)
    x = torch.randn(2, hw_shape[0] * hw_shape[1], 8)
    with torch.no_grad():
        torch.testing.assert_close(
            attn(x, hw_shape), naive_window_attention(attn, x, hw_shape,
                                                      shift))


def test_bias_table_gradient_equals_naive_reference():
    torch.manual_seed(0)
    attn = WindowAttention(8, 2, window_size=4, shift_size=2)
    nn.init.normal_(attn.relative_position_bias_table, std=1.)
    x = torch.randn(1, 9 * 10, 8)
    attn(x, (9, 10)).square().sum().backward()
    ours = attn.relative_position_bias_table.grad.clone()
    attn.zero_grad()
    naive_window_attention(attn, x, (9, 10), 2).square().sum().backward()
    torch.testing.assert_close(ours, attn.relative_position_bias_table.grad)


def test_lattice_within_one_window_is_not_shifted():
    """As in the official code: a lattice whose shorter side fits in the
    window is not shifted (224 inputs: stage 4 is 7x7)."""
    torch.manual_seed(0)
    shifted = WindowAttention(8, 2, window_size=4, shift_size=2)
    plain = WindowAttention(8, 2, window_size=4, shift_size=0)
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(1, 4 * 9, 8)
    with torch.no_grad():
        torch.testing.assert_close(shifted(x, (4, 9)), plain(x, (4, 9)))
        assert not torch.allclose(
            shifted(x[:, :25], (5, 5)), plain(x[:, :25], (5, 5)))


@pytest.mark.parametrize('hw_shape', [(6, 8), (5, 7)])
def test_patch_merging_follows_the_official_order(hw_shape):
    torch.manual_seed(0)
    merge = PatchMerging(4)
    H, W = hw_shape
    x = torch.randn(2, H * W, 4)
    grid = nn.functional.pad(x.view(2, H, W, 4), (0, 0, 0, W % 2, 0, H % 2))
    official = torch.cat([
        grid[:, 0::2, 0::2], grid[:, 1::2, 0::2], grid[:, 0::2, 1::2],
        grid[:, 1::2, 1::2]
    ], -1)
    out, new_shape = merge(x, hw_shape)
    assert new_shape == ((H + 1) // 2, (W + 1) // 2)
    expected = merge.reduction(merge.norm(official.flatten(1, 2)))
    torch.testing.assert_close(out, expected)


def test_forward_backward_224():
    torch.manual_seed(0)
    model = LocalViTSwin('tiny', drop_path_rate=0.2)
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 224, 224))
    assert [tuple(o.shape)
            for o in outs] == [(2, 96, 56, 56), (2, 192, 28, 28),
                               (2, 384, 14, 14), (2, 768, 7, 7)]
    sum(o.mean() for o in outs).backward()
    table = model.layers[3].blocks[1].attn.relative_position_bias_table
    assert table.grad is not None and table.grad.abs().sum() > 0
    assert all(
        p.grad is not None and torch.isfinite(p.grad).all()
        for p in model.parameters())


@pytest.mark.parametrize(
    'arch', [NARROW, dict(NARROW, ffn_cfg=None)], ids=['locality', 'plain'])
def test_odd_size_forward_backward(arch):
    """3x97x161: neither the patch (4) nor the window (7) divides it."""
    torch.manual_seed(0)
    model = LocalViTSwin(arch, drop_path_rate=0.1)
    model.init_weights()
    model.train()
    outs = model(torch.randn(2, 3, 97, 161))
    assert [tuple(o.shape) for o in outs] == [(2, 16, 25, 41), (2, 32, 13, 21),
                                              (2, 64, 7, 11), (2, 128, 4, 6)]
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_swin_baseline_equals_mmdet_swin_transformer():
    """The locality-off arch is Swin: our weights, renamed by mmdet's own
    converter of official Swin checkpoints (which reorders patch merging
    from the official concatenation to mmdet's unfold), give mmdet's
    SwinTransformer outputs on an input neither patch nor window divides
    (every stage wider than the window, so both shift everywhere)."""
    from mmdet.models.backbones.swin import SwinTransformer, swin_converter
    torch.manual_seed(0)
    arch = dict(NARROW, ffn_cfg=None)
    ours = LocalViTSwin(arch, drop_path_rate=0.)
    ours.init_weights()
    theirs = SwinTransformer(
        embed_dims=16,
        depths=[2, 2, 2, 2],
        num_heads=[1, 2, 2, 4],
        window_size=7,
        drop_path_rate=0.,
        out_indices=(0, 1, 2, 3))
    converted = {
        k[len('backbone.'):]: v
        for k, v in swin_converter(ours.state_dict()).items()
    }
    missing, unexpected = theirs.load_state_dict(converted, strict=False)
    assert unexpected == [] and missing and all(
        k.endswith('relative_position_index') for k in missing)
    ours.eval()
    theirs.eval()
    x = torch.randn(2, 3, 260, 300)  # stages 65x75, 33x38, 17x19, 9x10
    with torch.no_grad():
        for out, ref in zip(ours(x), theirs(x)):
            torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)


def _backbone_cfg(config):
    cfg = Config.fromfile(osp.join(REPO, config))
    backbone = cfg.model.backbone.to_dict()
    backbone.pop('init_cfg')
    return cfg, backbone


@pytest.mark.parametrize('config,scope', [(DET_CONFIG, 'mmdet'),
                                          (SEG_CONFIG, 'mmseg')])
def test_dense_config_backbone_gives_the_pyramid(config, scope):
    import importlib

    import localvit_mm.models  # noqa: F401
    registry = importlib.import_module(f'{scope}.registry').MODELS
    cfg, backbone = _backbone_cfg(config)
    assert cfg.default_scope == scope
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    model = registry.build(backbone)
    assert type(model) is LocalViTSwin
    assert [type(b.ffn.norm1).__name__ for b in model.layers[0].blocks] == \
        ['SyncBatchNorm'] * 2
    randomize_bn(model).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 97, 161))
    neck = cfg.model.neck.in_channels if scope == 'mmdet' else \
        cfg.model.decode_head.in_channels
    assert [o.shape[1] for o in outs] == list(neck) == [96, 192, 384, 768]
    assert [tuple(o.shape[2:]) for o in outs] == [(25, 41), (13, 21), (7, 11),
                                                  (4, 6)]
    assert all(torch.isfinite(o).all() for o in outs)


def test_switch_to_deploy_keeps_the_output():
    torch.manual_seed(0)
    model = LocalViTSwin(NARROW)
    model.init_weights()
    randomize_bn(model).eval()
    x = torch.randn(2, 3, 61, 75)
    with torch.no_grad():
        expected = model(x)
        model.switch_to_deploy()
        outs = model(x)
    assert not any(isinstance(m, _BatchNorm) for m in model.modules())
    for out, ref in zip(outs, expected):
        torch.testing.assert_close(
            out, ref, rtol=1e-5, atol=1e-5 * ref.abs().max().item())
    deploy = LocalViTSwin(NARROW, ffn_cfg=dict(deploy=True)).eval()
    deploy.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(deploy(x)[3], outs[3])


def _train_step(model, size=(40, 56)):
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=0.1)
    loss = sum(o.square().mean() for o in model(torch.randn(2, 3, *size)))
    loss.backward()
    optimizer.step()


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_frozen_stages_stay_frozen():
    model = LocalViTSwin(NARROW, frozen_stages=2, drop_path_rate=0.)
    model.init_weights()
    before = _snapshot(model)
    _train_step(model)
    assert not model.patch_embed.training and not model.layers[1].training
    assert not model.norm1.training and model.layers[2].training
    after = model.state_dict()
    frozen = ('patch_embed.', 'layers.0.', 'layers.1.', 'norm0.', 'norm1.')
    for key, value in before.items():
        if key.startswith(frozen):  # weights and BN running statistics
            torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    for key in ('layers.2.blocks.0.attn.qkv.weight',
                'layers.2.blocks.1.attn.proj.weight',
                'layers.2.blocks.0.ffn.norm1.running_mean',
                'layers.2.downsample.reduction.weight', 'norm3.bias'):
        assert not torch.equal(after[key], before[key]), key
    assert not any(p.requires_grad for p in model.layers[1].parameters())
    assert all(p.grad is None for p in model.layers[1].parameters())
    # the bias tables train too (their first gradients are tiny at init)
    table = model.layers[2].blocks[1].attn.relative_position_bias_table
    assert table.requires_grad and table.grad.abs().sum() > 0
    only_embed = LocalViTSwin(NARROW, frozen_stages=0)
    assert not any(p.requires_grad
                   for p in only_embed.patch_embed.parameters())
    assert all(p.requires_grad for p in only_embed.layers.parameters())


def test_norm_eval_freezes_batchnorm_statistics():
    model = LocalViTSwin(
        NARROW,
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
    assert not torch.equal(after['layers.0.blocks.0.ffn.fc1.weight'],
                           before['layers.0.blocks.0.ffn.fc1.weight'])
    model = LocalViTSwin(NARROW, drop_path_rate=0.)
    before = _snapshot(model)
    _train_step(model)
    assert not torch.equal(model.layers[0].blocks[0].ffn.norm1.running_mean,
                           before['layers.0.blocks.0.ffn.norm1.running_mean'])


def test_with_cp_matches_plain_forward_and_backward():
    torch.manual_seed(0)
    plain = LocalViTSwin(NARROW, drop_path_rate=0., norm_eval=True)
    ckpt = LocalViTSwin(
        NARROW, drop_path_rate=0., norm_eval=True, with_cp=True)
    ckpt.load_state_dict(plain.state_dict())
    x = torch.randn(1, 3, 40, 56)
    grads = []
    for model in (plain, ckpt):
        model.train()
        sum(o.sum() for o in model(x)).backward()
        grads.append(model.layers[1].blocks[1].attn.qkv.weight.grad)
    torch.testing.assert_close(grads[0], grads[1])


def test_init_from_classification_checkpoint(tmp_path):
    """A classifier's weights initialize the dense backbone of the Mask R-CNN
    config (narrow arch in both); the stage norms the classifier has not
    (norm0..2) start at 1 / 0."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmpretrain.registry import MODELS as MMPRETRAIN_MODELS

    import localvit_mm.models  # noqa: F401
    cfg = Config.fromfile(
        osp.join(REPO, 'configs/localvit_swin/localvit-swin-t_8xb128_in1k.py'))
    cfg.model.backbone.arch = NARROW
    cfg.model.head.in_channels = 128
    classifier = MMPRETRAIN_MODELS.build(cfg.model)
    classifier.init_weights()
    path = str(tmp_path / 'localvit-swin-t_in1k.pth')
    torch.save(dict(state_dict=classifier.state_dict()), path)

    _, backbone = _backbone_cfg(DET_CONFIG)
    backbone['arch'] = NARROW
    backbone['init_cfg'] = dict(
        type='Pretrained', checkpoint=path, prefix='backbone.')
    backbone['ffn_cfg']['norm_cfg']['type'] = 'BN'
    model = MMDET_MODELS.build(backbone)
    model.init_weights()
    source = classifier.backbone.state_dict()
    own = model.state_dict()
    assert set(own) - set(source) == {
        f'norm{i}.{p}'
        for i in range(3)
        for p in ('weight', 'bias')
    }
    for key, value in source.items():
        torch.testing.assert_close(own[key], value, msg=key)
    assert torch.equal(model.norm0.weight, torch.ones(16))

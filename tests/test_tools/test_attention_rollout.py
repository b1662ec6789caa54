"""Attention roll-out: the method on hand-made attention, the capture from
real modules, and tools/visualization/attention_rollout.py on real images."""
import importlib.util
import math
import os.path as osp
import re
import textwrap

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO

from localvit_mm.analysis import rollout
from localvit_mm.models.backbones import (LocalViT, LocalViTPVT, LocalViTSwin,
                                          LocalViTT2T, LocalViTTNT)
from localvit_mm.models.layers import resize_pos_embed
from localvit_mm.utils import UserInputError, run_main

pytestmark = pytest.mark.usefixtures('restore_default_scope')

# Two layers over 3 tokens, two heads each. Layer 1: the identity and the
# cyclic shift P (mean (I + P) / 2); layer 2: two heads whose mean is
# [[0, .5, .5], [1, 0, 0], [0, 1, 0]].
EYE = torch.eye(3)
SHIFT = torch.tensor([[0., 1, 0], [0, 0, 1], [1, 0, 0]])
LAYER1 = torch.stack([EYE, SHIFT])[None]
LAYER2 = torch.stack([
    torch.tensor([[0., 1, 0], [1, 0, 0], [0, 1, 0]]),
    torch.tensor([[0., 0, 1], [1, 0, 0], [0, 1, 0]])
])[None]
# By hand: mean heads, Â = (A + I) / 2,
#   Â1 = [[.75, .25, 0], [0, .75, .25], [.25, 0, .75]]
#   Â2 = [[.5, .25, .25], [.5, .5, 0], [0, .5, .5]]
#   R = Â2 Â1, e.g. row 0 = .5 [.75, .25, 0] + .25 [0, .75, .25]
#                             + .25 [.25, 0, .75] = [.4375, .3125, .25]
MEAN_ROLLOUT = [[0.4375, 0.3125, 0.25], [0.375, 0.5, 0.125],
                [0.125, 0.375, 0.5]]
# max heads: A1 = I + P, Â1 = (2I + P) / 3; A2 + I = [[1, 1, 1], [1, 1, 0],
# [0, 1, 1]], rows / 3, 2, 2. R row 0 = (1/3) (sum of Â1's rows) = 1/3 each.
MAX_ROLLOUT = [[1 / 3, 1 / 3, 1 / 3], [1 / 3, 1 / 2, 1 / 6],
               [1 / 6, 1 / 3, 1 / 2]]
# min heads: A1 = 0, so Â1 = I; A2 = [[0, 0, 0], [1, 0, 0], [0, 1, 0]].
MIN_ROLLOUT = [[1, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5]]


def load_tool():
    path = osp.join(REPO, 'tools', 'visualization', 'attention_rollout.py')
    spec = importlib.util.spec_from_file_location('attention_rollout', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize('fusion,expected', [('mean', MEAN_ROLLOUT),
                                             ('max', MAX_ROLLOUT),
                                             ('min', MIN_ROLLOUT)])
def test_rollout_of_hand_made_two_layers(fusion, expected):
    result = rollout.rollout([LAYER1, LAYER2], fusion)
    assert result.shape == (1, 3, 3)
    torch.testing.assert_close(result[0], torch.tensor(expected))
    torch.testing.assert_close(result.sum(-1), torch.ones(1, 3))
    # The row-vector form gives the same rows.
    records = [rollout.AttentionRecord(a, (1, 3)) for a in (LAYER1, LAYER2)]
    rows = rollout.propagate(torch.eye(3)[None], records, fusion)
    torch.testing.assert_close(rows[0], torch.tensor(expected))


def test_class_token_rollout_of_hand_made_layers():
    # Token 0 is the class token, tokens 1, 2 a 1x2 lattice: the map is
    # row 0 of R without its own column and sums to 1 - .4375.
    records = [rollout.AttentionRecord(a, (1, 2), 1) for a in (LAYER1, LAYER2)]
    heat = rollout.class_token_rollout(records)
    torch.testing.assert_close(heat, torch.tensor([[[0.3125, 0.25]]]))
    assert heat.sum().item() == pytest.approx(0.5625)
    # Class and distillation tokens in front of a 1x1 lattice.
    records = [rollout.AttentionRecord(a, (1, 1), 2) for a in (LAYER1, LAYER2)]
    cls_map = rollout.class_token_rollout(records)
    dist_map = rollout.class_token_rollout(records, token_index=1)
    assert (cls_map.flatten().tolist(), dist_map.flatten().tolist()) == \
        ([0.25], [0.125])
    with pytest.raises(UserInputError, match='token 2 is not one'):
        rollout.class_token_rollout(records, token_index=2)


def test_dense_rollout_picks_the_region_and_removes_the_mean():
    # No class token, a 1x3 lattice; the region holds tokens 1 and 2.
    records = [rollout.AttentionRecord(a, (1, 3)) for a in (LAYER1, LAYER2)]
    coverage = torch.tensor([[0.2, 0.6, 1.0]])
    weights = rollout.region_token_weights(coverage)
    assert weights.tolist() == [0, 0.5, 0.5]
    heat = rollout.dense_rollout(records, weights)
    # Mean of rows 1, 2: [.25, .4375, .3125]; mean of all rows:
    # [.3125, .395833, .291667]; difference [-1/16, 1/24, 1/48].
    torch.testing.assert_close(heat, torch.tensor([[[-1 / 16, 1 / 24,
                                                     1 / 48]]]))
    assert abs(heat.sum().item()) < 1e-7
    # The whole image as the region: nothing left after the mean.
    everything = rollout.dense_rollout(records, torch.full((3, ), 1 / 3))
    assert everything.abs().max().item() < 1e-7


def test_region_weights_fall_back_to_the_most_covered_tokens():
    coverage = torch.tensor([[0.1, 0.3], [0.3, 0.0]])
    assert rollout.region_token_weights(coverage).tolist() == [0, 0.5, 0.5, 0]
    with pytest.raises(UserInputError, match='covers no token'):
        rollout.region_token_weights(torch.zeros(2, 2))


def reference_attention(attn_module, tokens, hw_shape):
    """softmax(q k^T / sqrt(d)) from the module's q/k/v projection."""
    qkv_proj = attn_module.qkv
    if isinstance(qkv_proj, torch.nn.Linear):
        qkv = F.linear(tokens, qkv_proj.weight, qkv_proj.bias)
    else:  # LIFE
        qkv = qkv_proj(tokens, hw_shape)
    B, N, _ = tokens.shape
    heads = attn_module.num_heads
    q, k, v = qkv.reshape(B, N, 3, heads, -1).permute(2, 0, 3, 1, 4)
    probs = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]), -1)
    return probs, v


@pytest.mark.parametrize('attn_cfg', [None, dict(qkv_proj='life')])
def test_captured_attention_equals_reference(attn_cfg):
    torch.manual_seed(0)
    model = LocalViT(
        arch=dict(embed_dims=24, num_layers=2, num_heads=2, mlp_ratio=2),
        img_size=(16, 20),
        patch_size=4,
        attn_cfg=attn_cfg)
    model.init_weights()
    model.eval()
    image = torch.randn(1, 3, 16, 20)
    with torch.no_grad():
        expected_out = model(image)[0]
        with rollout.capture_attention(model, head_fusion=None) as records:
            out = model(image)[0]
        # Capturing leaves the forward and, afterwards, the hooks alone.
        torch.testing.assert_close(out, expected_out, rtol=0, atol=0)
        assert not any(m._forward_hooks for m in model.modules())
        assert [(r.name, r.hw_shape, r.num_extra_tokens, r.sr_ratio)
                for r in records] == [('blocks.0.attn', (4, 5), 1, 1),
                                      ('blocks.1.attn', (4, 5), 1, 1)]
        tokens, hw_shape = model.patch_embed(image)
        tokens = torch.cat([model.cls_token, tokens], 1) + resize_pos_embed(
            model.pos_embed, model.patch_resolution, hw_shape, 'bicubic', 1)
        for block, record in zip(model.blocks, records):
            normed = block.norm1(tokens)
            probs, v = reference_attention(block.attn, normed, hw_shape)
            assert record.attn.shape == (1, 2, 21, 21)
            torch.testing.assert_close(record.attn, probs)
            # The captured probabilities are those the fused kernel used.
            merged = (record.attn @ v).transpose(1, 2).reshape(1, 21, 24)
            torch.testing.assert_close(
                block.attn.proj(merged), block.attn(normed, hw_shape))
            tokens = block(tokens, hw_shape, 1)


def test_spatial_reduction_keys_spread_to_square_rows():
    # A 3x5 lattice, sr 2: keys on a 1x2 lattice, key 0 pools tokens
    # (0..1, 0..1), key 1 (0..1, 2..3); row 2 and column 4 are pooled by none.
    attn = torch.softmax(torch.randn(1, 2, 15, 2), -1)
    record = rollout.AttentionRecord(attn, (3, 5), 0, sr_ratio=2)
    assert record.key_shape == (1, 2)
    square = rollout.square_attention(record)
    assert square.shape == (1, 15, 15)
    torch.testing.assert_close(square.sum(-1), torch.ones(1, 15))
    fused = attn.mean(1)[0]
    for token, key in [(0, 0), (1, 0), (5, 0), (6, 0), (2, 1), (3, 1), (7, 1),
                       (8, 1)]:
        torch.testing.assert_close(square[0, :, token], fused[:, key] / 4)
    assert square[0, :, [4, 9, 10, 11, 12, 13, 14]].abs().max() == 0


def test_pvt_rollout_equals_the_explicit_matrix_product():
    torch.manual_seed(0)
    model = LocalViTPVT(
        arch=dict(
            embed_dims=[8, 16],
            num_layers=[1, 1],
            num_heads=[1, 2],
            mlp_ratios=[2, 2],
            sr_ratios=[2, 1]),
        patch_sizes=(4, 2),
        pretrain_img_size=20,
        out_indices=(0, 1))
    model.init_weights()
    model.eval()
    with torch.no_grad(), rollout.capture_attention(model) as records:
        model(torch.randn(1, 3, 20, 20))
    # Stage 1: a 5x5 lattice, keys on 2x2; stage 2: ceil(5 / 2) = 3x3.
    assert [(r.hw_shape, r.sr_ratio, tuple(r.attn.shape))
            for r in records] == [((5, 5), 2, (1, 25, 4)),
                                  ((3, 3), 1, (1, 9, 9))]
    stage1 = rollout.square_attention(records[0])
    torch.testing.assert_close(stage1.sum(-1), torch.ones(1, 25))
    # Stage 2's tokens upsampled onto stage 1's: each spreads its mass over
    # the 2x2 (at the border 2x1, 1x2, 1x1) block it was embedded from.
    upsample = rollout.spread_to_lattice(torch.eye(9), (3, 3), (5, 5))
    torch.testing.assert_close(upsample.sum(-1), torch.ones(9))
    assert upsample[8].nonzero().flatten().tolist() == [24]
    assert upsample[0].tolist()[:7] == [0.25, 0.25, 0, 0, 0, 0.25, 0.25]
    full = rollout.rollout([records[1].attn]) @ upsample @ rollout.rollout(
        [stage1])
    box = torch.zeros(9)
    box[[4, 5]] = 0.5  # the two tokens of a box on stage 2's lattice
    heat = rollout.dense_rollout(records, box)
    expected = box @ full[0] - full[0].mean(0)
    torch.testing.assert_close(heat.flatten(), expected)
    assert abs(heat.sum().item()) < 1e-6
    assert heat.shape == (1, 5, 5)


def test_tnt_and_t2t_roll_out_their_patch_attention():
    tnt = LocalViTTNT(
        dict(
            embed_dims=24,
            inner_dims=6,
            num_layers=2,
            num_heads=2,
            inner_num_heads=2),
        img_size=32).eval()
    with torch.no_grad(), rollout.capture_attention(tnt) as records:
        tnt(torch.randn(1, 3, 32, 32))
    # The outer attention only: the inner one stays inside each patch.
    assert [(r.name, r.hw_shape, r.num_extra_tokens)
            for r in records] == [('blocks.0.outer.attn', (2, 2), 1),
                                  ('blocks.1.outer.attn', (2, 2), 1)]
    assert rollout.class_token_rollout(records).shape == (1, 2, 2)
    t2t = LocalViTT2T(
        dict(
            embed_dims=32,
            num_layers=2,
            num_heads=2,
            mlp_ratio=2,
            token_dims=16)).eval()
    with torch.no_grad(), rollout.capture_attention(t2t) as records:
        t2t(torch.randn(1, 3, 32, 32))
    assert [(r.name, r.hw_shape)
            for r in records] == [('blocks.0.attn', (2, 2)),
                                  ('blocks.1.attn', (2, 2))]


def test_window_attention_is_refused():
    swin = LocalViTSwin(
        dict(embed_dims=16, depths=[1, 1], num_heads=[1, 2]), out_indices=1)
    with pytest.raises(rollout.UnsupportedAttentionError) as error:
        with rollout.capture_attention(swin):
            pass
    assert str(error.value) == (
        'LocalViTSwin uses window attention (layers.0.blocks.0.attn): it '
        'attends within windows only, so there is no global attention to '
        'roll out; use LocalViT/DeiT, LocalViT-PVT, LocalViT-T2T or '
        'LocalViT-TNT')


TINY_LOCALVIT = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True, embed_dims=32, num_layers=2, num_heads=2,
            mlp_ratio=2)),
    head=dict(in_channels=32))
"""

TINY_SEGMENTOR = """
default_scope = 'mmseg'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True),
    backbone=dict(
        type='LocalViTPVT',
        arch=dict(
            embed_dims=[8, 16],
            num_layers=[1, 1],
            num_heads=[1, 2],
            mlp_ratios=[2, 2],
            sr_ratios=[2, 1]),
        patch_sizes=(4, 2),
        pretrain_img_size=64,
        out_indices=(0, 1),
        drop_path_rate=0.),
    decode_head=dict(
        type='FCNHead',
        in_channels=16,
        in_index=1,
        channels=8,
        num_convs=1,
        num_classes=3,
        loss_decode=dict(type='CrossEntropyLoss')),
    test_cfg=dict(mode='whole'))
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='PackSegInputs')
]
test_dataloader = dict(
    dataset=dict(metainfo=dict(classes=('background', 'shirt', 'shoe'))))
"""


@pytest.fixture(scope='module')
def fashion_image(fashion_mnist, tmp_path_factory):
    """The first Fashion-MNIST test image (an ankle boot) as a PNG."""
    with open(osp.join(fashion_mnist, 't10k-images-idx3-ubyte'), 'rb') as f:
        f.seek(16)
        pixels = np.frombuffer(f.read(28 * 28), np.uint8).reshape(28, 28)
    path = str(tmp_path_factory.mktemp('image') / 'ankle_boot.png')
    cv2.imwrite(path, pixels)
    return path


def write_model(tool, tmp_path, body, edit=None):
    """A config and a checkpoint of its freshly initialized model."""
    config = tmp_path / 'config.py'
    config.write_text(textwrap.dedent(body))
    cfg = tool.load_config(str(config))
    torch.manual_seed(0)
    model = tool.build_model_from_config(cfg)
    model.init_weights()
    state = model.state_dict()
    if edit:
        edit(state)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(state_dict=state), checkpoint)
    return str(config), str(checkpoint)


def test_cli_writes_overlays_of_the_image_size(fashion_image, tmp_path,
                                               capsys):
    tool = load_tool()
    base = osp.join(REPO, 'configs', 'quickstart',
                    'localvit-tiny_2xb32_fashion-mnist.py')
    config, checkpoint = write_model(tool, tmp_path,
                                     TINY_LOCALVIT.format(base=base))
    capsys.readouterr()  # the initialization's log
    out = str(tmp_path / 'cls.png')
    tool.main([config, checkpoint, fashion_image, '--out', out])
    lines = capsys.readouterr().out.splitlines()
    assert re.fullmatch(
        r'class-token roll-out \(token 0\), heads fused by mean, 2 attention '
        r'layers, map on a 7x7 token lattice from 0\.0\d+ to 0\.0\d+; '
        r'predicted class \d \([\w/ -]+\), score 0\.\d{3}', lines[0]), lines[0]
    assert lines[1] == f'written {out} (28x28)'
    assert cv2.imread(out).shape == (28, 28, 3)

    # Dense roll-out of a box on the right half: 7x7 tokens of 4 pixels,
    # columns 4..6 inside (coverage 1) and column 3 half (.5): 28 tokens.
    out = str(tmp_path / 'dense.png')
    tool.main([
        config, checkpoint, fashion_image, '--out', out, '--mode', 'dense',
        '--box', '14', '0', '28', '28', '--head-fusion', 'max'
    ])
    line = capsys.readouterr().out.splitlines()[0]
    assert re.fullmatch(
        r'dense roll-out of 28 of 49 output tokens minus the global mean, '
        r'heads fused by max, 2 attention layers, map on a 7x7 token lattice '
        r'from -\S+ to \S+; box \[14\.0, 0\.0, 28\.0, 28\.0\]', line), line
    picture = cv2.imread(out)
    assert picture.shape == (28, 28, 3)
    # The box is outlined in white.
    assert picture[0, 14:28].min() == 255

    # One-line errors.
    with pytest.raises(SystemExit) as stop:
        run_main(tool.main, [
            config, checkpoint, fashion_image, '--out', out, '--mode', 'dense'
        ])
    assert stop.value.code == 2
    assert capsys.readouterr().err == (
        'error: dense roll-out on a classifier needs --box X1 Y1 X2 Y2 (a '
        'classifier predicts no region)\n')


def test_cli_segmentor_explains_its_predicted_mask(fashion_image, tmp_path,
                                                   capsys):
    tool = load_tool()

    def predict_shirt(state):  # class 1 wins everywhere
        state['decode_head.conv_seg.bias'][:] = torch.tensor([0., 50., 0.])

    config, checkpoint = write_model(tool, tmp_path, TINY_SEGMENTOR,
                                     predict_shirt)
    capsys.readouterr()  # the initialization's log
    out = str(tmp_path / 'seg.png')
    tool.main([config, checkpoint, fashion_image, '--out', out])
    lines = capsys.readouterr().out.splitlines()
    # 28 -> 64 pixels: stage 1 16x16 tokens, stage 2 8x8.
    # Every token is in the region: nothing is left after the global mean.
    found = re.fullmatch(
        r'dense roll-out of 64 of 64 output tokens minus the global mean, '
        r'heads fused by mean, 2 attention layers, map on a 16x16 token '
        r'lattice from (\S+) to (\S+); predicted mask of class 1 \(shirt\) '
        r'\(784 pixels; predicted: 1 \(shirt\) 784\)', lines[0])
    assert found, lines[0]
    assert max(abs(float(v)) for v in found.groups()) < 1e-9
    assert lines[1] == f'written {out} (28x28)'
    assert cv2.imread(out).shape == (28, 28, 3)

    # Window attention is refused before any weights are read.
    swin = osp.join(REPO, 'configs', 'segmentation',
                    'fpn_localvit-swin-t_labelme.py')
    with pytest.raises(SystemExit):
        run_main(tool.main, [swin, 'no-such.pth', fashion_image, '--out', out])
    assert capsys.readouterr().err.startswith(
        'error: LocalViTSwin uses window attention (layers.0.blocks.0.attn)')


TINY_DETECTOR = """
_base_ = [{base!r}]
model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims=[8, 8, 16, 16],
            num_layers=[1, 1, 1, 1],
            num_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
            sr_ratios=[8, 4, 2, 1])),
    neck=dict(in_channels=[8, 8, 16, 16], out_channels=16),
    bbox_head=dict(in_channels=16, feat_channels=16, stacked_convs=1),
    test_cfg=dict(score_thr=0.0))
"""


def test_cli_detector_explains_its_best_box(fashion_image, tmp_path, capsys):
    tool = load_tool()
    base = osp.join(REPO, 'configs', 'detection',
                    'retinanet_localvit-pvt-t_fpn_deepforest.py')
    config, checkpoint = write_model(tool, tmp_path,
                                     TINY_DETECTOR.format(base=base))
    capsys.readouterr()  # the initialization's log
    out = str(tmp_path / 'det.png')
    tool.main([config, checkpoint, fashion_image, '--out', out])
    lines = capsys.readouterr().out.splitlines()
    # 28 -> 128 pixels: stage 1 32x32 tokens, stage 4 4x4 (stride 32).
    assert re.fullmatch(
        r'dense roll-out of \d+ of 16 output tokens minus the global mean, '
        r'heads fused by mean, 4 attention layers, map on a 32x32 token '
        r'lattice from \S+ to \S+; predicted box \[.*\] of class 0 '
        r'\(tree\), score 0\.\d+', lines[0]), lines[0]
    assert lines[1] == f'written {out} (28x28)'
    assert cv2.imread(out).shape == (28, 28, 3)

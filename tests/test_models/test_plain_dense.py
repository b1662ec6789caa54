"""Plain LocalViT for dense prediction: mmseg's DPTHead (every readout) and
the simple feature pyramid of the mmdet configs consume LocalViT outputs at
input sizes the patch does not divide."""
import os.path as osp

import pytest
import torch
from conftest import REPO

from localvit_mm.utils import load_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')

DPT_CONFIG = 'configs/segmentation/dpt_localvit-tiny_labelme.py'
PYRAMID_CONFIG = \
    'configs/detection/retinanet_localvit-tiny_simple-pyramid_1x_coco.py'
# 200x264 pixels: a 13x17 lattice of 16-pixel patches once padded to
# 208x272, odd in both directions
ODD_SIZE = (200, 264)
LATTICE = (13, 17)


def build(codebase, cfg):
    import importlib
    importlib.import_module(f'{codebase}.models')
    import localvit_mm.models  # noqa: F401 (registers in the codebases)
    registry = importlib.import_module(f'{codebase}.registry').MODELS
    return registry.build(cfg)


def test_padded_patches_cover_the_image():
    """The last row and column of patches hold the border pixels: a change
    there reaches only the token of that border patch."""
    backbone = build('mmseg', dict(type='LocalViT', arch='tiny'))
    images = torch.randn(1, 3, *ODD_SIZE)
    moved = images.clone()
    moved[..., -1, -1] += 1.  # the bottom-right pixel
    with torch.no_grad():
        tokens, hw_shape = backbone.patch_embed(images)
        tokens_moved, _ = backbone.patch_embed(moved)
    assert hw_shape == LATTICE
    changed = (tokens - tokens_moved).abs().sum(-1)[0] > 0
    assert changed.nonzero().flatten().tolist() == [13 * 17 - 1]


@pytest.mark.parametrize('readout', ['ignore', 'add', 'project'])
def test_dpt_head_at_an_odd_size(readout):
    """DPTHead takes blocks 2, 5, 8, 11 as [map, class token] pairs and
    gives logits; the readout changes the result and only 'project' has
    parameters of its own."""
    cfg = load_config(osp.join(REPO, DPT_CONFIG)).model
    torch.manual_seed(0)
    backbone = build('mmseg', cfg.backbone).eval()
    head = build('mmseg', dict(cfg.decode_head, readout_type=readout)).eval()
    with torch.no_grad():
        outs = backbone(torch.randn(2, 3, *ODD_SIZE))
        assert [(x.shape, cls.shape) for x, cls in outs] == \
            [((2, 192, *LATTICE), (2, 192))] * 4
        logits = head(outs)
    # reassembled at 4x, 2x, 1x and 1/2 (a stride-2 3x3 conv: 7x9) of 13x17;
    # the fusion doubles the coarsest level four times and resizes each finer
    # one to it: 16 x 7x9 (the segmentor resizes the logits to the image)
    assert logits.shape == (2, 8, 112, 144)
    assert torch.isfinite(logits).all()
    projects = [
        name for name, _ in head.named_parameters() if 'readout' in name
    ]
    assert bool(projects) == (readout == 'project')
    with torch.no_grad():  # the class token reaches the logits or not
        shifted = [[x, cls + 1.] for x, cls in outs]
        assert torch.equal(head(shifted), logits) == (readout == 'ignore')


def test_simple_pyramid_at_an_odd_size():
    """The detection neck (mmseg's Feature2Pyramid then mmdet's
    ChannelMapper) turns four stride-16 maps into RetinaNet's five levels
    at strides 8 to 128, whatever the lattice."""
    cfg = load_config(osp.join(REPO, PYRAMID_CONFIG)).model
    backbone = build(
        'mmdet',
        dict(
            cfg.backbone,
            init_cfg=None,
            ffn_cfg=dict(norm_cfg=dict(type='BN')))).eval()
    neck = build('mmdet', cfg.neck).eval()
    assert [type(m).__name__
            for m in neck] == ['Feature2Pyramid', 'ChannelMapper']
    with torch.no_grad():
        outs = backbone(torch.randn(1, 3, *ODD_SIZE))
        assert [x.shape for x in outs] == [(1, 192, *LATTICE)] * 4
        levels = neck(outs)
    assert [tuple(x.shape[2:]) for x in levels] == [(26, 34), (13, 17), (6, 8),
                                                    (3, 4), (2, 2)]
    assert all(x.shape[1] == 256 for x in levels)


def test_input_smaller_than_a_patch_is_refused():
    """Padding would turn it into one patch of mostly zeros."""
    backbone = build('mmseg', dict(type='LocalViT', arch='tiny'))
    with pytest.raises(
            RuntimeError, match='input 12x40 is smaller than the '
            '16x16 patch'):
        backbone(torch.randn(1, 3, 12, 40))

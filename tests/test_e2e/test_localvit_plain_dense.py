"""Plain LocalViT-T/S (no pyramid of its own) for dense prediction: DPT in
mmseg, RetinaNet over a simple feature pyramid in mmdet. Every such config
takes a training step on real images; the CPU-sized ones learn from scratch
through tools/train.py."""
import os.path as osp

import pytest
import torch
from conftest import REPO
from dense_runs import background_only_miou, mean, metrics, prepare, train
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.runner import Runner

from localvit_mm.utils import load_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')

DPT_LABELME = 'configs/segmentation/dpt_localvit-tiny_labelme.py'
PYRAMID_DEEPFOREST = \
    'configs/detection/retinanet_localvit-tiny_simple-pyramid_deepforest.py'
# each config with the CPU-sized config whose real images it steps on
STEP_CONFIGS = {
    'configs/segmentation/dpt_localvit-tiny_8xb2-160k_ade20k-512x512.py':
    DPT_LABELME,
    'configs/segmentation/dpt_localvit-small_8xb2-160k_ade20k-512x512.py':
    DPT_LABELME,
    'configs/segmentation/dpt_localvit-tiny-readout-add_labelme.py':
    DPT_LABELME,
    'configs/segmentation/dpt_localvit-tiny-readout-ignore_labelme.py':
    DPT_LABELME,
    'configs/detection/retinanet_localvit-tiny_simple-pyramid_1x_coco.py':
    PYRAMID_DEEPFOREST,
    'configs/detection/retinanet_localvit-small_simple-pyramid_1x_coco.py':
    PYRAMID_DEEPFOREST,
}


@pytest.fixture(scope='module')
def real_data():
    prepare('prepare_labelme.py')
    prepare('prepare_deepforest.py')
    return osp.join(REPO, 'data')


def real_batch(data_config, batch_size=2):
    """The first training batch of ``data_config`` (real images, the
    config's own pipeline)."""
    cfg = load_config(osp.join(REPO, data_config))
    loader_cfg = cfg.train_dataloader
    loader_cfg.batch_size = batch_size
    loader_cfg.dataset.data_root = osp.join(REPO, loader_cfg.dataset.data_root)
    return next(iter(Runner.build_dataloader(loader_cfg, seed=0)))


@pytest.mark.parametrize('config', sorted(STEP_CONFIGS))
def test_one_training_step_on_real_images(config, real_data):
    """The config's own model (its SyncBN reverted to BN on one CPU, no
    pretrained weights, ADE20K's 512x512 padding cut to the images' 256)
    and optimizer take one step on two real images: a finite loss, and every
    block of the backbone moves."""
    cfg = load_config(osp.join(REPO, config))
    batch = real_batch(STEP_CONFIGS[config])
    model_cfg = cfg.model
    model_cfg.backbone.pop('init_cfg', None)
    if model_cfg.data_preprocessor.get('size'):
        model_cfg.data_preprocessor.size = (256, 256)
    from mmengine.registry import MODELS
    torch.manual_seed(0)
    model = revert_sync_batchnorm(MODELS.build(model_cfg))
    model.init_weights()
    model.train()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [block.ffn.fc1.weight.clone() for block in model.backbone.blocks]
    losses = model.train_step(batch, optim_wrapper)
    assert all(torch.isfinite(value).all() for value in losses.values())
    for i, block in enumerate(model.backbone.blocks):
        assert not torch.equal(block.ffn.fc1.weight, before[i]), i


def test_dpt_learns_street_masks(tmp_path, real_data):
    """DPT (readout 'project') + LocalViT-T trains from scratch on labelme
    masks and beats the all-background prediction on two held-out street
    frames (measured: 55.2 mIoU against 29.0)."""
    work_dir, losses, _ = train(tmp_path, DPT_LABELME)
    assert len(losses) == 60
    assert mean(losses[-5:]) < 0.6 * mean(losses[:5])
    miou = metrics(work_dir, 'mIoU')
    baseline = background_only_miou(
        osp.join(real_data, 'labelme_seg', 'ann_dir', 'val'), 8)
    assert miou > baseline + 10, f'mIoU {miou} vs baseline {baseline:.1f}'


def test_simple_pyramid_retinanet_learns_tree_crowns(tmp_path, real_data):
    """RetinaNet + LocalViT-T under the simple feature pyramid trains from
    scratch on deepforest tiles and finds trees in a held-out scene
    (measured: box mAP@0.5 0.044; the PVT run scored 0.002 after 20
    iterations)."""
    work_dir, losses, _ = train(tmp_path, PYRAMID_DEEPFOREST)
    assert len(losses) == 150
    assert mean(losses[-10:]) < 0.75 * mean(losses[:10])
    map50 = metrics(work_dir, 'coco/bbox_mAP_50')
    assert map50 > 0.02, f'box mAP@0.5 {map50}'

"""Every classification config takes one real training step on real images.

The config's own model, data preprocessor, batch augments (mixup/cutmix) and
optimizer (AdamW with its paramwise settings) are used unchanged; the images
are Fashion-MNIST photos, resized to 64x64 and repeated to 3 channels.
"""
import glob
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.optim import build_optim_wrapper

from localvit_mm.utils import load_config

CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs/localvit/**/*.py'), recursive=True) +
    glob.glob(osp.join(REPO, 'configs/localvit_pvt/*.py')) +
    [osp.join(REPO, 'configs/localvit_pvt_t.py')])


@pytest.fixture(scope='module')
def fashion_batch(fashion_mnist):
    """Eight real Fashion-MNIST images with their labels, as a data batch."""
    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.structures import DataSample
    dataset = FashionMNIST(
        data_root=fashion_mnist, split='train', download=False,
        pipeline=[dict(type='Resize', scale=(64, 64))], indices=8)
    inputs, samples = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        image = torch.from_numpy(item['img'])
        inputs.append(image[None].expand(3, -1, -1).contiguous())
        samples.append(DataSample().set_gt_label(int(item['gt_label'])))
    return dict(inputs=inputs, data_samples=samples)


def test_every_config_is_covered():
    assert len(CONFIGS) >= 20


@pytest.mark.parametrize(
    'config', CONFIGS, ids=[osp.relpath(c, REPO) for c in CONFIGS])
def test_one_training_step(config, fashion_batch):
    from mmpretrain.apis import get_model
    cfg = load_config(config)
    torch.manual_seed(0)
    model = get_model(cfg)  # with the config's data_preprocessor
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    losses = model.train_step(fashion_batch, optim_wrapper)
    assert torch.isfinite(losses['loss'])
    changed = [
        k for k, v in model.state_dict().items()
        if v.dtype.is_floating_point and not torch.equal(v, before[k])
    ]
    # The step moved the patch embedding, the head, and BN statistics.
    assert any('patch_embed' in k for k in changed)
    assert any(k.startswith('head.') for k in changed)

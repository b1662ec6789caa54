"""Every classification config takes one real training step on real images.

The config's own model, data preprocessor, batch augments (mixup/cutmix) and
optimizer (AdamW with its paramwise settings) are used unchanged; the images
are Fashion-MNIST photos, resized to 64x64 and repeated to 3 channels.
"""
import glob
import os
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.optim import build_optim_wrapper

from localvit_mm.models.layers import LocalityFeedForward
from localvit_mm.utils import load_config

CONFIGS = sorted(
    glob.glob(osp.join(REPO, 'configs/localvit*/**/*.py'), recursive=True) +
    [osp.join(REPO, 'configs/localvit_pvt_t.py')])


@pytest.fixture(scope='module')
def fashion_batch(fashion_mnist):
    """Eight real Fashion-MNIST images with their labels, as a data batch."""
    from mmpretrain.datasets import FashionMNIST
    from mmpretrain.structures import DataSample
    dataset = FashionMNIST(
        data_root=fashion_mnist,
        split='train',
        download=False,
        pipeline=[dict(type='Resize', scale=(64, 64))],
        indices=8)
    inputs, samples = [], []
    for i in range(len(dataset)):
        item = dataset[i]
        image = torch.from_numpy(item['img'])
        inputs.append(image[None].expand(3, -1, -1).contiguous())
        samples.append(DataSample().set_gt_label(int(item['gt_label'])))
    return dict(inputs=inputs, data_samples=samples)


def test_every_config_is_covered():
    """CONFIGS is every Python file in the configs/localvit* folders (found
    here by walking them) and the PVT-T config, each once."""
    configs = osp.join(REPO, 'configs')
    found = [osp.join(configs, 'localvit_pvt_t.py')]
    for folder in os.listdir(configs):
        if folder.startswith('localvit') and \
                osp.isdir(osp.join(configs, folder)):
            for root, _, files in os.walk(osp.join(configs, folder)):
                found += [
                    osp.join(root, f) for f in files if f.endswith('.py')
                ]
    assert CONFIGS == sorted(found)


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
    # The step moved every parameter, except those of the last locality FFN
    # that weight decay does not reach when the head reads the class token
    # alone: that FFN acts on the image tokens only, so it gets no gradient.
    last_ffn = tuple(name + '.' for name, module in model.named_modules()
                     if isinstance(module, LocalityFeedForward))[-1:]
    unmoved = [
        k for k, v in model.named_parameters() if torch.equal(v, before[k])
    ]
    assert all(k.startswith(last_ffn) for k in unmoved), unmoved

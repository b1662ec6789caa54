"""Every LocalViT config builds; the recipe is the paper's; tiny trains."""
import glob
import os.path as osp

import pytest
import torch
from conftest import REPO
from mmengine.config import Config

CONFIGS = sorted(
    glob.glob(
        osp.join(REPO, 'configs', 'localvit', '**', '*.py'), recursive=True))
TINY = osp.join(REPO, 'configs', 'localvit', 'localvit-tiny_8xb128_in1k.py')

# Parameter counts (1000 classes) the paper tables give for the configs.
EXPECTED_PARAMS = {
    'localvit-tiny': 5_908_696,
    'localvit-tiny-se4': 9_376_168,
    'localvit-small': 22_433_176,
    'deit-tiny': 5_717_416,
    'localvit-tiny-relu6-mlp6': 7_655_080,
    'localvit-tiny-hs': 5_825_704,
    'localvit-tiny-hs-eca': 5_825_764,
    'localvit-tiny-hs-ecah': 5_825_764,
    # Derived from the counts above, per block: the dw conv (no bias) and
    # its BN hold 11 * hidden, the SE of bottleneck 4 holds 9 * hidden + 4,
    # MLP ratio 6 adds 2 * 192 * 384 + 384 to DeiT's fc1 and fc2.
    'localvit-tiny-relu6': 5_825_704,  # hs with a parameter-free act
    'localvit-tiny-relu6-nodw': 5_724_328,  # hs - 12 * 11 * 768
    # relu6-mlp6 - 12 * 11 * 1152
    'localvit-tiny-relu6-mlp6-nodw': 7_503_016,
    'localvit-tiny-mlp6': 7_779_544,  # relu6-mlp6 + 12 * (9 * 1152 + 4)
    'deit-tiny-mlp6': 7_491_496,  # deit-tiny + 12 * 147_840
    # LIFE q/k/v projections: + 12 * 32 * 192 (the paper's 5.54M -> 5.62M)
    'localvit-tiny-life': 5_982_424,
    'deit-tiny-life': 5_791_144,
}
# Those given to 0.01M only (paper Tables 2-4).
EXPECTED_MILLIONS = {
    'localvit-tiny-se48': 6.13,
    'localvit-tiny-se96': 5.98,
    'localvit-tiny-mlp1': 3.10,
    'localvit-tiny-mlp2': 4.04,
    'localvit-tiny-mlp3': 4.97,
    'localvit-tiny-layers1-4': 5.78,
    'localvit-tiny-layers5-8': 5.78,
    'localvit-tiny-layers9-12': 5.78,
    'localvit-tiny-layers1-8': 5.84,
}


def name_of(path):
    return osp.basename(path).split('_')[0]


def test_configs_found():
    """Exactly the configs that have an expected size, each once."""
    assert sorted(map(name_of, CONFIGS)) == sorted(
        [*EXPECTED_PARAMS, *EXPECTED_MILLIONS])


@pytest.mark.parametrize('path', CONFIGS, ids=name_of)
def test_config_builds(path):
    from mmpretrain.apis import get_model
    cfg = Config.fromfile(path)
    assert cfg.custom_imports == dict(
        imports=['localvit_mm.models'], allow_failed_imports=False)
    assert cfg.default_scope == 'mmpretrain'
    with torch.device('meta'):
        model = get_model(cfg)
    params = sum(p.numel() for p in model.parameters())
    name = name_of(path)
    if name in EXPECTED_PARAMS:
        assert params == EXPECTED_PARAMS[name]
    else:
        assert round(params / 1e6, 2) == EXPECTED_MILLIONS[name]
    assert model.head.fc.in_features == model.backbone.embed_dims


def test_config_options_reach_the_model():
    from mmpretrain.apis import get_model
    ablations = osp.join(REPO, 'configs', 'localvit', 'ablations')
    with torch.device('meta'):
        placed = get_model(
            osp.join(ablations, 'localvit-tiny-layers5-8_8xb128_in1k.py'))
        nodw = get_model(
            osp.join(ablations, 'localvit-tiny-relu6-nodw_8xb128_in1k.py'))
        ecah = get_model(
            osp.join(ablations, 'localvit-tiny-hs-ecah_8xb128_in1k.py'))
    assert placed.backbone.locality_layers == (4, 5, 6, 7)
    ffn = nodw.backbone.blocks[0].ffn
    assert isinstance(ffn.dw_conv, torch.nn.Identity)
    assert isinstance(ffn.act1, torch.nn.ReLU6)
    assert ecah.backbone.blocks[0].ffn.channel_attention.gate is \
        torch.nn.functional.hardsigmoid


def test_paper_recipe():
    cfg = Config.fromfile(TINY)
    assert cfg.model.backbone.drop_path_rate == 0.1
    assert cfg.model.head.loss == dict(
        type='LabelSmoothLoss', label_smooth_val=0.1, mode='original')
    assert cfg.model.train_cfg.augments == [
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]
    assert cfg.train_dataloader.batch_size * 8 == \
        cfg.auto_scale_lr.base_batch_size == 1024
    assert cfg.train_cfg.max_epochs == 300
    assert cfg.custom_hooks[0].type == 'EMAHook'
    assert 1 - cfg.custom_hooks[0].momentum == pytest.approx(0.99996)

    # The pipelines build from mmpretrain's registry and do what they say.
    from mmpretrain.registry import TRANSFORMS
    from mmpretrain.utils import register_all_modules
    register_all_modules()
    train = {t.type: t for t in cfg.train_pipeline}
    rand_aug = TRANSFORMS.build(train['RandAugment'])
    assert (rand_aug.num_policies, rand_aug.magnitude_level,
            rand_aug.magnitude_std) == (2, 9, 0.5)
    assert TRANSFORMS.build(train['RandomErasing']).erase_prob == 0.25
    for t in cfg.train_pipeline + cfg.test_pipeline:
        TRANSFORMS.build(t)
    test = {t.type: t for t in cfg.test_pipeline}
    assert (test['ResizeEdge'].scale,
            test['ResizeEdge'].interpolation) == (256, 'bicubic')
    assert test['CenterCrop'].crop_size == 224


def test_optimizer_and_schedule():
    """No decay on norms, biases and embeddings; 1e-6 -> 1e-3 -> 1e-5."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import PARAM_SCHEDULERS
    from mmpretrain.apis import get_model
    cfg = Config.fromfile(TINY)
    model = get_model(cfg, backbone=dict(img_size=32, patch_size=16))
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in wrapper.optimizer.param_groups:
        for p in group['params']:
            decay[names[id(p)]] = group['weight_decay']
    assert decay['backbone.blocks.0.attn.qkv.weight'] == 0.05
    assert decay['backbone.blocks.0.ffn.fc1.weight'] == 0.05
    assert decay['backbone.blocks.0.ffn.dw_conv.weight'] == 0.05
    assert decay['head.fc.weight'] == 0.05
    for name in ('backbone.cls_token', 'backbone.pos_embed',
                 'backbone.norm.weight', 'backbone.blocks.0.norm1.weight',
                 'backbone.blocks.0.ffn.norm1.weight',
                 'backbone.blocks.0.attn.qkv.bias', 'head.fc.bias',
                 'backbone.blocks.0.ffn.channel_attention.fc.0.bias'):
        assert decay[name] == 0, name
    assert wrapper.optimizer.defaults['eps'] == 1e-8

    epoch_length = 4
    schedulers = [
        PARAM_SCHEDULERS.build(
            dict(s),
            default_args=dict(optimizer=wrapper, epoch_length=epoch_length))
        for s in cfg.param_scheduler
    ]
    lrs = []
    for _ in range(300 * epoch_length):
        lrs.append(wrapper.optimizer.param_groups[0]['lr'])
        wrapper.step()  # as in training (no gradients: nothing moves)
        for s in schedulers:
            s.step()
    assert lrs[0] == pytest.approx(1e-6)
    assert lrs[5 * epoch_length] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-5, rel=1e-2)


def test_tiny_config_trains_one_step():
    from mmpretrain.apis import get_model
    from mmpretrain.structures import DataSample
    torch.manual_seed(0)
    model = get_model(TINY, backbone=dict(img_size=32, patch_size=4))
    model.init_weights()
    model.train()
    data = dict(
        inputs=[
            torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
            for _ in range(4)
        ],
        data_samples=[DataSample().set_gt_label(i) for i in (0, 1, 2, 999)])
    data = model.data_preprocessor(data, training=True)
    assert data['inputs'].shape == (4, 3, 32, 32)
    losses = model(**data, mode='loss')
    losses['loss'].backward()
    assert torch.isfinite(losses['loss'])
    for name, param in model.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), \
            name
    assert model.backbone.blocks[0].ffn.fc1.weight.grad.abs().sum() > 0

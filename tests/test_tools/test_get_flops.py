"""MACs as the paper counts them (attention matmuls in, norms out), for
any config at its test size."""
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.analysis import model_complexity, paper_flop_handles
from localvit_mm.analysis.complexity import (config_complexity,
                                             config_input_shape, count_macs)
from localvit_mm.analysis.model_table import cached_package_metafiles, load_zoo
from localvit_mm.models.layers import Attention
from localvit_mm.utils import load_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')


def test_attention_matmuls_are_counted():
    from mmengine.analysis import get_model_complexity_info
    attn = Attention(48, num_heads=4)
    with paper_flop_handles():
        info = get_model_complexity_info(
            attn,
            inputs=(torch.randn(1, 10, 48), ),
            show_table=False,
            show_arch=False)
    # qkv + proj Linear layers, then q @ k^T and attn @ v.
    linear = 10 * 48 * 144 + 10 * 48 * 48
    assert info['flops'] == linear + 2 * 10 * 10 * 48
    assert count_macs(attn, torch.randn(1, 10, 48))['flops'] == info['flops']


@pytest.mark.parametrize('config,macs,params', [
    ('localvit-tiny', 1_266_475_008, 5_908_696),
    ('deit-tiny', 1_253_683_200, 5_717_416),
])
def test_paper_macs(config, macs, params):
    path = osp.join(REPO, 'configs', 'localvit', f'{config}_8xb128_in1k.py')
    info = config_complexity(path)
    assert (info['flops'], info['params']) == (macs, params)
    # The paper: LocalViT-T 1.266G, DeiT-T 1.254G.
    assert round(info['flops'] / 1e9, 3) == {
        'localvit-tiny': 1.266,
        'deit-tiny': 1.254
    }[config]
    # Norms are left out unless asked for: LayerNorm adds about 0.4%, the
    # eval-mode BatchNorms are folded into the layers before them.
    with_norms = config_complexity(path, count_norms=True)['flops']
    assert macs < with_norms < 1.005 * macs


def test_mmengine_table_restored():
    from mmengine.analysis import complexity_analysis
    before = dict(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS)
    with paper_flop_handles():
        assert complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[
            'aten::batch_norm'] is None
    assert complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS == before


@pytest.fixture(scope='module')
def package_metafiles():
    with cached_package_metafiles():
        yield


@pytest.mark.parametrize('config,shape', [
    ('localvit/localvit-tiny_8xb128_in1k.py', (3, 224, 224)),
    ('quickstart/localvit-tiny_2xb32_fashion-mnist.py', (1, 28, 28)),
    ('quickstart/lenet5_1xb64_fashion-mnist.py', (1, 32, 32)),
    ('benchmark/localvit-pvt-t_backbone.py', (3, 224, 224)),
    ('detection/retinanet_localvit-pvt-t_fpn_1x_coco.py', (3, 800, 1344)),
    ('detection/retinanet_localvit-pvt-t_fpn_deepforest.py', (3, 128, 128)),
    ('segmentation/upernet_localvit-pvt-t_8xb2-160k_ade20k-512x512.py',
     (3, 512, 2048)),
    ('segmentation/fpn_localvit-pvt-t_labelme.py', (3, 256, 256)),
])
def test_config_input_shape(config, shape, package_metafiles):
    """The test pipeline's crop or resize box, padded as the model's data
    preprocessor pads; the channels of its mean."""
    cfg = load_config(osp.join(REPO, 'configs', config))
    assert config_input_shape(cfg) == shape


@pytest.mark.parametrize('config', [
    'quickstart/localvit-tiny_2xb32_fashion-mnist.py',
    'detection/retinanet_localvit-pvt-t_fpn_deepforest.py',
    'detection/mask-rcnn_localvit-pvt-t_fpn_labelme.py',
])
def test_meta_count_equals_cpu_count(config, package_metafiles):
    """Shapes only on the meta device, the same MACs as real CPU tensors
    (the compiled kernels off, so the depth-wise conv is seen)."""
    cfg = load_config(osp.join(REPO, 'configs', config))
    meta = config_complexity(cfg)
    cpu = config_complexity(cfg, device='cpu')
    assert meta['device'] == 'meta' and cpu['device'] == 'cpu'
    assert (meta['flops'], meta['params']) == (cpu['flops'], cpu['params'])


def test_mmengine_jit_counter_agrees():
    """paper_flop_handles gives mmengine's jit counter the same
    conventions: both count the quickstart LocalViT-T alike (the README's
    277.7M MACs)."""
    from mmengine.analysis import get_model_complexity_info
    from mmpretrain.apis import get_model
    config = osp.join(REPO, 'configs', 'quickstart',
                      'localvit-tiny_2xb32_fashion-mnist.py')
    model = get_model(config).eval()
    with paper_flop_handles():
        jit = get_model_complexity_info(
            model, input_shape=(1, 28, 28), show_table=False,
            show_arch=False)['flops']
    assert jit == model_complexity(model, (28, 28), in_channels=1)['flops']
    assert round(jit / 1e6, 1) == 277.7


def test_two_stage_counts_its_proposals(package_metafiles):
    """The RoI head runs on test_cfg.rpn.max_per_img proposals: 500 fewer
    cost 500 x the box head of one RoI (the mask head sees 100 either
    way)."""
    path = osp.join(REPO, 'configs', 'detection',
                    'mask-rcnn_localvit-pvt-t_fpn_labelme.py')
    full = config_complexity(load_config(path))['flops']
    half = config_complexity(
        load_config(path, {'model.test_cfg.rpn.max_per_img': 500}))['flops']
    # fc 64*7*7 -> 256, fc 256 -> 256, cls 256 -> 6 + 1, reg 256 -> 4 * 6
    per_roi = 64 * 49 * 256 + 256 * 256 + 256 * 7 + 256 * 24
    assert full - half == 500 * per_roi


def test_script_counts_any_config_at_its_test_size():
    """The tool, on a segmentor: the input the test pipeline gives, the
    numbers of the metafile."""
    config = 'configs/segmentation/fpn_localvit-pvt-t_labelme.py'
    entry = {e.config: e for e in load_zoo(REPO)}[config]
    result = run_tool('python', 'tools/analysis_tools/get_flops.py', config)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Input shape: (3, 256, 256)' in result.stdout
    assert f'Flops (MACs): {entry.flops / 1e9:.3f}G ({entry.flops:,})' in \
        result.stdout
    assert f'Params: {entry.params / 1e6:.3f}M ({entry.params:,})' in \
        result.stdout

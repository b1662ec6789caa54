"""MACs as the paper counts them (attention matmuls in, norms out)."""
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.analysis import model_complexity, paper_flop_handles
from localvit_mm.models.layers import Attention


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


@pytest.mark.parametrize('config,macs,params', [
    ('localvit-tiny', 1_266_475_008, 5_908_696),
    ('deit-tiny', 1_253_683_200, 5_717_416),
])
def test_paper_macs(config, macs, params):
    from mmpretrain.apis import get_model
    model = get_model(
        osp.join(REPO, 'configs', 'localvit', f'{config}_8xb128_in1k.py'))
    info = model_complexity(model)
    assert (info['flops'], info['params']) == (macs, params)
    # The paper: LocalViT-T 1.266G, DeiT-T 1.254G.
    assert round(info['flops'] / 1e9, 3) == {
        'localvit-tiny': 1.266,
        'deit-tiny': 1.254
    }[config]
    # Norms are left out unless asked for: BN and LN add about 0.5-1%.
    with_norms = model_complexity(model, count_norms=True)['flops']
    assert macs < with_norms < 1.01 * macs


def test_mmengine_table_restored():
    from mmengine.analysis import complexity_analysis
    before = dict(complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS)
    with paper_flop_handles():
        assert complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS[
            'aten::batch_norm'] is None
    assert complexity_analysis._DEFAULT_SUPPORTED_FLOP_OPS == before


def test_script_prints_the_paper_count():
    result = run_tool('python', 'tools/analysis_tools/get_flops.py',
                      'configs/localvit/localvit-tiny_8xb128_in1k.py')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'Flops (MACs): 1.266G (1,266,475,008)' in result.stdout
    assert 'Params: 5.909M (5,908,696)' in result.stdout

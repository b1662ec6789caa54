"""tools/analysis_tools/benchmark.py on tiny models: the table, the JSON."""
import json
from statistics import median

import pytest
from conftest import run_tool

TOOL = 'tools/analysis_tools/benchmark.py'

LOCALVIT = """
default_scope = 'mmpretrain'
custom_imports = dict(imports=['localvit_mm.models'],
                      allow_failed_imports=False)
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LocalViT', img_size=32, patch_size=8,
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  ffn_cfg=dict(channel_attention=dict(type='SE',
                                                      reduction=16)))),
    head=dict(type='LinearClsHead', num_classes=10, in_channels=32))
"""

DEIT = """
default_scope = 'mmpretrain'
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='VisionTransformer', img_size=32, patch_size=8,
        arch=dict(embed_dims=32, num_layers=2, num_heads=2,
                  feedforward_channels=128)),
    head=dict(type='VisionTransformerClsHead', num_classes=10,
              in_channels=32))
"""

# A four-stage LocalViT-PVT small enough for a test, with its FPN neck.
TINY_PYRAMID = """
custom_imports = dict(imports=['localvit_mm.models'],
                      allow_failed_imports=False)
backbone = dict(
    _delete_=True, type='LocalViTPVT', pretrain_img_size=64,
    arch=dict(embed_dims=[8, 16, 24, 32], num_layers=[1, 1, 1, 1],
              num_heads=[1, 1, 1, 2], mlp_ratios=[2, 2, 2, 2],
              sr_ratios=[4, 2, 1, 1]))
neck = dict(in_channels=[8, 16, 24, 32], out_channels=16)
"""

RETINANET = """
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
default_scope = 'mmdet'
""" + TINY_PYRAMID + """
model = dict(
    backbone=dict(backbone, ffn_cfg=dict(norm_cfg=dict(type='SyncBN'))),
    neck=neck,
    bbox_head=dict(num_classes=2, in_channels=16, feat_channels=16,
                   stacked_convs=1))
"""

SEMFPN = """
_base_ = 'mmseg::_base_/models/fpn_r50.py'
default_scope = 'mmseg'
""" + TINY_PYRAMID + """
model = dict(
    pretrained=None,
    data_preprocessor=dict(size=(64, 96)),
    backbone=backbone,
    neck=neck,
    decode_head=dict(in_channels=[16, 16, 16, 16], channels=16,
                     num_classes=3, norm_cfg=dict(type='BN')))
"""


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_classification_pair_table_and_json(tmp_path):
    localvit = write(tmp_path, 'tiny-localvit.py', LOCALVIT)
    deit = write(tmp_path, 'tiny-deit.py', DEIT)
    out = str(tmp_path / 'bench.json')
    result = run_tool('python', TOOL, deit, localvit, '--batch-size', '2',
                      '--shape', '32', '32', '--repeats', '2', '--warmup', '1',
                      '--train', '--deploy', '--threads', '1', '--json', out)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '| tiny-localvit [deploy] |' in result.stdout
    assert 'matmul peak' in result.stdout

    with open(out) as f:
        report = json.load(f)
    settings = report['settings']
    assert settings['batch_size'] == 2 and settings['repeats'] == 2
    assert settings['interleaved'] and settings['statistic'] == 'median'
    assert settings['threads'] == 1
    assert settings['matmul_peak']['dtype'] == 'float32'
    peak = settings['matmul_peak']
    assert len(peak['times_ms']) == 2 and peak['size'] == 2048
    assert peak['gflops'] == pytest.approx(2 * 2048**3 /
                                           median(peak['times_ms']) / 1e6)
    assert len(settings['load_average_start']) == 3

    names = [m['name'] for m in report['models']]
    assert names == ['tiny-deit', 'tiny-localvit', 'tiny-localvit [deploy]']
    deit_r, local_r, deploy_r = report['models']
    # DeiT: patch embedding 6,176, tokens 576, two blocks of 12,704, norm
    # 64, head 330 parameters. A locality FFN block adds 3,688 (fc1 / fc2
    # without bias, three BNs, dw conv, SE to 8 channels); folding the BNs
    # into biases removes 288 more. MACs per image: patch embedding 98,304,
    # a block on 17 tokens 227,392, head 320; the locality FFN runs on the
    # 16 image tokens only and adds 12,288 per block.
    assert [m['params'] for m in report['models']] == [32554, 39930, 39354]
    assert [m['macs_per_image']
            for m in report['models']] == [553408, 577984, 577984]
    assert deit_r['inference_ratio'] == 1.0 and deit_r['train_ratio'] == 1.0
    assert deit_r['peak_train_memory_ratio'] == 1.0
    for record in report['models']:
        assert record['shape'] == [32, 32]
        assert len(record['inference_times_ms']) == 2
        assert record['inference_img_per_s'] == pytest.approx(
            record['batch_size'] / median(record['inference_times_ms']) * 1e3)
        assert record['fraction_of_matmul_peak'] == pytest.approx(
            record['achieved_gflops'] / peak['gflops'])
        assert abs(record['achieved_gflops'] - 2 * record['macs_per_image'] *
                   record['inference_img_per_s'] / 1e9) < 1e-6
    for record in (deit_r, local_r):
        assert len(record['train_times_ms']) == 2
        assert record['train_step_ms'] == pytest.approx(
            median(record['train_times_ms']))
        assert record['peak_train_memory_ratio'] == pytest.approx(
            record['peak_train_memory_mb'] / deit_r['peak_train_memory_mb'])
        assert record['saved_activations_ratio'] == pytest.approx(
            record['saved_activations_mb'] / deit_r['saved_activations_mb'])
        assert record['memory_method'].startswith('peak RSS')
    assert deploy_r['deploy'] and 'train_step_ms' not in deploy_r
    # BatchNorm is not counted, so folding it changes no MAC.
    assert deploy_r['macs_per_image'] == local_r['macs_per_image']
    assert deploy_r['params'] < local_r['params']


def test_detection_scope_and_padded_shape(tmp_path):
    detector = write(tmp_path, 'tiny-retinanet.py', RETINANET)
    out = str(tmp_path / 'det.json')
    result = run_tool('python', TOOL, detector, '--batch-size', '1', '--shape',
                      '60', '70', '--repeats', '1', '--warmup', '0', '--json',
                      out)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        record = json.load(f)['models'][0]
    assert record['scope'] == 'mmdet'
    assert record['shape'] == [64, 96]  # padded to the divisor 32
    assert 'train_step_ms' not in record


def test_segmentation_runs_at_the_crop_size(tmp_path):
    segmentor = write(tmp_path, 'tiny-semfpn.py', SEMFPN)
    out = str(tmp_path / 'seg.json')
    result = run_tool('python', TOOL, segmentor, '--batch-size', '2',
                      '--repeats', '1', '--warmup', '0', '--train', '--json',
                      out)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(out) as f:
        record = json.load(f)['models'][0]
    assert record['scope'] == 'mmseg'
    assert record['shape'] == [64, 96]  # the preprocessor's crop size
    assert record['train_step_ms'] == pytest.approx(
        median(record['train_times_ms']))


def test_amp_needs_a_gpu(tmp_path):
    deit = write(tmp_path, 'tiny-deit.py', DEIT)
    result = run_tool('python', TOOL, deit, '--amp', 'bf16')
    assert result.returncode == 2  # argparse's usage error
    assert '--amp needs --device cuda' in result.stderr

"""tools/deployment/export_onnx.py: every backbone family exports its deploy
form with dynamic batch and image size; onnxruntime gives PyTorch's outputs.

Tiny archs (one or two blocks) keep the export fast; each is checked at its
export size and at a size no patch, stride or window divides.
"""
import importlib.util
import os.path as osp

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from bn_stats import randomize_bn
from conftest import REPO

from localvit_mm.models.build import (build_model_from_config, flatten_tensors,
                                      forward_tensors)
from localvit_mm.utils import UserInputError, load_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')

TOOL = osp.join(REPO, 'tools/deployment/export_onnx.py')
DETECTOR = osp.join(
    REPO, 'configs/detection/retinanet_localvit-pvt-t_fpn_deepforest.py')
SE = "dict(act_cfg=dict(type='HSwish'), " \
    "channel_attention=dict(type='SE', reduction=4))"


def classifier(backbone: str, dims: int) -> str:
    return f"""
default_scope = 'mmpretrain'
custom_imports = dict(imports=['localvit_mm.models'])
model = dict(
    type='ImageClassifier',
    backbone={backbone},
    neck={"dict(type='GlobalAveragePooling')" if 'Swin' in backbone
          else None},
    head=dict(type='LinearClsHead', num_classes=5, in_channels={dims}))
"""


# name: (config text, export size, second check size)
FAMILIES = {
    'LocalViT': (classifier(
        f"dict(type='LocalViT', arch=dict(embed_dims=32, num_layers=1, "
        f'num_heads=2, ffn_cfg={SE}), img_size=32, patch_size=8)',
        32), (32, 32), (43, 37)),
    # A detector (two stages here): the backbone's feature maps are exported.
    'LocalViTPVT': (f"""
_base_ = ['{DETECTOR}']
model = dict(
    backbone=dict(
        arch=dict(_delete_=True, embed_dims=[16, 16], num_heads=[1, 1],
                  mlp_ratios=[2, 2], sr_ratios=[2, 1], num_layers=[1, 1]),
        patch_sizes=[4, 2], pretrain_img_size=32, out_indices=(0, 1)),
    neck=dict(in_channels=[16, 16], out_channels=16, num_outs=2,
              start_level=0, add_extra_convs=False),
    bbox_head=dict(in_channels=16, feat_channels=16,
                   anchor_generator=dict(strides=[4, 8])))
""", (32, 32), (43, 37)),
    'LocalViTTNT': (classifier(
        'dict(type=\'LocalViTTNT\', arch=dict(embed_dims=32, inner_dims=8, '
        'num_layers=1, num_heads=2, inner_num_heads=2), img_size=32)',
        32), (32, 32), (43, 37)),
    'LocalViTT2T': (classifier(
        'dict(type=\'LocalViTT2T\', arch=dict(embed_dims=32, num_layers=1, '
        f'num_heads=2, token_dims=16, ffn_cfg={SE}))',
        32), (32, 32), (43, 37)),
    # Window 4: the 4x4 lattice of 16x16 images fits one window (no shift),
    # the 6x5 lattice of 23x19 ones is padded to 8x8 and shifted.
    'LocalViTSwin': (classifier(
        "dict(type='LocalViTSwin', arch=dict(embed_dims=16, depths=[2, 1], "
        "num_heads=[1, 2], ffn_cfg=dict(act_cfg=dict(type='HSwish'), "
        "channel_attention=dict(type='SE', reduction='embed_dims//4'))), "
        'window_size=4, out_indices=(1, ))', 32), (16, 16), (23, 19)),
}


def export_onnx():
    spec = importlib.util.spec_from_file_location('export_onnx', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def trained_looking_checkpoint(tmp_path, text):
    """The config file and a checkpoint with non-trivial BatchNorms."""
    config = tmp_path / 'config.py'
    config.write_text(text)
    torch.manual_seed(0)
    model = build_model_from_config(load_config(str(config)))
    model.init_weights()
    randomize_bn(model)
    checkpoint = tmp_path / 'model.pth'
    torch.save(dict(meta={}, state_dict=model.state_dict()), checkpoint)
    return str(config), str(checkpoint), model.eval()


@pytest.mark.parametrize('family', FAMILIES)
def test_export_equals_pytorch(family, tmp_path):
    text, shape, check_shape = FAMILIES[family]
    config, checkpoint, model = trained_looking_checkpoint(tmp_path, text)
    output = str(tmp_path / 'model.onnx')
    result = export_onnx().main([
        config, checkpoint, '--output', output, '--shape', *map(str, shape),
        '--check-shape', *map(str, check_shape)
    ])

    dense = family == 'LocalViTPVT'
    assert result['kind'] == ('backbone features' if dense else 'logits')
    assert [c['shape'] for c in result['checks']] == [[2, 3, *shape],
                                                      [3, 3, *check_shape]]
    for check in result['checks']:
        # onnxruntime within 1e-4 of the outputs' scale
        assert check['max_abs_diff'] <= check['tolerance'] < 1e-3

    graph = onnx.load(output).graph
    dims = graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value or d.dim_param for d in dims
            ] == ['batch', 3, 'height',
                  'width']  # dynamic sizes are named, the channels fixed
    assert graph.output[0].type.tensor_type.shape.dim[0].dim_param == 'batch'

    ops = {node.op_type for node in graph.node}
    assert 'BatchNormalization' not in ops  # folded: the deploy form
    assert [o.name for o in graph.output] == \
        (['feat0', 'feat1'] if dense else ['logits'])

    # Against the trained model itself (eval mode, BatchNorms not folded)
    # at a third size and batch.
    torch.manual_seed(1)
    inputs = torch.randn(1, 3, shape[0] + 5, shape[1] + 9)
    with torch.no_grad():
        tensors = model.backbone(inputs) if dense else \
            forward_tensors(model, inputs)
    expected = [t.numpy() for t in flatten_tensors(tensors)]
    session = ort.InferenceSession(output, providers=['CPUExecutionProvider'])
    actual = session.run(None, {'input': inputs.numpy()})
    assert [a.shape for a in actual] == [e.shape for e in expected]
    for a, e in zip(actual, expected):
        assert np.abs(a - e).max() <= 1e-4 * max(1., np.abs(e).max())


def test_refusals(tmp_path):
    tool = export_onnx()
    config, checkpoint, _ = trained_looking_checkpoint(tmp_path,
                                                       FAMILIES['LocalViT'][0])
    other = tmp_path / 'other.py'
    other.write_text(FAMILIES['LocalViT'][0].replace('num_classes=5',
                                                     'num_classes=7'))
    with pytest.raises(
            UserInputError,
            match=r'does not fit .*other\.py.: size mismatch for '
            r'head\.fc\.bias: copying a param with shape torch\.Size\(\[5\]\) '
            r'from checkpoint, the shape in current model is '
            r'torch\.Size\(\[7\]\)$'):
        tool.main([str(other), checkpoint])
    with pytest.raises(
            UserInputError,
            match="output folder of '.*x.onnx' "
            'not found: create it first'):
        tool.main(
            [config, checkpoint, '--output',
             str(tmp_path / 'no' / 'x.onnx')])
    with pytest.raises(
            UserInputError, match="checkpoint '.*nowhere.pth' "
            'not found'):
        tool.main([config, str(tmp_path / 'nowhere.pth')])

# mmdet's PyramidVisionTransformer (PVT-T) as an ImageNet classifier: the
# last stage's feature map, global average pooling and a linear head. The
# baseline of localvit-pvt-t_gap.py in tools/analysis_tools/benchmark.py.
_base_ = ['../_base_/default_runtime.py']
default_scope = 'mmpretrain'

model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='mmdet.PyramidVisionTransformer',
        num_layers=[2, 2, 2, 2],
        out_indices=(3, ),
        drop_path_rate=0.1),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(type='CrossEntropyLoss')))

# LocalViT-PVT-T on ImageNet-1k, the paper protocol (DeiT recipe): 8 GPUs x 128
# images, 300 epochs, AdamW lr 1e-3, cosine with 5 warm-up epochs, drop path
# 0.1, RandAugment, random erasing, mixup / cutmix, label smoothing, repeated
# augmentation and EMA. Paper: 78.2 top-1 (PVT-T 75.1), 13.46M parameters.
_base_ = [
    '_base_/datasets/imagenet_bs128_localvit_224.py',
    '_base_/schedules/imagenet_bs1024_adamw_localvit.py',
    '_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

# The classifier reads the normalized class token of stage 4.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LocalViTPVT',
        arch='tiny',
        with_cls_token=True,
        out_type='cls_token',
        out_indices=(3, ),
        drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=512,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

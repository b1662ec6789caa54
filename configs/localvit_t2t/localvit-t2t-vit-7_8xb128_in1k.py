# LocalViT-T2T (T2T-ViT-7 with the locality FFN in its blocks and in its
# tokens-to-token layers) on ImageNet-1k, the paper protocol (DeiT recipe):
# 8 GPUs x 128 images, 300 epochs, AdamW lr 1e-3, cosine with 5 warm-up
# epochs, drop path 0.1, RandAugment, random erasing, mixup / cutmix, label
# smoothing, repeated augmentation and EMA. Paper: 72.5 top-1 (T2T-ViT-7
# 71.7), 4.3M parameters.
_base_ = [
    '../_base_/datasets/imagenet_bs128_localvit_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_localvit.py',
    '../_base_/default_runtime.py',
]
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='LocalViTT2T', arch='7', drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=256,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

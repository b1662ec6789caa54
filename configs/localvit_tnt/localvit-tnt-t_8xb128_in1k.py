# LocalViT-TNT-T on ImageNet-1k, the paper protocol (DeiT recipe): 8 GPUs x
# 128 images, 300 epochs, AdamW lr 1e-3, cosine with 5 warm-up epochs, drop
# path 0.1, RandAugment, random erasing, mixup / cutmix, label smoothing,
# repeated augmentation and EMA. The official training normalizes with the
# ImageNet mean and std (not TNT's 0.5), as the dataset base does.
# Paper: 75.9 top-1 (TNT-T 73.6), 6.26M parameters.
_base_ = [
    '../_base_/datasets/imagenet_bs128_localvit_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_localvit.py',
    '../_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

model = dict(
    type='ImageClassifier',
    backbone=dict(type='LocalViTTNT', arch='tiny', drop_path_rate=0.1),
    neck=None,
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=192,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# TNT's position embeddings are not decayed either (official no_weight_decay).
optim_wrapper = dict(
    paramwise_cfg=dict(custom_keys={
        '.patch_pos': dict(decay_mult=0.0),
        '.pixel_pos': dict(decay_mult=0.0),
    }))

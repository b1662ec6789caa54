# LocalViT-Swin-T on ImageNet-1k: Swin-T (96 dims, depths [2, 2, 6, 2],
# window 7) with the locality FFN in every block (h-swish, SE keeping 16 of
# the 4 * dims hidden channels), trained with the paper protocol of the other
# LocalViT models (DeiT recipe: 8 GPUs x 128 images, 300 epochs, AdamW lr
# 1e-3, cosine with 5 warm-up epochs, RandAugment, random erasing, mixup /
# cutmix, label smoothing, repeated augmentation, EMA) and Swin-T's drop path
# 0.2. The official training (timm's create_optimizer) exempted only 1-D
# parameters from weight decay, so the relative position bias tables decay
# too, as here. Official: 81.86 top-1, 29.08M parameters.
_base_ = [
    '../_base_/datasets/imagenet_bs128_localvit_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_localvit.py',
    '../_base_/default_runtime.py',
]
default_scope = 'mmpretrain'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

# The classifier averages the normalized stage-4 map (norm3 = official norm).
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='LocalViTSwin',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.2),
    neck=dict(type='GlobalAveragePooling'),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=768,
        loss=dict(
            type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=.02)),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

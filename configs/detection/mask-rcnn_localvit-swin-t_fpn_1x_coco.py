# Mask R-CNN + FPN with a LocalViT-Swin-T backbone on COCO, mmdet's Swin-T
# Mask R-CNN 1x protocol: 12 epochs (lr steps at 8 and 11, 1000 linear
# warm-up iterations), 8 GPUs x 2 images, AdamW lr 1e-4, weight decay 0.05
# (none on norms and relative position bias tables), drop path 0.2; FPN
# 96/192/384/768 -> 256. Swin-T gets 42.7 box / 39.3 mask AP with it.
#
# Backbone weights: a LocalViT-Swin-T ImageNet classifier in mmpretrain
# layout, e.g. the converted official release:
#   python tools/model_converters/localvit_to_mmpretrain.py \
#       localvit_swin.pth checkpoints/localvit-swin-t_in1k.pth
# Its norm3 is the official final norm; norm0..2 start at 1 / 0.
#
# BatchNorm of the locality FFN: SyncBN by default (per-GPU batches are two
# images; a single-device run reverts it to BN). Frozen BN instead:
#   --cfg-options model.backbone.norm_eval=True \
#       model.backbone.ffn_cfg.norm_cfg.requires_grad=False
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_scope = 'mmdet'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

pretrained = 'checkpoints/localvit-swin-t_in1k.pth'
model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViTSwin',
        arch='tiny',
        window_size=7,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.2,
        ffn_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        norm_eval=False,
        with_cp=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[96, 192, 384, 768]))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]

optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=1e-4,
        betas=(0.9, 0.999),
        weight_decay=0.05))

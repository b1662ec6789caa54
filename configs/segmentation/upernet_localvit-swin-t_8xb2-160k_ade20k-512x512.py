# UPerNet with a LocalViT-Swin-T backbone on ADE20K, mmseg's Swin-T UPerNet
# protocol: 512x512 crops, 8 GPUs x 2 images, 160k iterations, AdamW lr 6e-5,
# weight decay 0.01 (none on norms and relative position bias tables), 1500
# linear warm-up iterations then poly decay (power 1), drop path 0.3,
# auxiliary FCN head on stage 3. Swin-T gets 44.4 mIoU (single scale) with
# it.
#
# Backbone weights and BatchNorm options: see
# configs/detection/mask-rcnn_localvit-swin-t_fpn_1x_coco.py.
_base_ = [
    'mmseg::_base_/models/upernet_swin.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_160k.py',
]
default_scope = 'mmseg'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

crop_size = (512, 512)
pretrained = 'checkpoints/localvit-swin-t_in1k.pth'
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    backbone=dict(
        _delete_=True,
        type='LocalViTSwin',
        arch='tiny',
        window_size=7,
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.3,
        ffn_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(in_channels=[96, 192, 384, 768], num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150))

train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(
        type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        custom_keys={
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))
param_scheduler = [
    dict(
        type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]

# Semantic FPN with a LocalViT-PVT-T backbone on ADE20K, the PVT protocol:
# 512x512 crops, 8 GPUs x 4 images, 40k iterations, AdamW lr 2e-4, weight
# decay 1e-4, poly decay (power 0.9); FPN 64/128/320/512 -> 256, FPNHead with
# 128 channels. PVT-T gets 35.7 mIoU (36.6 in the PVT code release).
#
# Backbone weights: a LocalViT-PVT-T ImageNet classifier in mmpretrain layout
# (tools/model_converters/localvit_to_mmpretrain.py converts the official
# localvit_pvt.pth). BatchNorm of the locality FFN: SyncBN by default (a
# single-device run reverts it to BN); frozen BN with
#   --cfg-options model.backbone.norm_eval=True \
#       model.backbone.ffn_cfg.norm_cfg.requires_grad=False
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]
default_scope = 'mmseg'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

crop_size = (512, 512)
pretrained = 'checkpoints/localvit-pvt-t_in1k.pth'
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LocalViTPVT',
        arch='tiny',
        out_indices=(0, 1, 2, 3),
        drop_path_rate=0.1,
        ffn_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150))

train_dataloader = dict(batch_size=4)

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4))
param_scheduler = [
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=0.0,
        begin=0,
        end=40000,
        by_epoch=False)
]

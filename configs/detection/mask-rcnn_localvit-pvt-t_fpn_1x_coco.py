# Mask R-CNN + FPN with a LocalViT-PVT-T backbone on COCO, the PVT protocol:
# 1x schedule (12 epochs, lr steps at 8 and 11), 8 GPUs x 2 images, AdamW
# lr 2e-4, weight decay 1e-4. PVT-T gets 36.7 box / 35.1 mask AP.
#
# Backbone weights and BatchNorm options: see
# retinanet_localvit-pvt-t_fpn_1x_coco.py (SyncBN by default; frozen BN with
# model.backbone.norm_eval=True and norm_cfg requires_grad=False).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_scope = 'mmdet'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

pretrained = 'checkpoints/localvit-pvt-t_in1k.pth'
model = dict(
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
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=2e-4, weight_decay=1e-4))

# RetinaNet + FPN with a LocalViT-PVT-T backbone on COCO, the PVT protocol:
# 1x schedule (12 epochs, lr steps at 8 and 11), 8 GPUs x 2 images, AdamW
# lr 1e-4, weight decay 1e-4; FPN 64/128/320/512 -> 256, 5 levels from stride
# 8. PVT-T gets 36.7 box AP with this recipe.
#
# Backbone weights: a LocalViT-PVT-T ImageNet classifier in mmpretrain layout,
# e.g. the converted official release:
#   python tools/model_converters/localvit_to_mmpretrain.py \
#       localvit_pvt.pth checkpoints/localvit-pvt-t_in1k.pth
#
# BatchNorm of the locality FFN: SyncBN by default (per-GPU batches are two
# images; a single-device run reverts it to BN). Frozen BN instead:
#   --cfg-options model.backbone.norm_eval=True \
#       model.backbone.ffn_cfg.norm_cfg.requires_grad=False
# (see retinanet_localvit-pvt-t_fpn_frozen-bn_1x_coco.py).
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
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
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4))

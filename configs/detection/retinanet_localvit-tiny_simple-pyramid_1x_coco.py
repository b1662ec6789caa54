# RetinaNet with a plain LocalViT-T backbone and a simple feature pyramid
# (ViTDet style) on COCO, the PVT RetinaNet 1x protocol (12 epochs, 8 GPUs x
# 2 images, AdamW lr 1e-4, weight decay 1e-4).
#
# The pyramid: mmseg's Feature2Pyramid rescales the stride-16 maps of blocks
# 3, 5, 7 and 11 (as mmseg's BEiT/MAE configs feed it; ViTDet takes all four
# from the last block) by a transposed conv (2x), identity and max-pooling
# (1/2, 1/4) to strides 8, 16, 32 and 64; mmdet's ChannelMapper then maps each
# level to 256 channels (3x3 conv + GroupNorm, no top-down path) and adds the
# stride-128 level by a strided conv: RetinaNet's P3-P7.
#
# Backbone weights and BatchNorm options: see
# retinanet_localvit-pvt-t_fpn_1x_coco.py (here from
# checkpoints/localvit-tiny_in1k.pth); the position embedding is resized to
# each input's lattice.
_base_ = [
    'mmdet::_base_/models/retinanet_r50_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
default_scope = 'mmdet'
custom_imports = dict(
    imports=['localvit_mm.models', 'mmseg.models'], allow_failed_imports=False)

pretrained = 'checkpoints/localvit-tiny_in1k.pth'
embed_dims = 192
model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViT',
        arch='tiny',
        img_size=224,
        patch_size=16,
        out_indices=(3, 5, 7, 11),
        out_type='featmap',
        drop_path_rate=0.1,
        ffn_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=[
        dict(
            type='mmseg.Feature2Pyramid',
            embed_dim=embed_dims,
            rescales=[2, 1, 0.5, 0.25]),
        dict(
            type='ChannelMapper',
            in_channels=[embed_dims] * 4,
            out_channels=256,
            kernel_size=3,
            norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
            act_cfg=None,
            num_outs=5)
    ])

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=1e-4, weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={
        '.pos_embed': dict(decay_mult=0.),
        '.cls_token': dict(decay_mult=0.)
    }))

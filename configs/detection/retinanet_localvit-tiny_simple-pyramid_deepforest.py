# RetinaNet + plain LocalViT-T under a simple feature pyramid (ViTDet style,
# see retinanet_localvit-tiny_simple-pyramid_1x_coco.py) on real aerial
# tree-crown images: the data, slim head and schedule of
# retinanet_localvit-pvt-t_fpn_deepforest.py, trained from scratch on a CPU.
# Prepare the data with: python tools/data/prepare_deepforest.py
_base_ = './retinanet_localvit-pvt-t_fpn_deepforest.py'
custom_imports = dict(
    imports=['localvit_mm.models', 'mmseg.models'], allow_failed_imports=False)

embed_dims = 192
model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViT',
        arch='tiny',
        img_size=128,
        out_indices=(3, 5, 7, 11),
        out_type='featmap',
        drop_path_rate=0.),
    neck=[
        dict(
            type='mmseg.Feature2Pyramid',
            embed_dim=embed_dims,
            rescales=[2, 1, 0.5, 0.25],
            norm_cfg=dict(type='BN', requires_grad=True)),
        dict(
            type='ChannelMapper',
            in_channels=[embed_dims] * 4,
            out_channels=64,
            kernel_size=3,
            norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
            act_cfg=None,
            num_outs=5)
    ])

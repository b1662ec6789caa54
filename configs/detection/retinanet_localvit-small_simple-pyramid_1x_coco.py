_base_ = './retinanet_localvit-tiny_simple-pyramid_1x_coco.py'

# LocalViT-S (384 dims, 6 heads) under the same simple pyramid and protocol.
pretrained = 'checkpoints/localvit-small_in1k.pth'
embed_dims = 384
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
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

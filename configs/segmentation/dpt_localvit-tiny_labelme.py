# DPT + plain LocalViT-T on labelme's real masks (three VOC photos and five
# street frames, 8 classes), trained from scratch on a CPU in minutes at 256
# pixels, mIoU on two held-out street frames. The data and schedule of
# fpn_localvit-pvt-t_labelme.py; the head of
# dpt_localvit-tiny_8xb2-160k_ade20k-512x512.py with 64 fusion channels.
# Prepare the data with: python tools/data/prepare_labelme.py
_base_ = './fpn_localvit-pvt-t_labelme.py'

embed_dims = 192
model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViT',
        arch='tiny',
        img_size=256,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        output_cls_token=True,
        final_norm=False,
        drop_path_rate=0.),
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='DPTHead',
        in_channels=(embed_dims, ) * 4,
        channels=64,
        embed_dims=embed_dims,
        post_process_channels=[embed_dims // 8 * 2**i for i in range(4)],
        num_classes=8,
        readout_type='project',
        input_transform='multiple_select',
        in_index=(0, 1, 2, 3),
        norm_cfg=dict(type='BN', requires_grad=True),
        loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# Semantic FPN + a narrow LocalViT-Swin on labelme's real masks: the data,
# schedule and head of fpn_localvit-pvt-t_labelme.py with another backbone.
# The backbone is Swin-T's structure (patch 4, window 7, shifted windows,
# patch merging, the locality FFN with SE keeping 16 channels) at a third of
# its width (32 -> 256 channels) and depths [2, 2, 2, 2]: with the real
# swin-tiny arch the same run took 13 minutes on a busy 2-core machine,
# against 4 for this one (77 s on a quiet one).
# Prepare the data with: python tools/data/prepare_labelme.py
_base_ = ['./fpn_localvit-pvt-t_labelme.py']

model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViTSwin',
        arch=dict(
            embed_dims=32,
            depths=[2, 2, 2, 2],
            num_heads=[1, 2, 4, 8],
            ffn_cfg=dict(
                act_cfg=dict(type='HSwish'),
                channel_attention=dict(type='SE', reduction='embed_dims//4'))),
        drop_path_rate=0.),
    neck=dict(in_channels=[32, 64, 128, 256]))

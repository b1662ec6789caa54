_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 4: expansion ratio 2, SE keeping 4 channels.
model = dict(
    backbone=dict(
        ffn_cfg=dict(
            mlp_ratio=2, channel_attention=dict(type='SE', reduction=96))))

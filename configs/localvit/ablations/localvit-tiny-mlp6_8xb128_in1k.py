_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 4: expansion ratio 6, SE keeping 4 channels.
model = dict(
    backbone=dict(
        ffn_cfg=dict(
            mlp_ratio=6, channel_attention=dict(type='SE', reduction=288))))

_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 2: SE reduction 48 (16 channels kept, 75.0).
model = dict(
    backbone=dict(
        ffn_cfg=dict(channel_attention=dict(type='SE', reduction=48))))

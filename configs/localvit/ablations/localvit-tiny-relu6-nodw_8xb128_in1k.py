_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 1: conv FFN with BN but no depth-wise conv, ReLU6 (72.5).
model = dict(
    backbone=dict(
        ffn_cfg=dict(
            act_cfg=dict(type='ReLU6'),
            channel_attention=None,
            with_dw_conv=False)))

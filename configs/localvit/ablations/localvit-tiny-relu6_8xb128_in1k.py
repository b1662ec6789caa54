_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Tables 1 and 2: ReLU6, no channel attention (73.7).
model = dict(
    backbone=dict(
        ffn_cfg=dict(act_cfg=dict(type='ReLU6'), channel_attention=None)))

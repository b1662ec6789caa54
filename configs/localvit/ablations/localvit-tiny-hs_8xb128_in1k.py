_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 2: h-swish, no channel attention (74.4).
model = dict(backbone=dict(ffn_cfg=dict(channel_attention=None)))

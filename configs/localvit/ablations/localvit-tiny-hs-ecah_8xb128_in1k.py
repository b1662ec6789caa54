_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 2: h-swish + ECA with an h-sigmoid gate.
model = dict(
    backbone=dict(
        ffn_cfg=dict(channel_attention=dict(type='ECA', gate='hsigmoid'))))

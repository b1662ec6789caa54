_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 1: no depth-wise conv, ReLU6, expansion ratio 6 (74.3).
model = dict(
    backbone=dict(arch='tiny-relu6-mlp6', ffn_cfg=dict(with_dw_conv=False)))

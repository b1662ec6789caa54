_base_ = '../deit-tiny_8xb128_in1k.py'

# Paper Table 1: DeiT-T with expansion ratio 6 (73.1).
model = dict(backbone=dict(ffn_cfg=dict(mlp_ratio=6)))

_base_ = '../localvit-tiny_8xb128_in1k.py'

# Paper Table 1: ReLU6, expansion ratio 6 (76.1).
model = dict(backbone=dict(arch='tiny-relu6-mlp6'))

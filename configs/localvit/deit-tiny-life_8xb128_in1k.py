_base_ = './deit-tiny_8xb128_in1k.py'

# DeiT-T with LIFE alone: locality in the q/k/v projection, GELU MLPs.
model = dict(backbone=dict(attn_cfg=dict(qkv_proj='life')))

_base_ = './deit-tiny_1xb64_fashion-mnist-1k.py'

# DeiT-T with LIFE: locality in the q/k/v projection only.
model = dict(backbone=dict(attn_cfg=dict(qkv_proj='life')))

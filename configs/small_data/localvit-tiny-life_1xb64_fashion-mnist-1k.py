_base_ = './localvit-tiny_1xb64_fashion-mnist-1k.py'

# LocalViT-T with LIFE: locality in both the q/k/v projection and the FFN.
model = dict(backbone=dict(attn_cfg=dict(qkv_proj='life')))

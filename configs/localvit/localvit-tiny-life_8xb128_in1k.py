_base_ = './localvit-tiny_8xb128_in1k.py'

# LocalViT-T with LIFE: locality in the q/k/v projection (multi-scale
# pointwise, 3x3 and 5x5 separable convs) as well as in the feed-forward.
model = dict(backbone=dict(attn_cfg=dict(qkv_proj='life')))

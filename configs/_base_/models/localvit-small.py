# LocalViT-S: 384 dims, 8 heads, h-swish + SE (reduction 384, 4 channels).
_base_ = './localvit-tiny.py'

model = dict(backbone=dict(arch='small'), head=dict(in_channels=384))

# DeiT-T baseline: the LocalViT class with locality off (3 heads, GELU MLP).
_base_ = './localvit-tiny.py'

model = dict(backbone=dict(arch='deit-tiny'))

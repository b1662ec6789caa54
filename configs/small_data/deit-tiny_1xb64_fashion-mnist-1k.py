_base_ = './localvit-tiny_1xb64_fashion-mnist-1k.py'

# DeiT-T: no locality (GELU MLP feed-forward, linear q/k/v).
model = dict(backbone=dict(arch='deit-tiny'))

# The quickstart baseline: DeiT-T (LocalViT with locality off), same budget.
_base_ = './localvit-tiny_2xb32_fashion-mnist.py'

model = dict(backbone=dict(arch='deit-tiny'))

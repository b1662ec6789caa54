# Swin-T baseline (plain GELU MLP with norm2, locality off) with the
# LocalViT-Swin-T recipe, for an apples-to-apples comparison. 28.29M
# parameters.
_base_ = ['./localvit-swin-t_8xb128_in1k.py']

model = dict(backbone=dict(arch='swin-tiny'))

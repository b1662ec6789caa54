# PVT-T baseline (plain GELU MLP, locality off) with the LocalViT-PVT-T recipe,
# for an apples-to-apples comparison. Paper: 75.1 top-1, 13.23M parameters.
_base_ = ['../localvit_pvt_t.py']

model = dict(backbone=dict(arch='pvt-tiny'))

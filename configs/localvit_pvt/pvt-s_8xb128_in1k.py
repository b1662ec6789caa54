# PVT-S baseline (plain GELU MLP, locality off) with the LocalViT-PVT recipe.
_base_ = ['../localvit_pvt_t.py']

model = dict(backbone=dict(arch='pvt-small'))

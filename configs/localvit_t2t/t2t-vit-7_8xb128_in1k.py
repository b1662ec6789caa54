# T2T-ViT-7 baseline (plain GELU MLPs in the blocks and the token layers,
# locality off) with the LocalViT-T2T recipe, for an apples-to-apples
# comparison. Paper: 71.7 top-1, 4.3M parameters.
_base_ = ['./localvit-t2t-vit-7_8xb128_in1k.py']

model = dict(backbone=dict(arch='t2t-vit-7'))

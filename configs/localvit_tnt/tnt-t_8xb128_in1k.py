# TNT-T baseline (plain GELU outer MLP with its norm) with the LocalViT-TNT
# recipe. Paper: 73.6 top-1, 6.07M parameters.
_base_ = ['./localvit-tnt-t_8xb128_in1k.py']

model = dict(backbone=dict(arch='tnt-tiny'))

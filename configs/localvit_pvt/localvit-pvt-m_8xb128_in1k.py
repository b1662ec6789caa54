# LocalViT-PVT-M (PVT-M depths, locality FFN in every block) on ImageNet-1k,
# same recipe as LocalViT-PVT-T. The paper reports only the tiny model.
_base_ = ['../localvit_pvt_t.py']

model = dict(backbone=dict(arch='medium'))

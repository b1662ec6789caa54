# LocalViT-T-SE4: LocalViT-T with SE reduction 4 (192 channels kept).
_base_ = './localvit-tiny.py'

model = dict(backbone=dict(arch='tiny-se4'))

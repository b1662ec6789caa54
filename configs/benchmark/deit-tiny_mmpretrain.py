# DeiT-T as mmpretrain ships it (VisionTransformer, arch 'deit-tiny'): the
# plain-transformer baseline of LocalViT-T in
# tools/analysis_tools/benchmark.py.
# Drop path 0.1 as in configs/localvit/localvit-tiny_8xb128_in1k.py (the DeiT
# recipe), so training steps do the same work outside the feed-forward.
_base_ = 'mmpretrain::deit/deit-tiny_4xb256_in1k.py'

model = dict(backbone=dict(drop_path_rate=0.1))

# Swin-T as mmpretrain ships it (SwinTransformer, arch 'tiny', drop path 0.2):
# the plain-Swin baseline of LocalViT-Swin-T
# (configs/localvit_swin/localvit-swin-t_8xb128_in1k.py) in
# tools/analysis_tools/benchmark.py.
_base_ = 'mmpretrain::swin_transformer/swin-tiny_16xb64_in1k.py'

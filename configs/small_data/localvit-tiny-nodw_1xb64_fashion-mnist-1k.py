_base_ = './localvit-tiny_1xb64_fashion-mnist-1k.py'

# LocalViT-T without the depth-wise convolution: the same conv feed-forward
# (BN, h-swish, SE) with no spatial mixing, so any gain of LocalViT-T over it
# is the 3x3 locality itself.
model = dict(backbone=dict(ffn_cfg=dict(with_dw_conv=False)))

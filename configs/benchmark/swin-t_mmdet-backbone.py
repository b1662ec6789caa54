# mmdet's SwinTransformer (Swin-T, window 7, drop path 0.2 as in its Mask
# R-CNN configs) alone: the four feature maps a detector or segmentor reads.
# The baseline of localvit-swin-t_backbone.py in
# tools/analysis_tools/benchmark.py.
default_scope = 'mmdet'

model = dict(
    type='SwinTransformer',
    embed_dims=96,
    depths=[2, 2, 6, 2],
    num_heads=[3, 6, 12, 24],
    window_size=7,
    mlp_ratio=4,
    qkv_bias=True,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3))

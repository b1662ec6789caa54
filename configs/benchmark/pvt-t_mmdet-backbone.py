# mmdet's PyramidVisionTransformer (PVT-T) alone: the four feature maps a
# detector or segmentor reads. The baseline of localvit-pvt-t_backbone.py in
# tools/analysis_tools/benchmark.py.
default_scope = 'mmdet'

model = dict(
    type='PyramidVisionTransformer',
    num_layers=[2, 2, 2, 2],
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.1)

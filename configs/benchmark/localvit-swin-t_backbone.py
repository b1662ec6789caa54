# LocalViT-Swin-T alone, as the drop-in replacement of mmdet's Swin-T
# (swin-t_mmdet-backbone.py): the same four feature maps.
default_scope = 'mmdet'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

model = dict(
    type='LocalViTSwin',
    arch='tiny',
    out_indices=(0, 1, 2, 3),
    drop_path_rate=0.2)

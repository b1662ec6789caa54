# LocalViT-PVT-T with the head of pvt-t_mmdet.py (last stage, global average
# pooling, linear), so the two differ in the backbone only.
_base_ = ['./pvt-t_mmdet.py']
custom_imports = dict(imports=['localvit_mm.models'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='LocalViTPVT',
        arch='tiny',
        out_indices=(3, ),
        drop_path_rate=0.1))

# RetinaNet + FPN with mmdet's PVT-T backbone, as mmdet ships it, without the
# pretrained download: the baseline of
# configs/detection/retinanet_localvit-pvt-t_fpn_1x_coco.py in
# tools/analysis_tools/benchmark.py.
_base_ = 'mmdet::pvt/retinanet_pvt-t_fpn_1x_coco.py'

model = dict(backbone=dict(init_cfg=None))

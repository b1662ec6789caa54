# RetinaNet + LocalViT-PVT-T on COCO with frozen BatchNorm in the locality FFN:
# the ImageNet statistics and affine weights are kept (no SyncBN needed, any
# number of GPUs and images per GPU).
_base_ = ['./retinanet_localvit-pvt-t_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        ffn_cfg=dict(norm_cfg=dict(type='BN', requires_grad=False)),
        norm_eval=True))

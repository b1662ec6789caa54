# RetinaNet + LocalViT-PVT-S on COCO, PVT protocol (PVT-S: 40.4 box AP).
_base_ = ['./retinanet_localvit-pvt-t_fpn_1x_coco.py']

pretrained = 'checkpoints/localvit-pvt-s_in1k.pth'
model = dict(
    backbone=dict(
        arch='small',
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')))

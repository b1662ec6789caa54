# Semantic FPN + LocalViT-PVT-T on labelme's real masks (three VOC photos and
# five street frames, 8 classes): trains on a CPU in minutes from scratch at
# 256 pixels and reports mIoU on two held-out street frames.
# Prepare the data with: python tools/data/prepare_labelme.py
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/default_runtime.py',
]
default_scope = 'mmseg'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

image_size = (256, 256)
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size_divisor=32),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LocalViTPVT',
        arch='tiny',
        pretrain_img_size=image_size,
        drop_path_rate=0.),
    neck=dict(in_channels=[64, 128, 320, 512], out_channels=64),
    decode_head=dict(
        in_channels=[64, 64, 64, 64],
        channels=32,
        num_classes=8,
        norm_cfg=norm_cfg))

dataset_type = 'BaseSegDataset'
data_root = 'data/labelme_seg'
metainfo = dict(
    classes=('background', 'person', 'bottle', 'chair', 'sofa', 'bus', 'car',
             'track'),
    palette=[[0, 0, 0], [192, 128, 128], [128, 0, 128], [192, 0, 0],
             [0, 192, 0], [0, 128, 128], [128, 128, 128], [255, 128, 0]])
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs')
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs')
]
dataset = dict(
    type=dataset_type,
    data_root=data_root,
    metainfo=metainfo,
    img_suffix='.jpg',
    seg_map_suffix='.png',
    reduce_zero_label=False)
train_dataloader = dict(
    batch_size=4,
    num_workers=0,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        dataset,
        data_prefix=dict(
            img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1,
    num_workers=0,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        dataset,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator

max_iters = 60
train_cfg = dict(
    type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01),
    clip_grad=dict(max_norm=10.))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=10),
    dict(
        type='PolyLR',
        power=0.9,
        eta_min=1e-5,
        by_epoch=False,
        begin=10,
        end=max_iters)
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=max_iters),
    visualization=dict(type='SegVisualizationHook', draw=False))
randomness = dict(seed=0)

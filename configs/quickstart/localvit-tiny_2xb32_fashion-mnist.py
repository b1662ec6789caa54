# The quickstart: LocalViT-T on real Fashion-MNIST, trained in about two
# minutes on two CPU processes (tools/quickstart.sh). 28x28 grey images,
# patch 4: a 7x7 lattice for the depth-wise convolution. Compare with
# deit-tiny_2xb32_fashion-mnist.py, which differs only in the arch.
_base_ = [
    '../_base_/models/localvit-tiny.py',
    '../_base_/datasets/fashion-mnist_bs64.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(img_size=28, patch_size=4, in_channels=1, drop_path_rate=0.),
    head=dict(num_classes=10),
    train_cfg=None)  # no mixup/cutmix in a few-minute run

flip = dict(type='RandomFlip', prob=0.5, direction='horizontal')
train_dataloader = dict(
    batch_size=32, dataset=dict(pipeline=[flip, dict(type='PackInputs')]))
# Curves on the first 1,000 test images; tools/quickstart.sh reports more of
# the test split at the end.
val_dataloader = dict(dataset=dict(indices=1000))

max_iters = 100
warmup_iters = 10
optim_wrapper = dict(
    optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={
            '.cls_token': dict(decay_mult=0.0),
            '.pos_embed': dict(decay_mult=0.0)
        }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, end=warmup_iters),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=False,
        begin=warmup_iters,
        end=max_iters)
]
train_cfg = dict(by_epoch=False, max_iters=max_iters, val_interval=25)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=10, log_metric_by_epoch=False),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=max_iters,
        max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)

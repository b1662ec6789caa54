# A small mmpretrain model on real Fashion-MNIST: the fastest end-to-end check
# of the tools (training, resume, distributed launch) on a CPU.
_base_ = [
    'mmpretrain::_base_/default_runtime.py',
    '../_base_/datasets/fashion-mnist_bs64.py',
]

model = dict(
    type='ImageClassifier',
    backbone=dict(type='LeNet5', num_classes=10),
    neck=None,
    head=dict(
        type='ClsHead', loss=dict(type='CrossEntropyLoss', loss_weight=1.0)))

# LeNet-5 reads 32x32 images.
resize = dict(type='Resize', scale=(32, 32))
train_dataloader = dict(
    dataset=dict(pipeline=[resize, dict(type='PackInputs')]))
val_dataloader = dict(dataset=dict(pipeline=[resize, dict(type='PackInputs')]))
test_dataloader = val_dataloader

optim_wrapper = dict(
    optimizer=dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=1e-4))
param_scheduler = dict(
    type='CosineAnnealingLR', T_max=1000, by_epoch=False, eta_min=1e-4)

train_cfg = dict(by_epoch=False, max_iters=1000, val_interval=500)
val_cfg = dict()
test_cfg = dict()

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(
        type='CheckpointHook', by_epoch=False, interval=500, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0, deterministic=False)

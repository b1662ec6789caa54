# Fashion-MNIST (60k train / 10k test, 28x28 grey, 10 classes).
# Prepare it with: tools/data/prepare_fashion_mnist.sh
dataset_type = 'FashionMNIST'
data_root = 'data/fashion_mnist'

data_preprocessor = dict(
    num_classes=10,
    # Fashion-MNIST pixel mean and std (0.2860, 0.3530) x 255
    mean=[72.94],
    std=[90.02],
    to_rgb=False,
)

train_pipeline = [dict(type='PackInputs')]
# The dataset gives 28x28 grey arrays; the inferencers read image files as
# BGR colour of any size. Both end as one 28x28 grey channel: grey with
# weights (1, 2, 1) (always applied at prob=1; exact on grey pixels, a no-op
# on the dataset's arrays), then 28x28 (a plain copy at that size).
test_pipeline = [
    dict(type='RandomGrayscale', prob=1.0, channel_weights=(1, 2, 1)),
    dict(type='Resize', scale=(28, 28)),
    dict(type='PackInputs')
]

train_dataloader = dict(
    batch_size=64,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='train',
        download=False,
        pipeline=train_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=True),
)

val_dataloader = dict(
    batch_size=256,
    num_workers=1,
    persistent_workers=True,
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        split='test',
        test_mode=True,
        download=False,
        pipeline=test_pipeline),
    sampler=dict(type='DefaultSampler', shuffle=False),
)
val_evaluator = dict(type='Accuracy', topk=(1, ))

test_dataloader = val_dataloader
test_evaluator = val_evaluator

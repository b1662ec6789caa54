# The small-data study (tools/experiments/small_data.py): LocalViT-T trained
# on the first 1,000 real Fashion-MNIST training images (about 100 per class),
# patch 4 on 28 px, top-1 on the full 10,000-image test split at the end.
# The tool sets the subset size (train_dataloader.dataset.indices), the seed
# and the schedule length; the four other models of the study differ only in
# their backbone.
_base_ = '../quickstart/localvit-tiny_2xb32_fashion-mnist.py'

train_dataloader = dict(batch_size=64, dataset=dict(indices=1000))
val_dataloader = dict(dataset=dict(indices=None))  # all 10,000 test images

# The quickstart's schedule (100 iterations, 10 of warm-up, then cosine),
# validated once, at the end.
train_cfg = dict(val_interval={{_base_.max_iters}})
default_hooks = dict(
    logger=dict(interval=10), checkpoint=dict(interval={{_base_.max_iters}}))

_base_ = [
    '../_base_/models/localvit-tiny.py',
    '../_base_/datasets/imagenet_bs128_localvit_224.py',
    '../_base_/schedules/imagenet_bs1024_adamw_localvit.py',
    '../_base_/default_runtime.py',
]

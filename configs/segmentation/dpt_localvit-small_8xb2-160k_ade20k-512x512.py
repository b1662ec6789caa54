_base_ = './dpt_localvit-tiny_8xb2-160k_ade20k-512x512.py'

# DPT with LocalViT-S (384 dims, 6 heads), the same protocol.
pretrained = 'checkpoints/localvit-small_in1k.pth'
embed_dims = 384
model = dict(
    backbone=dict(arch='small', init_cfg=dict(checkpoint=pretrained)),
    decode_head=dict(
        in_channels=(embed_dims, ) * 4,
        embed_dims=embed_dims,
        post_process_channels=[embed_dims // 8 * 2**i for i in range(4)]))

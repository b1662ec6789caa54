# T2T-ViT-7 (embed 256, 7 layers, 4 heads, mlp ratio 2) as mmpretrain's
# T2T_ViT backbone builds it: the baseline of LocalViT-T2T in
# tools/analysis_tools/benchmark.py. mmpretrain implements only the
# transformer token layers (softmax attention, the T2T-ViT-t variant), not
# the performer of T2T-ViT-7, so its first token layer attends over all
# 56x56 tokens. Drop path 0.1 as in configs/localvit_t2t.
_base_ = 'mmpretrain::t2t_vit/t2t-vit-t-14_8xb64_in1k.py'

model = dict(
    backbone=dict(
        embed_dims=256,
        num_layers=7,
        layer_cfgs=dict(num_heads=4, feedforward_channels=512),
        drop_path_rate=0.1),
    head=dict(in_channels=256))

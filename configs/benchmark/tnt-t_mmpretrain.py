# TNT-T (outer 192 / inner 12 dims, 12 layers, 3 / 3 heads) as mmpretrain's
# TNT backbone builds it: the baseline of LocalViT-TNT-T
# (configs/localvit_tnt/localvit-tnt-t_8xb128_in1k.py) in
# tools/analysis_tools/benchmark.py. mmpretrain has no tiny row, so the arch
# is given as a dict; its attention is mmcv's MultiheadAttention (fused qkv,
# no bias), the same size as TNT's qk + v. Drop path 0.1 as in the
# LocalViT-TNT recipe.
_base_ = 'mmpretrain::tnt/tnt-s-p16_16xb64_in1k.py'

model = dict(
    backbone=dict(
        arch=dict(
            _delete_=True,
            embed_dims_outer=192,
            embed_dims_inner=12,
            num_layers=12,
            num_heads_outer=3,
            num_heads_inner=3),
        drop_path_rate=0.1),
    head=dict(in_channels=192))

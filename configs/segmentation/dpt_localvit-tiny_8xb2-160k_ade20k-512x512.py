# DPT with a plain LocalViT-T backbone on ADE20K, mmseg's DPT protocol (ViT-B
# gets 46.97 mIoU with it): 512x512 crops, 8 GPUs x 2 images, 160k
# iterations, AdamW lr 6e-5, weight decay 0.01 (none on norms, position
# embedding and class token: the base's custom keys), 1500 linear warm-up
# iterations then poly decay.
# The head reassembles blocks 2, 5, 8 and 11 (no final norm) at strides 4, 8,
# 16 and 32; the class token is read out by 'project' (concatenated to every
# patch token, Linear 2C -> C, GELU); 'add' and 'ignore' are the other two.
# Reassemble channels scale with the width as in DPT (C/8, C/4, C/2, C).
#
# Backbone weights and BatchNorm options: see
# fpn_localvit-pvt-t_8xb4-40k_ade20k-512x512.py (here from
# checkpoints/localvit-tiny_in1k.pth); the position embedding is resized to
# the input lattice.
_base_ = ['mmseg::dpt/dpt_vit-b16_8xb2-160k_ade20k-512x512.py']
default_scope = 'mmseg'
custom_imports = dict(
    imports=['localvit_mm.models'], allow_failed_imports=False)

pretrained = 'checkpoints/localvit-tiny_in1k.pth'
embed_dims = 192
model = dict(
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='LocalViT',
        arch='tiny',
        img_size=224,
        patch_size=16,
        out_indices=(2, 5, 8, 11),
        out_type='featmap',
        output_cls_token=True,
        final_norm=False,
        drop_path_rate=0.1,
        ffn_cfg=dict(norm_cfg=dict(type='SyncBN', requires_grad=True)),
        norm_eval=False,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    decode_head=dict(
        in_channels=(embed_dims, ) * 4,
        embed_dims=embed_dims,
        post_process_channels=[embed_dims // 8 * 2**i for i in range(4)],
        readout_type='project'))

"""LocalViT-Swin: the Swin Transformer with the locality FFN in every block.

The official LocalViT code (``localvit_swin_tiny_patch4_window7_224``) puts
the locality feed-forward into each block of Swin-T (Liu et al., 2021):
h-swish and an SE whose reduction is a quarter of the stage channels, so it
keeps 16 of the ``4 * dims`` hidden channels. State-dict keys follow the
official Swin layout (``patch_embed``, ``layers.{i}.blocks.{j}``,
``layers.{i}.downsample``) except for the output norms, which are
``norm{i}`` per output stage as in mmdet and mmpretrain (the official final
``norm`` is ``norm3``); ``tools/model_converters`` renames official files.
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import MODELS
from ..layers import LocalViTBlock, PatchEmbed, tokens_to_lattice
from .base import LocalViTBackbone, se_ffn

# LocalViT-Swin's FFN: h-swish, SE with reduction = stage channels // 4
# (the squeeze keeps 16 channels in every stage).
_LOCALITY_FFN = se_ffn('embed_dims//4')
_SIZES = {
    'tiny': dict(embed_dims=96, depths=[2, 2, 6, 2], num_heads=[3, 6, 12, 24]),
    'small':
    dict(embed_dims=96, depths=[2, 2, 18, 2], num_heads=[3, 6, 12, 24]),
    'base':
    dict(embed_dims=128, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
}


class PatchMerging(nn.Module):
    """Swin's 2x2 patch merging: concatenate, LayerNorm, Linear 4C -> 2C.

    The four neighbours are concatenated in the official order (top-left,
    bottom-left, top-right, bottom-right), so official weights load as they
    are. An odd lattice is zero-padded at the bottom and right first.

    Args:
        embed_dims (int): Input channels C.
        norm_eps (float): LayerNorm eps. Defaults to 1e-5.
    """

    def __init__(self, embed_dims: int, norm_eps: float = 1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(4 * embed_dims, eps=norm_eps)
        self.reduction = nn.Linear(4 * embed_dims, 2 * embed_dims, bias=False)

    def forward(
            self, x: torch.Tensor,
            hw_shape: Sequence[int]) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Tokens (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C) and the new
        lattice."""
        B, _, C = x.shape
        H, W = hw_shape
        x = x.view(B, H, W, C)
        h, w = (H + 1) // 2, (W + 1) // 2
        # An exported graph pads (maybe by 0) for every input size.
        if torch.compiler.is_exporting() or H % 2 or W % 2:
            x = F.pad(x, (0, 0, 0, 2 * w - W, 0, 2 * h - H))
        # (B, h, dh, w, dw, C) -> (B, h, w, dw, dh, C): the channel blocks run
        # (dh, dw) = (0, 0), (1, 0), (0, 1), (1, 1)
        x = x.view(B, h, 2, w, 2, C).permute(0, 1, 3, 4, 2, 5)
        x = x.reshape(B, h * w, 4 * C)
        return self.reduction(self.norm(x)), (h, w)


class SwinStage(nn.Module):
    """The blocks of one stage (``blocks``) and the patch merging after them
    (``downsample``, None in the last stage): the official ``BasicLayer``."""

    def __init__(self,
                 blocks: Sequence[nn.Module],
                 downsample: Optional[nn.Module] = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.downsample = downsample


@MODELS.register_module()
class LocalViTSwin(LocalViTBackbone):
    """LocalViT-Swin backbone and its Swin baselines (locality off).

    A four-stage pyramid (strides 4/8/16/32) of shifted-window blocks for
    classification, detection and segmentation. Every input size works: the
    patch embedding, the windows and the patch merging pad the bottom and
    right as mmdet's Swin does, and the outputs have
    ``ceil(H / 4 / 2**i) x ceil(W / 4 / 2**i)`` positions. Each output stage
    has its own LayerNorm (``norm{i}``); a classifier reads stage 3 through
    ``norm3`` and global average pooling, as the official model does.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'base'``
            (LocalViT-Swin) or ``'swin-tiny'``, ``'swin-small'``,
            ``'swin-base'`` (plain Swin, GELU MLP), or a dict with
            ``embed_dims`` (of stage 0; doubled at every stage), ``depths``,
            ``num_heads`` and optionally ``mlp_ratio`` (4) and ``ffn_cfg``
            (None: plain MLP). Defaults to ``'tiny'``.
        in_channels (int): Input channels. Defaults to 3.
        patch_size (int): Patch size of the embedding. Defaults to 4.
        window_size (int): Attention window side. Defaults to 7.
        qkv_bias (bool): Bias of the qkv projections. Defaults to True.
        norm_eps (float): Eps of every LayerNorm. Defaults to 1e-5.
        drop_rate (float): Dropout after the patch embedding. Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear over all blocks
            (0.2 for Swin-T on ImageNet). Defaults to 0.1.
        out_indices (int | Sequence[int]): Stages to output. Defaults to
            (0, 1, 2, 3).
        ffn_cfg (dict, optional): Overrides of the locality FFN arguments
            (``norm_cfg=dict(type='SyncBN')``, ``act_cfg``, ``deploy``...).
            Defaults to None.
        attn_cfg (dict, optional): Options of every block's attention:
            ``dict(qkv_proj='life')`` builds LIFE projections that convolve
            each stage's whole lattice before the windows are cut.
            Defaults to None.
        frozen_stages (int): Freeze the patch embedding (0) and the first
            ``frozen_stages`` stages with their output norms; -1 freezes
            nothing. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
            Defaults to False.
        with_cp (bool): Activation checkpointing of the blocks.
            Defaults to False.
        init_cfg (dict | list[dict], optional): Applied after the official
            init, e.g. ``dict(type='Pretrained', checkpoint=...,
            prefix='backbone.')``. Defaults to None.
    """

    arch_zoo = {
        **{
            name: dict(size, ffn_cfg=_LOCALITY_FFN)
            for name, size in _SIZES.items()
        },
        **{
            f'swin-{name}': dict(size, ffn_cfg=None)
            for name, size in _SIZES.items()
        },
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 in_channels: int = 3,
                 patch_size: int = 4,
                 window_size: int = 7,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-5,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 ffn_cfg: Optional[dict] = None,
                 attn_cfg: Optional[dict] = None,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(
            frozen_stages, norm_eval, with_cp, init_cfg, attn_cfg=attn_cfg)
        self.arch_settings = self.parse_arch(
            arch, ('embed_dims', 'depths', 'num_heads'))
        depths = self.arch_settings['depths']
        num_heads = self.arch_settings['num_heads']
        if len(depths) != len(num_heads):
            raise ValueError(f'depths {list(depths)} and num_heads '
                             f'{list(num_heads)} differ in length')
        self.num_stages = len(depths)
        self.embed_dims = [
            self.arch_settings['embed_dims'] * 2**i
            for i in range(self.num_stages)
        ]
        arch_ffn = self.arch_settings.get('ffn_cfg')
        ffn = self.merge_ffn_cfg(arch_ffn, ffn_cfg)
        mlp_ratio = ffn.pop('mlp_ratio',
                            self.arch_settings.get('mlp_ratio', 4))
        with_locality = arch_ffn is not None
        self.set_outputs(out_indices, 'featmap', self.num_stages, 'stages')

        self.patch_embed = PatchEmbed(
            in_channels,
            self.embed_dims[0],
            patch_size,
            norm_eps=norm_eps,
            pad=True)
        self.pos_drop = nn.Dropout(drop_rate)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        for i, (dims, depth,
                heads) in enumerate(zip(self.embed_dims, depths, num_heads)):
            start = sum(depths[:i])
            blocks = [
                LocalViTBlock(
                    dims,
                    heads,
                    mlp_ratio,
                    attn_cfg=self.block_attn_cfg(
                        'WindowAttention',
                        window_size=window_size,
                        shift_size=0 if j % 2 == 0 else window_size // 2,
                        qkv_bias=qkv_bias),
                    drop_path_rate=dpr[start + j],
                    with_locality=with_locality,
                    ffn_cfg=ffn,
                    norm_eps=norm_eps) for j in range(depth)
            ]
            downsample = PatchMerging(dims, norm_eps) \
                if i < self.num_stages - 1 else None
            self.layers.append(SwinStage(blocks, downsample))
        for i in self.out_indices:
            self.add_module(f'norm{i}',
                            nn.LayerNorm(self.embed_dims[i], eps=norm_eps))
        self._freeze_stages()

    def embeddings(self):
        """The relative position bias tables, drawn trunc-normal(0.02) by
        :meth:`init_weights` as in the official code."""
        return [
            m.relative_position_bias_table for m in self.modules()
            if hasattr(m, 'relative_position_bias_table')
        ]

    def frozen_parts(self, num_frozen: int):
        """The patch embedding, the first ``num_frozen`` stages (with the
        patch merging after them) and their output norms."""
        modules = [self.patch_embed, *self.layers[:num_frozen]]
        modules += [
            getattr(self, f'norm{i}') for i in self.out_indices
            if i < num_frozen
        ]
        return modules, []

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Images (B, C, H, W) -> one (B, C_i, H_i, W_i) map per output
        stage."""
        x, hw_shape = self.patch_embed(x)
        x = self.pos_drop(x)
        outs = []
        for i, stage in enumerate(self.layers):
            for block in stage.blocks:
                x = self.run_block(block, x, hw_shape, 0)
            if i in self.out_indices:
                out = getattr(self, f'norm{i}')(x)
                outs.append(tokens_to_lattice(out, hw_shape).contiguous())
            if stage.downsample is not None:
                x, hw_shape = stage.downsample(x, hw_shape)
        return tuple(outs)

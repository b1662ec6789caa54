"""LocalViT-TNT: Transformer in Transformer with the locality FFN.

TNT (Han et al., 2021) runs two transformers per layer: an inner one over the
pixels of each 16x16 patch (a 4x4 lattice of 12-channel pixel tokens for
TNT-T) and an outer one over the patches, which receive a projection of their
pixels before attending. LocalViT (Li et al., 2021) replaces the outer
feed-forward by the locality FFN; the inner pixel MLP stays a GELU MLP.

Both transformers are :class:`LocalViTBlock` s with :class:`TNTAttention`.
Top-level keys keep the official names (``pixel_embed.proj``, ``pixel_pos``,
``norm1_proj``, ``proj``, ``norm2_proj``, ``cls_token``, ``patch_pos``,
``norm``); in a layer the inner block is ``inner``, the pixel-to-patch
projection ``norm_proj`` + ``proj`` and the outer block ``outer``
(``tools/model_converters`` renames official files).
"""
import math
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.model import BaseModule

from ...registry import MODELS
from ..layers import (LocalViTBlock, PatchEmbed, load_pos_embed,
                      resize_pos_embed)
from .base import LocalViTBackbone, se_ffn


class TNTBlock(BaseModule):
    """One TNT layer: the inner block, the pixel-to-patch projection, the
    outer block.

    The inner block attends among the pixels of each patch (no class token,
    plain GELU MLP, drop path on both branches). The outer block adds the
    projected pixels to the patch tokens (not to the class token) and then
    runs the LocalViT block: locality FFN without a norm before it, drop
    path on the attention branch only; or, for the baseline, a plain block.

    Args:
        embed_dims (int): Patch-token channels.
        inner_dims (int): Pixel-token channels.
        pixel_shape (tuple[int, int]): Pixel lattice of one patch.
        num_heads (int): Heads of the outer attention.
        inner_num_heads (int): Heads of the inner attention.
        mlp_ratio (float): Expansion of the outer FFN. Defaults to 4.
        inner_mlp_ratio (float): Expansion of the inner MLP. Defaults to 4.
        attn_cfg (dict, optional): The attention of both blocks; None is
            :class:`TNTAttention` without biases. Defaults to None.
        drop_path_rate (float): Stochastic depth of this layer (inner and
            outer alike, as officially). Defaults to 0.
        with_locality (bool): Locality FFN in the outer block.
            Defaults to True.
        ffn_cfg (dict, optional): Options of the locality FFN.
            Defaults to None.
        norm_eps (float): Eps of every LayerNorm. Defaults to 1e-5.
    """

    def __init__(self,
                 embed_dims: int,
                 inner_dims: int,
                 pixel_shape: Tuple[int, int],
                 num_heads: int,
                 inner_num_heads: int,
                 mlp_ratio: float = 4.,
                 inner_mlp_ratio: float = 4.,
                 attn_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0.,
                 with_locality: bool = True,
                 ffn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-5):
        super().__init__()
        self.pixel_shape = tuple(pixel_shape)
        attn_cfg = attn_cfg or dict(type='TNTAttention', qkv_bias=False)
        self.inner = LocalViTBlock(
            inner_dims,
            inner_num_heads,
            inner_mlp_ratio,
            attn_cfg=attn_cfg,
            drop_path_rate=drop_path_rate,
            with_locality=False,
            norm_eps=norm_eps)
        self.norm_proj = nn.LayerNorm(inner_dims, eps=norm_eps)
        self.proj = nn.Linear(inner_dims * math.prod(pixel_shape), embed_dims)
        self.outer = LocalViTBlock(
            embed_dims,
            num_heads,
            mlp_ratio,
            attn_cfg=attn_cfg,
            drop_path_rate=drop_path_rate,
            with_locality=with_locality,
            ffn_cfg=ffn_cfg,
            norm_eps=norm_eps)

    def forward(self, pixels: torch.Tensor, patches: torch.Tensor,
                hw_shape: Sequence[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Pixels (B*h*w, k*k, c) and patches (B, 1 + h*w, C) -> both
        updated."""
        pixels = self.inner(pixels, self.pixel_shape, 0)
        update = self.proj(
            self.norm_proj(pixels).reshape(patches.shape[0], -1,
                                           self.proj.in_features))
        # The class token (first position) gets no pixel update.
        patches = torch.cat([patches[:, :1], patches[:, 1:] + update], dim=1)
        return pixels, self.outer(patches, hw_shape, 1)


def _arch(embed_dims, inner_dims, num_heads, inner_num_heads, ffn_cfg):
    return dict(
        embed_dims=embed_dims,
        inner_dims=inner_dims,
        num_layers=12,
        num_heads=num_heads,
        inner_num_heads=inner_num_heads,
        mlp_ratio=4,
        inner_mlp_ratio=4,
        ffn_cfg=ffn_cfg)


@MODELS.register_module()
class LocalViTTNT(LocalViTBackbone):
    """LocalViT-TNT backbone and its TNT baselines (Li et al., 2021).

    The image is embedded twice: a 7x7 conv with stride 4 over the whole
    image gives pixel tokens, which are grouped by 16x16 patch (4x4 pixels
    each) and get a per-pixel position embedding ``pixel_pos`` shared by all
    patches; the flattened pixels of each patch, projected, are the patch
    tokens, which get the class token and the patch position embedding
    ``patch_pos``. ``patch_pos`` is resized (bicubic) to the input's patch
    lattice, so any input size works; inputs the patch does not divide are
    zero-padded at the bottom and right.

    Archs (``arch_zoo``, 12 layers, MLP ratios 4, official LocalViT-TNT and
    TNT settings):

    =============  ====  =====  =====  =====  ============  ===========
    name           dims  inner  heads  inner  outer FFN     params(1k)
                                       heads
    =============  ====  =====  =====  =====  ============  ===========
    ``tiny``       192   12     3      3      hs + SE r192  6,261,064
    ``small``      384   24     6      4      hs + SE r384
    ``tnt-tiny``   192   12     3      3      GELU MLP      6,069,784
    ``tnt-small``  384   24     6      4      GELU MLP
    =============  ====  =====  =====  =====  ============  ===========

    Args:
        arch (str | dict): A name of ``arch_zoo`` or a dict with
            ``embed_dims``, ``inner_dims``, ``num_layers``, ``num_heads`` and
            ``inner_num_heads``, optionally ``mlp_ratio`` (4),
            ``inner_mlp_ratio`` (4) and ``ffn_cfg`` (the outer FFN's options;
            missing means h-swish + SE with reduction ``embed_dims``, the
            LocalViT-TNT rule; None makes a plain TNT). Defaults to 'tiny'.
        img_size (int | tuple[int, int]): Input size the patch position
            embedding is made for. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        pixel_stride (int): Stride of the pixel-embedding conv (TNT's
            ``first_stride``); it must divide ``patch_size``, each patch then
            holds ``(patch_size // pixel_stride)**2`` pixel tokens.
            Defaults to 4.
        ffn_cfg (dict, optional): Overrides of the arch's outer FFN options
            (``act_cfg``, ``channel_attention``, ``kernel_size``,
            ``with_dw_conv``, ``norm_cfg``, ``mlp_ratio``, ``deploy``,
            ``fused``); a ``tnt-*`` baseline takes only ``mlp_ratio``.
            Defaults to None.
        attn_cfg (dict, optional): Options of the inner and outer attention:
            ``dict(qkv_proj='life')`` builds one LIFE ``qkv`` in each, on the
            pixel lattice of a patch and on the patch lattice.
            Defaults to None.
        drop_rate (float): Dropout after the patch position embedding.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear from 0 over the
            layers. Defaults to 0.
        qkv_bias (bool): Bias of the ``qk`` and ``v`` projections.
            Defaults to False.
        norm_eps (float): Eps of every LayerNorm. Defaults to 1e-5.
        out_indices (int | Sequence[int]): Layers whose patch-level outputs
            are returned; negative indices count from the end.
            Defaults to -1.
        out_type (str): 'raw' (class and patch tokens, (B, 1 + h*w, C)),
            'cls_token' ((B, C)), 'featmap' ((B, C, h, w)) or 'avg_featmap'
            (mean of the patch tokens, (B, C)). Defaults to 'cls_token'.
        final_norm (bool): Apply ``norm`` after the last layer.
            Defaults to True.
        interpolate_mode (str): How ``patch_pos`` is resized.
            Defaults to 'bicubic'.
        frozen_stages (int): -1 freezes nothing; ``n >= 0`` freezes the
            embeddings and the first ``n`` layers, and ``norm`` too when
            ``n == num_layers``. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
            Defaults to False.
        with_cp (bool): Activation checkpointing of the layers.
            Defaults to False.
        init_cfg (dict | list[dict], optional): Applied after the official
            init (trunc-normal 0.02 for Linear layers, position embeddings and
            class token; LayerNorm 1/0; convolutions and BN keep the PyTorch
            defaults). Defaults to None.
    """

    arch_zoo = {
        'tiny': _arch(192, 12, 3, 3, se_ffn(192)),
        'small': _arch(384, 24, 6, 4, se_ffn(384)),
        'tnt-tiny': _arch(192, 12, 3, 3, None),
        'tnt-small': _arch(384, 24, 6, 4, None),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 pixel_stride: int = 4,
                 ffn_cfg: Optional[dict] = None,
                 attn_cfg: Optional[dict] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = False,
                 norm_eps: float = 1e-5,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 final_norm: bool = True,
                 interpolate_mode: str = 'bicubic',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(
            frozen_stages, norm_eval, with_cp, init_cfg, attn_cfg=attn_cfg)
        arch = self.parse_arch(arch, ('embed_dims', 'inner_dims', 'num_layers',
                                      'num_heads', 'inner_num_heads'))
        defaults = dict(
            mlp_ratio=4, inner_mlp_ratio=4, ffn_cfg=se_ffn(arch['embed_dims']))
        arch = {**defaults, **arch}
        self.embed_dims = arch['embed_dims']
        self.num_layers = arch['num_layers']
        if patch_size % pixel_stride:
            raise ValueError(f'pixel_stride {pixel_stride} does not divide '
                             f'patch_size {patch_size}')
        self.set_outputs(out_indices, out_type, self.num_layers, 'layers')
        self.interpolate_mode = interpolate_mode
        self.patch_size = patch_size
        img_size = (img_size, ) * 2 if isinstance(img_size, int) else img_size
        self.patch_resolution = tuple(
            math.ceil(s / patch_size) for s in img_size)

        k = patch_size // pixel_stride
        self.pixel_shape = (k, k)
        inner = arch['inner_dims']
        self.pixel_embed = PatchEmbed(
            in_channels, inner, 7, stride=pixel_stride, padding=3)
        self.norm1_proj = nn.LayerNorm(k * k * inner, eps=norm_eps)
        self.proj = nn.Linear(k * k * inner, self.embed_dims)
        self.norm2_proj = nn.LayerNorm(self.embed_dims, eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.patch_pos = nn.Parameter(
            torch.zeros(1, 1 + math.prod(self.patch_resolution),
                        self.embed_dims))
        self.pixel_pos = nn.Parameter(torch.zeros(1, inner, k, k))
        self.pos_drop = nn.Dropout(drop_rate)
        self._register_load_state_dict_pre_hook(self._prepare_pos_embed)

        with_locality = arch['ffn_cfg'] is not None
        block_ffn = self.merge_ffn_cfg(arch['ffn_cfg'], ffn_cfg) or {}
        mlp_ratio = block_ffn.pop('mlp_ratio', arch['mlp_ratio'])
        if block_ffn and not with_locality:
            raise ValueError(f'ffn_cfg {sorted(block_ffn)} needs a locality '
                             'FFN; this arch has plain MLPs (only '
                             'mlp_ratio applies)')
        dpr = [
            drop_path_rate * i / max(self.num_layers - 1, 1)
            for i in range(self.num_layers)
        ]
        self.blocks = nn.ModuleList(
            TNTBlock(
                self.embed_dims,
                inner,
                self.pixel_shape,
                arch['num_heads'],
                arch['inner_num_heads'],
                mlp_ratio,
                arch['inner_mlp_ratio'],
                attn_cfg=self.block_attn_cfg(
                    'TNTAttention', qkv_bias=qkv_bias),
                drop_path_rate=dpr[i],
                with_locality=with_locality,
                ffn_cfg=block_ffn,
                norm_eps=norm_eps) for i in range(self.num_layers))
        self.norm = nn.LayerNorm(
            self.embed_dims, eps=norm_eps) if final_norm else nn.Identity()

        self._freeze_stages()

    def frozen_parts(
            self,
            num_frozen: int) -> Tuple[List[nn.Module], List[nn.Parameter]]:
        """The embeddings, the first ``num_frozen`` layers, and ``norm``
        once all layers are frozen."""
        modules = [
            self.pixel_embed, self.norm1_proj, self.proj, self.norm2_proj,
            *self.blocks[:num_frozen]
        ]
        if num_frozen >= self.num_layers:
            modules.append(self.norm)
        return modules, [self.cls_token, self.patch_pos, self.pixel_pos]

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Resize a checkpoint's ``patch_pos`` (square lattice) to this
        model's patch lattice."""
        load_pos_embed(state_dict, prefix + 'patch_pos', self.patch_resolution,
                       1, self.interpolate_mode)

    def embed(self, x: torch.Tensor):
        """Images (B, C, H, W) -> pixel tokens (B*h*w, k*k, c), patch tokens
        with the class token (B, 1 + h*w, C) and the patch lattice (h, w)."""
        p = self.patch_size
        pad_h, pad_w = -x.shape[2] % p, -x.shape[3] % p
        # An exported graph pads (maybe by 0) for every input size.
        if torch.compiler.is_exporting() or pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        pixels, (H, W) = self.pixel_embed(x)  # conv over the whole image
        k = self.pixel_shape[0]
        B, h, w, c = x.shape[0], H // k, W // k, pixels.shape[-1]
        # Group the pixel lattice by patch: (B, h, k, w, k, c) -> per patch.
        pixels = pixels.reshape(B, h, k, w, k, c).transpose(2, 3)
        pixels = pixels.reshape(B * h * w, k * k, c) + \
            self.pixel_pos.flatten(2).transpose(1, 2)
        patches = self.norm2_proj(
            self.proj(self.norm1_proj(pixels.reshape(B, h * w, -1))))
        patches = torch.cat([self.cls_token.expand(B, -1, -1), patches], 1)
        patches = patches + resize_pos_embed(self.patch_pos,
                                             self.patch_resolution,
                                             (h, w), self.interpolate_mode, 1)
        return pixels, self.pos_drop(patches), (h, w)

    def forward(self, x: torch.Tensor) -> tuple:
        """(B, C, H, W) images -> tuple of outputs of ``out_indices``."""
        pixels, patches, hw_shape = self.embed(x)
        outs = []
        for i, block in enumerate(self.blocks):
            pixels, patches = self.run_block(block, pixels, patches, hw_shape)
            if i == self.num_layers - 1:
                patches = self.norm(patches)
            if i in self.out_indices:
                outs.append(self.format_tokens(patches, hw_shape))
        return tuple(outs)

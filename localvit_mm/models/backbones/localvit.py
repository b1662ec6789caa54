"""LocalViT: a DeiT-style vision transformer with the locality feed-forward.

One class builds LocalViT-T/S/B, the ablations of the paper (activation,
channel attention, expansion ratio, placement, depth-wise conv) and the DeiT
baselines (locality switched off), so every comparison runs the same code.
"""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn

from ...registry import MODELS
from ..layers import (LocalViTBlock, PatchEmbed, load_pos_embed,
                      resize_pos_embed)
from .base import LocalViTBackbone, se_ffn


@MODELS.register_module()
class LocalViT(LocalViTBackbone):
    """LocalViT backbone (Li et al., 2021, arXiv 2104.05707), DeiT layout.

    A ViT whose feed-forward is the locality FFN (1x1 conv, depth-wise conv,
    1x1 conv on the patch lattice, residual inside, no LayerNorm before it).
    Blocks outside ``locality_layers`` are plain ViT blocks, so the ``deit-*``
    archs are DeiT itself. State-dict names follow timm: ``patch_embed.proj``,
    ``cls_token``, ``pos_embed``, ``blocks.{i}`` and ``norm`` (the final
    LayerNorm).

    Archs (``arch_zoo``; the SE reduction is the divisor of the hidden
    channels, see :class:`SELayer`):

    ===================  ====  =====  =====  ===================  ===========
    name                 dims  heads  gamma  FFN                  params(1k)
    ===================  ====  =====  =====  ===================  ===========
    ``tiny``             192   4      4      hs + SE r192         5,908,696
    ``tiny-se4``         192   4      4      hs + SE r4           9,376,168
    ``small``            384   8      4      hs + SE r384         22,433,176
    ``base``             768   16     4      hs + SE r768         ~87.33M
    ``tiny-relu6-mlp6``  192   4      6      ReLU6, no SE         7,655,080
    ``deit-tiny``        192   3      4      GELU MLP             5,717,416
    ``deit-small``       384   6      4      GELU MLP             22,050,664
    ===================  ====  =====  =====  ===================  ===========

    Args:
        arch (str | dict): A name of ``arch_zoo`` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optionally
            ``mlp_ratio`` (4) and ``ffn_cfg`` (a dict of FFN options, ``{}``
            when missing; None makes every block a plain ViT block).
            Defaults to 'tiny'.
        img_size (int | tuple[int, int]): Input size the position
            embeddings are made for. Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        in_channels (int): Input channels. Defaults to 3.
        locality_layers (Sequence[int], optional): 0-based indices of the
            blocks that get the locality FFN (paper Table 3: layers 1-4 are
            ``[0, 1, 2, 3]``). None means all blocks when the arch has an
            ``ffn_cfg`` and none otherwise. Defaults to None.
        ffn_cfg (dict, optional): Overrides of the arch's FFN options:
            ``act_cfg``, ``channel_attention``, ``kernel_size``,
            ``with_dw_conv``, ``norm_cfg``, ``mlp_ratio`` (the expansion
            ratio of every block's feed-forward) and ``deploy`` (build the
            BatchNorm-free form of :meth:`switch_to_deploy`). Defaults to
            None.
        attn_cfg (dict, optional): Options of every block's attention:
            ``dict(qkv_proj='life')`` builds LIFE q/k/v projections (alone
            on a ``deit-*`` arch, with the locality FFN otherwise).
            Defaults to None.
        drop_rate (float): Dropout after the position embedding.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear from 0 over depth;
            locality blocks apply it to the attention branch only.
            Defaults to 0.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        norm_eps (float): Eps of every LayerNorm. Defaults to 1e-6.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned;
            negative indices count from the end. Defaults to -1.
        out_type (str): 'raw' (all tokens, (B, N, C)), 'cls_token' ((B, C)),
            'featmap' ((B, C, h, w) patch tokens) or 'avg_featmap' (mean of
            the patch tokens, (B, C)). Defaults to 'cls_token'.
        with_cls_token (bool): Prepend a class token. Defaults to True.
        output_cls_token (bool): Return each output as ``[out, cls_token]``
            (mmseg's ``DPTHead`` reads ``[featmap, cls_token]`` pairs).
            Defaults to False.
        final_norm (bool): Apply ``norm`` after the last block.
            Defaults to True.
        frozen_stages (int): -1 freezes nothing; ``n >= 0`` freezes the
            embeddings and the first ``n`` blocks (parameters and BN
            statistics), and ``norm`` too when ``n == num_layers``.
            Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training
            (small per-GPU batches in detection). Defaults to False.
        interpolate_mode (str): How position embeddings are resized.
            Defaults to 'bicubic'.
        with_cp (bool): Activation checkpointing of the blocks (saves memory,
            costs a second forward, which also updates the FFN's BatchNorm
            statistics a second time). Defaults to False.
        init_cfg (dict | list[dict], optional): Applied after the official
            init (trunc-normal 0.02 for Linear layers, position embedding and
            class token; LayerNorm 1/0; convolutions, the FFN's 1x1 convs
            included, and BN keep the PyTorch defaults). Defaults to None.
    """

    arch_zoo = {
        'tiny':
        dict(
            embed_dims=192,
            num_layers=12,
            num_heads=4,
            mlp_ratio=4,
            ffn_cfg=se_ffn(192)),
        'tiny-se4':
        dict(
            embed_dims=192,
            num_layers=12,
            num_heads=4,
            mlp_ratio=4,
            ffn_cfg=se_ffn(4)),
        'small':
        dict(
            embed_dims=384,
            num_layers=12,
            num_heads=8,
            mlp_ratio=4,
            ffn_cfg=se_ffn(384)),
        'base':
        dict(
            embed_dims=768,
            num_layers=12,
            num_heads=16,
            mlp_ratio=4,
            ffn_cfg=se_ffn(768)),
        'tiny-relu6-mlp6':
        dict(
            embed_dims=192,
            num_layers=12,
            num_heads=4,
            mlp_ratio=6,
            ffn_cfg=dict(act_cfg=dict(type='ReLU6'), channel_attention=None)),
        'deit-tiny':
        dict(
            embed_dims=192,
            num_layers=12,
            num_heads=3,
            mlp_ratio=4,
            ffn_cfg=None),
        'deit-small':
        dict(
            embed_dims=384,
            num_layers=12,
            num_heads=6,
            mlp_ratio=4,
            ffn_cfg=None),
    }

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 in_channels: int = 3,
                 locality_layers: Optional[Sequence[int]] = None,
                 ffn_cfg: Optional[dict] = None,
                 attn_cfg: Optional[dict] = None,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 qkv_bias: bool = True,
                 norm_eps: float = 1e-6,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 with_cls_token: bool = True,
                 output_cls_token: bool = False,
                 final_norm: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 interpolate_mode: str = 'bicubic',
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(
            frozen_stages, norm_eval, with_cp, init_cfg, attn_cfg=attn_cfg)
        self.arch_settings = self.parse_arch(
            arch, ('embed_dims', 'num_layers', 'num_heads'))
        self.arch_settings.setdefault('mlp_ratio', 4)
        self.arch_settings.setdefault('ffn_cfg', {})
        self.embed_dims = self.arch_settings['embed_dims']
        self.num_layers = self.arch_settings['num_layers']
        if not with_cls_token and (out_type == 'cls_token'
                                   or output_cls_token):
            raise ValueError('out_type="cls_token" and output_cls_token '
                             'need with_cls_token=True')
        self.set_outputs(out_indices, out_type, self.num_layers)
        self.output_cls_token = output_cls_token
        self.final_norm = final_norm
        self.interpolate_mode = interpolate_mode
        self.num_extra_tokens = int(with_cls_token)

        img_size = (img_size, ) * 2 if isinstance(img_size, int) else img_size
        self.patch_resolution = tuple(s // patch_size for s in img_size)
        # Padded up to whole patches: dense inputs of any size keep their
        # border (sizes the patch divides, as in classification, are as is).
        self.patch_embed = PatchEmbed(
            in_channels, self.embed_dims, patch_size, pad=True)
        self.cls_token = nn.Parameter(torch.zeros(
            1, 1, self.embed_dims)) if with_cls_token else None
        num_positions = math.prod(self.patch_resolution) + \
            self.num_extra_tokens
        self.pos_embed = nn.Parameter(
            torch.zeros(1, num_positions, self.embed_dims))
        self.pos_drop = nn.Dropout(drop_rate)
        self._register_load_state_dict_pre_hook(self._prepare_pos_embed)

        mlp_ratio, block_ffn_cfg, locality = self._parse_ffn(
            ffn_cfg, locality_layers)
        self.locality_layers = locality
        dpr = [
            drop_path_rate * i / max(self.num_layers - 1, 1)
            for i in range(self.num_layers)
        ]
        self.blocks = nn.ModuleList(
            LocalViTBlock(
                self.embed_dims,
                self.arch_settings['num_heads'],
                mlp_ratio=mlp_ratio,
                attn_cfg=self.block_attn_cfg('Attention', qkv_bias=qkv_bias),
                drop_path_rate=dpr[i],
                with_locality=i in locality,
                ffn_cfg=block_ffn_cfg,
                norm_eps=norm_eps) for i in range(self.num_layers))
        self.norm = nn.LayerNorm(
            self.embed_dims, eps=norm_eps) if final_norm else nn.Identity()
        self._freeze_stages()

    def _parse_ffn(self, ffn_cfg: Optional[dict],
                   locality_layers: Optional[Sequence[int]]):
        """Merge the arch's FFN options with the overrides; pick the blocks."""
        arch_ffn = self.arch_settings['ffn_cfg']
        merged = self.merge_ffn_cfg(arch_ffn, ffn_cfg) or {}
        mlp_ratio = merged.pop('mlp_ratio', self.arch_settings['mlp_ratio'])
        if locality_layers is None:
            locality_layers = range(self.num_layers) if arch_ffn is not None \
                else ()
        bad = [i for i in locality_layers if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f'locality_layers {bad} are not block indices '
                             f'0..{self.num_layers - 1}')
        return mlp_ratio, merged, tuple(sorted(set(locality_layers)))

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        """Fit a checkpoint's position embedding to this model's lattice;
        drop its class token when this model has none."""
        ckpt_extra = 1 if prefix + 'cls_token' in state_dict else None
        if self.cls_token is None:
            state_dict.pop(prefix + 'cls_token', None)
        name = prefix + 'pos_embed'
        if state_dict.get(name, self.pos_embed).shape != self.pos_embed.shape:
            load_pos_embed(state_dict, name, self.patch_resolution,
                           self.num_extra_tokens, self.interpolate_mode,
                           ckpt_extra)

    def frozen_parts(self, num_frozen: int):
        """The embeddings and the first ``num_frozen`` blocks; the final norm
        too when every block is frozen."""
        modules = [self.patch_embed, *self.blocks[:num_frozen]]
        if num_frozen >= self.num_layers:
            modules.append(self.norm)
        params = [self.pos_embed]
        if self.cls_token is not None:
            params.append(self.cls_token)
        return modules, params

    def forward(self, x: torch.Tensor) -> tuple:
        """(B, C, H, W) images -> tuple of outputs of ``out_indices``."""
        x, hw_shape = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution,
                                 hw_shape, self.interpolate_mode,
                                 self.num_extra_tokens)
        return self.forward_blocks(self.pos_drop(x), hw_shape)

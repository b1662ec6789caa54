"""The transformer block shared by every LocalViT backbone."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn.bricks import DropPath
from mmengine.model import BaseModule

from ...registry import ATTENTIONS
from .locality_ffn import LocalityFeedForward


def build_attention(attn_cfg: Optional[dict], embed_dims: int,
                    num_heads: int) -> nn.Module:
    """An attention module of :data:`ATTENTIONS` from its config
    (``dict(type='Attention', qkv_bias=True)`` when None).

    The class is looked up in this registry alone, whatever the default
    scope of the running codebase (attention parts are not shared with it).
    """
    cfg = dict(type='Attention', qkv_bias=True) if attn_cfg is None \
        else dict(attn_cfg)
    name = cfg.pop('type')
    cls = ATTENTIONS.get(name)
    if cls is None:
        raise KeyError(f'{name!r} is not an attention of localvit_mm; '
                       f'known: {sorted(ATTENTIONS.module_dict)}')
    return cls(embed_dims, num_heads, **cfg)


class Mlp(nn.Module):
    """The plain ViT feed-forward: Linear -> GELU -> Linear."""

    def __init__(self, embed_dims: int, hidden_dims: int):
        super().__init__()
        self.fc1 = nn.Linear(embed_dims, hidden_dims)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, embed_dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LocalViTBlock(BaseModule):
    """Attention, then the locality feed-forward or a plain MLP.

    The attention is built from ``attn_cfg`` (global, spatial reduction,
    window...), so every backbone uses this one block. With locality (paper
    Fig. 2) the block keeps only ``norm1`` and drop path
    acts on the attention branch alone; the FFN holds its own residual.
    Without it the block is a plain ViT block (``norm2`` + GELU MLP), so one
    class builds LocalViT and its DeiT/PVT baselines.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        mlp_ratio (float): FFN expansion ratio. Defaults to 4.
        attn_cfg (dict, optional): The attention, a type of
            :data:`~localvit_mm.registry.ATTENTIONS` and its arguments besides
            ``embed_dims`` and ``num_heads``, e.g.
            ``dict(type='SpatialReductionAttention', sr_ratio=8)``. None is
            ViT attention with a fused, biased ``qkv``. Every attention takes
            ``qkv_proj='life'``, which puts locality into its q/k/v
            projection (:class:`~.LIFE`), with or without the locality FFN.
            Defaults to None.
        drop_path_rate (float): Stochastic depth rate. Defaults to 0.
        with_locality (bool): Locality FFN or plain MLP. Defaults to True.
        ffn_cfg (dict, optional): Extra arguments of
            :class:`LocalityFeedForward` (act_cfg, channel_attention,
            kernel_size, with_dw_conv, norm_cfg). Defaults to None.
        norm_eps (float): Eps of the block LayerNorms. Defaults to 1e-6.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 mlp_ratio: float = 4.,
                 attn_cfg: Optional[dict] = None,
                 drop_path_rate: float = 0.,
                 with_locality: bool = True,
                 ffn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-6,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.with_locality = with_locality
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = build_attention(attn_cfg, embed_dims, num_heads)
        self.drop_path = DropPath(drop_path_rate)
        if with_locality:
            self.ffn = LocalityFeedForward(
                embed_dims, expansion_ratio=mlp_ratio, **(ffn_cfg or {}))
        else:
            self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
            self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio))

    def forward(self,
                x: torch.Tensor,
                hw_shape: Sequence[int],
                num_extra_tokens: int = 1) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        if self.with_locality:  # x is this block's own tensor now
            return self.ffn(x, hw_shape, num_extra_tokens, inplace=True)
        return x + self.drop_path(self.mlp(self.norm2(x)))

"""Multi-head self-attention of the LocalViT blocks (timm key layout).

Both run on ``F.scaled_dot_product_attention`` and are registered in
:data:`~localvit_mm.registry.ATTENTIONS`, so a block builds either from its
``attn_cfg``. Their q/k/v projections are Linear layers or, with
``qkv_proj='life'``, the multi-scale projection of :mod:`.life`.
"""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import ATTENTIONS
from .lattice import lattice_to_tokens, tokens_to_lattice
from .life import build_qkv_proj, run_qkv_proj


def check_heads(embed_dims: int, num_heads: int):
    """Refuse channels that the heads do not split evenly."""
    if embed_dims % num_heads:
        raise ValueError(f'embed_dims {embed_dims} is not divisible by '
                         f'num_heads {num_heads}')


def split_heads(x: torch.Tensor, num_chunks: int,
                num_heads: int) -> torch.Tensor:
    """(B, N, chunks * C) -> (chunks, B, heads, N, C // heads)."""
    B, N, _ = x.shape
    return x.reshape(B, N, num_chunks, num_heads, -1).permute(2, 0, 3, 1, 4)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, c) -> (B, N, heads * c)."""
    B, _, N, _ = x.shape
    return x.transpose(1, 2).reshape(B, N, -1)


@ATTENTIONS.register_module()
class Attention(nn.Module):
    """ViT attention with one fused ``qkv`` projection.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        qk_scale (float, optional): Scale of the attention logits; None is
            ``head_dims ** -0.5`` (T2T-ViT-7's released weights were trained
            with ``256 ** -0.5``). Defaults to None.
        qkv_proj (str | dict): ``'linear'`` or ``'life'`` (:class:`~.LIFE`
            on the tokens' lattice, or a dict with its options).
            Defaults to 'linear'.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 qk_scale: Optional[float] = None,
                 qkv_proj: Union[str, dict] = 'linear'):
        super().__init__()
        check_heads(embed_dims, num_heads)
        self.num_heads = num_heads
        self.qk_scale = qk_scale
        self.qkv = build_qkv_proj(qkv_proj, embed_dims, 3, qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int] = None):
        q, k, v = split_heads(
            run_qkv_proj(self.qkv, x, hw_shape), 3, self.num_heads)
        return self.proj(
            merge_heads(
                F.scaled_dot_product_attention(q, k, v, scale=self.qk_scale)))


@ATTENTIONS.register_module()
class SpatialReductionAttention(nn.Module):
    """PVT attention: keys and values from a lattice shrunk by ``sr_ratio``.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        qkv_bias (bool): Bias of the q and kv projections. Defaults to True.
        sr_ratio (int): Kernel and stride of the reduction conv; 1 keeps the
            full lattice. Defaults to 1.
        norm_eps (float): Eps of the LayerNorm after the reduction (PVT uses
            1e-5). Defaults to 1e-5.
        qkv_proj (str | dict): ``'linear'`` or ``'life'``: then ``q`` is a
            :class:`~.LIFE` of one output on the full lattice and ``kv`` one
            of two outputs on the reduced lattice. The two see different
            tokens, so they cannot share scales, and their pointwise weights
            (``19 C**2 / 9``) are fewer than the Linears' ``3 C**2``
            (LocalViT-PVT-T: 615,584 parameters fewer). Defaults to 'linear'.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = True,
                 sr_ratio: int = 1,
                 norm_eps: float = 1e-5,
                 qkv_proj: Union[str, dict] = 'linear'):
        super().__init__()
        check_heads(embed_dims, num_heads)
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.q = build_qkv_proj(qkv_proj, embed_dims, 1, qkv_bias)
        self.kv = build_qkv_proj(qkv_proj, embed_dims, 2, qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(
                embed_dims, embed_dims, sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def forward(self, x: torch.Tensor, hw_shape: Sequence[int]):
        q = split_heads(run_qkv_proj(self.q, x, hw_shape), 1,
                        self.num_heads)[0]
        source, source_shape = x, hw_shape
        if self.sr_ratio > 1:
            lattice = self.sr(tokens_to_lattice(x, hw_shape))
            source_shape = tuple(lattice.shape[2:])
            source = self.norm(lattice_to_tokens(lattice))
        k, v = split_heads(
            run_qkv_proj(self.kv, source, source_shape), 2, self.num_heads)
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

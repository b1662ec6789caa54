"""The attention of Transformer in Transformer (Han et al., 2021)."""
from typing import Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import ATTENTIONS
from .attention import check_heads, merge_heads, split_heads
from .life import build_qkv_proj, parse_qkv_proj


@ATTENTIONS.register_module()
class TNTAttention(nn.Module):
    """TNT attention: a fused ``qk`` projection and a separate ``v``.

    Both the inner (pixel) and the outer (patch) transformer of TNT use it.
    The official code splits the projections so that queries and keys could
    be narrower than the values; TNT never uses that, so all three keep
    ``embed_dims`` channels; the split only fixes the key layout (``qk``,
    ``v``, ``proj``), which official TNT and LocalViT-TNT weights keep.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        qkv_bias (bool): Bias of the ``qk`` and ``v`` projections (TNT has
            none). Defaults to False.
        qkv_proj (str | dict): ``'linear'`` (``qk`` and ``v``) or ``'life'``:
            one :class:`~.LIFE` ``qkv`` for all three, as in the LIFE paper
            (the split has no meaning left once the keys change).
            Defaults to 'linear'.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 qkv_bias: bool = False,
                 qkv_proj: Union[str, dict] = 'linear'):
        super().__init__()
        check_heads(embed_dims, num_heads)
        self.num_heads = num_heads
        if parse_qkv_proj(qkv_proj)['type'] == 'life':
            self.qkv = build_qkv_proj(qkv_proj, embed_dims, 3, qkv_bias)
        else:
            self.qkv = None
            self.qk = nn.Linear(embed_dims, embed_dims * 2, bias=qkv_bias)
            self.v = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def forward(self,
                x: torch.Tensor,
                hw_shape: Optional[Sequence[int]] = None) -> torch.Tensor:
        if self.qkv is not None:
            q, k, v = split_heads(self.qkv(x, hw_shape), 3, self.num_heads)
        else:
            q, k = split_heads(self.qk(x), 2, self.num_heads)
            v = split_heads(self.v(x), 1, self.num_heads)[0]
        return self.proj(merge_heads(F.scaled_dot_product_attention(q, k, v)))

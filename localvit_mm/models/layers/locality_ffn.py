"""The locality feed-forward of LocalViT (Li et al., 2021, Sec. 3)."""
from typing import Optional, Sequence

import torch
import torch.nn as nn
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule

from .channel_attention import build_channel_attention
from .lattice import lattice_to_tokens, tokens_to_lattice


class LocalityFeedForward(BaseModule):
    """Conv feed-forward on the image lattice, with the residual inside.

    The leading extra tokens (class, distillation) bypass it; the image tokens
    go through, in the paper's order::

        1x1 conv -> BN -> act -> kxk depth-wise conv -> BN -> act
        -> SE / ECA -> 1x1 conv -> BN

    The 1x1 convolutions run as ``nn.Linear`` on the (B, N, C) tokens and the
    rest on a channels-last view of them, so no layout copy is made.

    Args:
        embed_dims (int): Token channels ``d``.
        expansion_ratio (float): ``gamma``; hidden channels are
            ``int(gamma * d)``. Defaults to 4.
        kernel_size (int): Depth-wise kernel size. Defaults to 3.
        with_dw_conv (bool): Keep the depth-wise conv with its BN and
            activation (paper Table 1 "w/o DW" turns it off). Defaults to True.
        act_cfg (dict): Activation, ``dict(type='HSwish')`` or
            ``dict(type='ReLU6')``. Defaults to h-swish.
        channel_attention (dict, optional): ``dict(type='SE', reduction=r)``
            or ``dict(type='ECA', gate='sigmoid' | 'hsigmoid')``. Defaults to
            None.
        norm_cfg (dict): Norm of the three BN slots. Defaults to BN.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 embed_dims: int,
                 expansion_ratio: float = 4.,
                 kernel_size: int = 3,
                 with_dw_conv: bool = True,
                 act_cfg: dict = dict(type='HSwish'),
                 channel_attention: Optional[dict] = None,
                 norm_cfg: dict = dict(type='BN'),
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        hidden = int(embed_dims * expansion_ratio)
        self.fc1 = nn.Linear(embed_dims, hidden, bias=False)
        self.norm1 = build_norm_layer(norm_cfg, hidden)[1]
        self.act1 = build_activation_layer(act_cfg)
        if with_dw_conv:
            self.dw_conv = nn.Conv2d(
                hidden, hidden, kernel_size, padding=kernel_size // 2,
                groups=hidden, bias=False)
            self.norm2 = build_norm_layer(norm_cfg, hidden)[1]
            self.act2 = build_activation_layer(act_cfg)
        else:
            self.dw_conv = self.norm2 = self.act2 = nn.Identity()
        self.channel_attention = build_channel_attention(
            channel_attention, hidden)
        self.fc2 = nn.Linear(hidden, embed_dims, bias=False)
        self.norm3 = build_norm_layer(norm_cfg, embed_dims)[1]

    def conv_ffn(self, tokens: torch.Tensor,
                 hw_shape: Sequence[int]) -> torch.Tensor:
        """The nine-step conv FFN on image tokens (B, H*W, C)."""
        x = tokens_to_lattice(self.fc1(tokens), hw_shape)
        x = self.act1(self.norm1(x))
        x = self.act2(self.norm2(self.dw_conv(x)))
        x = self.channel_attention(x)
        x = tokens_to_lattice(self.fc2(lattice_to_tokens(x)), hw_shape)
        return lattice_to_tokens(self.norm3(x))

    def forward(self,
                x: torch.Tensor,
                hw_shape: Sequence[int],
                num_extra_tokens: int = 1) -> torch.Tensor:
        """Split off the extra tokens, update the image tokens, concatenate.

        Args:
            x (Tensor): Tokens (B, num_extra_tokens + H*W, C).
            hw_shape (tuple[int, int]): The lattice (H, W) of the patch
                embedding; non-square lattices work.
            num_extra_tokens (int): Leading tokens that bypass the FFN.
        """
        extra, tokens = x.split(
            [num_extra_tokens, x.shape[1] - num_extra_tokens], dim=1)
        tokens = tokens + self.conv_ffn(tokens, hw_shape)
        return torch.cat([extra, tokens], dim=1) if num_extra_tokens else tokens

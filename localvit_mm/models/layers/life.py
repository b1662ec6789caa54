"""LIFE: locality in the q/k/v projection of attention.

The Local InFormation Enhancer of Akkaya et al., "Enhancing performance of
vision transformers on small datasets through local inductive bias
incorporation" (Pattern Recognition, 2024) replaces the linear q/k/v
projection by three scales, each built on the one before::

    scale 1: pointwise projection              (tokens -> F_p1)
    scale 2: depth-wise 3x3, then pointwise    (F_p1 on the lattice -> F_p2)
    scale 3: depth-wise 5x5, then pointwise    (F_p2 on the lattice -> F_p3)

q, k and v each take their own third of the channels of every scale and
concatenate them (paper Eq. 4 and Fig. 3). There is no normalization and no
activation: the projection stays linear, only its receptive field grows to
7x7. Class and other auxiliary tokens have no lattice position and go
through the pointwise parts only.

An attention module asks :func:`build_qkv_proj` for its projection
(``'linear'`` or ``'life'``) and runs it with :func:`run_qkv_proj`, so the
plain models keep their ``nn.Linear`` and state dicts unchanged.
"""
from typing import List, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lattice import lattice_to_tokens, tokens_to_lattice

QKV_PROJS = ('linear', 'life')


def split_channels(embed_dims: int) -> List[int]:
    """The three per-scale shares of ``embed_dims`` channels, larger first
    (all equal when 3 divides it, e.g. 192 -> [64, 64, 64]; 64 -> [22, 21,
    21])."""
    return [embed_dims // 3 + (i < embed_dims % 3) for i in range(3)]


class SeparableConv(nn.Module):
    """Depth-wise k x k conv (zero padding ``k // 2``), then a pointwise conv,
    on tokens whose image part fills an H x W lattice.

    The leading auxiliary tokens skip the depth-wise conv and take the
    pointwise conv alone. The pointwise conv keeps the conv weight layout
    (``[out, in, 1, 1]``, PyTorch's default init, as in the LIFE release) but
    runs as one matmul over all tokens.

    Args:
        in_channels (int): Input channels.
        out_channels (int): Output channels.
        kernel_size (int): Depth-wise kernel size.
        bias (bool): Biases of both convs. Defaults to False.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 kernel_size: int,
                 bias: bool = False):
        super().__init__()
        self.depthwise = nn.Conv2d(
            in_channels,
            in_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=in_channels,
            bias=bias)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=bias)

    def forward(self, tokens: torch.Tensor, hw_shape: Sequence[int],
                num_extra_tokens: int) -> torch.Tensor:
        """(B, extra + H*W, C_in) -> (B, extra + H*W, C_out)."""
        H, W = hw_shape
        extra, image = tokens.split([num_extra_tokens, H * W], dim=1)
        image = lattice_to_tokens(
            self.depthwise(tokens_to_lattice(image, hw_shape)))
        if num_extra_tokens:
            image = torch.cat([extra, image], dim=1)
        return F.linear(image, self.pointwise.weight.flatten(1),
                        self.pointwise.bias)


class LIFE(nn.Module):
    """Multi-scale projection of ``num_chunks`` outputs (q, k, v = 3; a
    separate q = 1 or k, v = 2) from tokens on a lattice.

    With ``c = embed_dims / 3`` every scale has ``num_chunks * c`` channels;
    output chunk ``j`` is ``[F_p1 | F_p2 | F_p3]`` restricted to each scale's
    ``j``-th block of ``c`` channels, so the result has the fused Linear's
    layout ``(B, N, num_chunks * embed_dims)`` (chunks, then heads). When 3
    does not divide ``embed_dims`` the three shares differ by one channel
    (:func:`split_channels`). Key names follow the LIFE release
    (``scale1``, ``scale{2,3}.depthwise``, ``scale{2,3}.pointwise``).

    Auxiliary tokens are the tokens beyond the H x W lattice, in front: their
    count is read from the sequence (0, 1 or 2, e.g. class and distillation
    tokens). They take ``scale1``, then the two pointwise convs, and their
    q, k and v are formed like those of the image tokens (the paper's Eq. 4
    prints F_p2 twice and the release builds its class token's key from
    scale 1 three times; the text and Fig. 3 mean this).

    Parameters against the Linear it replaces, for 3 | C (``C =
    embed_dims``) and ``w = num_chunks * C / 3`` channels per scale:
    ``2 w (w - C) + w (34 - 2 bias + 4 conv_bias)``. For q, k and v
    (``w = C``) that is ``34 C`` of depth-wise kernels, less the ``2 C`` of
    biases the Linear has beyond scale 1's, plus ``4 C`` with ``conv_bias``:
    ``+32 C`` with the release's settings (6,144 per DeiT-T block).

    Args:
        embed_dims (int): Input channels and channels of each chunk.
        num_chunks (int): Projections produced. Defaults to 3.
        bias (bool): Bias of the scale-1 projection (the ``qkv_bias`` of the
            Linear it replaces). Defaults to True.
        conv_bias (bool): Biases of the separable convs (the LIFE release has
            none). Defaults to False.
    """

    def __init__(self,
                 embed_dims: int,
                 num_chunks: int = 3,
                 bias: bool = True,
                 conv_bias: bool = False):
        super().__init__()
        self.num_chunks = num_chunks
        widths = [num_chunks * c for c in split_channels(embed_dims)]
        self.scale1 = nn.Linear(embed_dims, widths[0], bias=bias)
        self.scale2 = SeparableConv(widths[0], widths[1], 3, conv_bias)
        self.scale3 = SeparableConv(widths[1], widths[2], 5, conv_bias)

    def forward(self, x: torch.Tensor,
                hw_shape: Optional[Sequence[int]]) -> torch.Tensor:
        """Tokens (B, extra + H*W, C) -> (B, extra + H*W, num_chunks * C)."""
        if hw_shape is None:
            raise ValueError('LIFE convolves the token lattice: pass its '
                             'hw_shape')
        B, N, _ = x.shape
        H, W = hw_shape
        num_extra = N - H * W
        if num_extra < 0:
            raise ValueError(f'{N} tokens do not fill a {H}x{W} lattice')
        scale1 = self.scale1(x)
        scale2 = self.scale2(scale1, hw_shape, num_extra)
        scale3 = self.scale3(scale2, hw_shape, num_extra)
        chunks = [
            s.reshape(B, N, self.num_chunks, -1)
            for s in (scale1, scale2, scale3)
        ]
        return torch.cat(chunks, dim=-1).reshape(B, N, -1)


def parse_qkv_proj(qkv_proj: Union[str, dict]) -> dict:
    """``'linear'``, ``'life'`` or ``dict(type='life', conv_bias=...)`` as a
    dict with a lower-case ``type``."""
    cfg = dict(type=qkv_proj) if isinstance(qkv_proj, str) else dict(qkv_proj)
    cfg['type'] = str(cfg.get('type')).lower()
    if cfg['type'] not in QKV_PROJS:
        raise ValueError(f'qkv_proj {qkv_proj!r} is not one of {QKV_PROJS}')
    if cfg['type'] == 'linear' and len(cfg) > 1:
        raise ValueError(f'the linear qkv_proj takes no options, got '
                         f'{sorted(set(cfg) - {"type"})}')
    return cfg


def build_qkv_proj(qkv_proj: Union[str, dict], embed_dims: int,
                   num_chunks: int, bias: bool) -> nn.Module:
    """An attention's projection to ``num_chunks`` outputs of ``embed_dims``
    channels: ``nn.Linear`` (``'linear'``) or :class:`LIFE` (``'life'``, or a
    dict with its options)."""
    cfg = parse_qkv_proj(qkv_proj)
    if cfg.pop('type') == 'linear':
        return nn.Linear(embed_dims, num_chunks * embed_dims, bias=bias)
    return LIFE(embed_dims, num_chunks, bias=bias, **cfg)


def run_qkv_proj(layer: nn.Module, x: torch.Tensor,
                 hw_shape: Optional[Sequence[int]]) -> torch.Tensor:
    """Run a projection of :func:`build_qkv_proj`: LIFE reads the lattice,
    a Linear does not."""
    return layer(x, hw_shape) if isinstance(layer, LIFE) else layer(x)

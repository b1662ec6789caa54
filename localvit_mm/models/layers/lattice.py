"""Views between a token sequence and its image lattice (Seq2Img / Img2Seq).

The lattice is an NCHW tensor in channels-last memory: it shares storage with
the (B, N, C) tokens, so going back and forth costs no copy, and depth-wise
convolutions run on their fast channels-last kernels.
"""
from typing import Tuple

import torch


def tokens_to_lattice(tokens: torch.Tensor,
                      hw_shape: Tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens -> (B, C, H, W) lattice with channels-last strides."""
    B, N, C = tokens.shape
    H, W = hw_shape
    if N != H * W:
        raise ValueError(f'{N} tokens do not fill a {H}x{W} lattice')
    return tokens.reshape(B, H, W, C).permute(0, 3, 1, 2)


def lattice_to_tokens(lattice: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) lattice -> (B, H*W, C) tokens (a view when
    channels-last)."""
    B, C, H, W = lattice.shape
    return lattice.permute(0, 2, 3, 1).reshape(B, H * W, C)

"""Patch embedding shared by every LocalViT backbone."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    """Patches by a strided conv, optionally padded and normalized.

    Returns the tokens and their lattice (h, w), which every later step takes
    instead of guessing it from the token count. Key names follow timm
    (``proj``, ``norm``).

    Args:
        in_channels (int): Input channels.
        embed_dims (int): Output channels.
        patch_size (int): Kernel size of the projection.
        stride (int, optional): Its stride; None means ``patch_size``
            (non-overlapping patches). Defaults to None.
        padding (int): Zero padding of the conv. Defaults to 0.
        norm_eps (float, optional): Eps of a LayerNorm on the tokens; None
            builds no norm. Defaults to None.
        pad (bool): Zero-pad inputs the stride does not divide (bottom and
            right) so that any size works. Defaults to False.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 patch_size: int,
                 stride: Optional[int] = None,
                 padding: int = 0,
                 norm_eps: Optional[float] = None,
                 pad: bool = False):
        super().__init__()
        self.stride = stride or patch_size
        self.pad = pad
        self.proj = nn.Conv2d(in_channels, embed_dims, patch_size, self.stride,
                              padding)
        if norm_eps is not None:
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        else:
            self.norm = None

    def check_size(self, size: Sequence[int]):
        """Padding makes any size work, but an input smaller than one patch
        would become a patch of mostly zeros: refuse it."""
        kernel = self.proj.kernel_size
        if any(n < k for n, k in zip(size, kernel)):
            raise RuntimeError(f'input {size[0]}x{size[1]} is smaller than '
                               f'the {kernel[0]}x{kernel[1]} patch')

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, tuple]:
        """(B, C, H, W) -> tokens (B, h*w, D) and the lattice (h, w)."""
        if self.pad:
            if not torch.compiler.is_exporting():
                self.check_size(x.shape[2:])
            s = self.stride
            # Up to whole strides, by ceil division: under torch.export the
            # lattice size then stays a short symbolic expression, and the
            # graph pads (maybe by 0) for every input size.
            pad_h, pad_w = ((n + s - 1) // s * s - n for n in x.shape[2:])
            if torch.compiler.is_exporting() or pad_h or pad_w:
                x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.proj(x)
        hw_shape = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        return (x if self.norm is None else self.norm(x)), hw_shape

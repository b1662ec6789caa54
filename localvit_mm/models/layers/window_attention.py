"""Shifted-window attention of Swin (Liu et al., 2021) on token sequences.

:class:`WindowAttention` takes the (B, H*W, C) tokens of an H x W lattice,
pads the lattice to whole windows (bottom and right, as mmdet's Swin does),
rolls it by ``shift_size`` on shifted blocks, attends inside each window
with a learned relative position bias and rolls and crops back. The bias and
the shift mask reach ``F.scaled_dot_product_attention`` as one additive
``attn_mask``.
"""
from typing import Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...registry import ATTENTIONS
from .attention import check_heads
from .life import LIFE, build_qkv_proj


def window_partition(x: torch.Tensor, window_size: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, num_windows, window_size**2, C), windows in
    row-major order; H and W must be multiples of ``window_size``."""
    B, H, W, C = x.shape
    ws = window_size
    x = x.view(B, H // ws, ws, W // ws, ws, C).transpose(2, 3)
    return x.reshape(B, -1, ws * ws, C)


def window_merge(windows: torch.Tensor, hw_shape: Sequence[int],
                 window_size: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: -> (B, H, W, C)."""
    B, _, _, C = windows.shape
    H, W = hw_shape
    ws = window_size
    x = windows.view(B, H // ws, W // ws, ws, ws, C).transpose(2, 3)
    return x.reshape(B, H, W, C)


def relative_position_index(window_size: int) -> torch.Tensor:
    """(N, N) index into the (2*ws - 1)**2 bias table, N = ws**2: entry
    (i, j) encodes the offset of token i from token j inside a window."""
    coords = torch.stack(
        torch.meshgrid(
            torch.arange(window_size),
            torch.arange(window_size),
            indexing='ij')).flatten(1)  # 2, N
    offset = coords[:, :, None] - coords[:, None, :] + window_size - 1
    return offset[0] * (2 * window_size - 1) + offset[1]


def roll_lattice(x: torch.Tensor, shift) -> torch.Tensor:
    """``torch.roll`` of a (B, H, W, C) lattice by ``shift`` rows and
    columns; a shift tensor (decided in an exported graph) rolls by
    gathering."""
    if not torch.is_tensor(shift):
        return torch.roll(x, (shift, shift), dims=(1, 2)) if shift else x
    for dim in (1, 2):
        size = x.shape[dim]
        index = torch.arange(size, device=x.device) - shift
        # A tensor modulus: ONNX export takes no symbolic int one.
        index = index.remainder(
            torch.scalar_tensor(size, dtype=index.dtype, device=x.device))
        x = x.index_select(dim, index)
    return x


def shift_mask(padded_shape: Sequence[int],
               window_size: int,
               shift_size: int,
               device=None,
               mask_value: float = -100.) -> torch.Tensor:
    """(num_windows, N, N) additive mask of the shifted windows.

    After the roll, a window at the bottom or right edge holds tokens from
    up to four regions that were not neighbours in the image; a token
    attends only to tokens of its own region (``mask_value`` elsewhere).
    """

    def regions(length):
        idx = torch.arange(length, device=device)
        return (idx >= length - window_size).long() + (idx >= length -
                                                       shift_size).long()

    Hp, Wp = padded_shape
    region = regions(Hp)[:, None] * 3 + regions(Wp)[None, :]
    region = window_partition(region[None, :, :, None], window_size)[0, ..., 0]
    mask = torch.zeros(region.shape + region.shape[-1:], device=device)
    return mask.masked_fill_(region[:, :, None] != region[:, None, :],
                             mask_value)


@ATTENTIONS.register_module()
class WindowAttention(nn.Module):
    """Window multi-head self-attention with relative position bias (W-MSA),
    shifted on alternate blocks (SW-MSA).

    As in the official Swin, a lattice whose shorter side fits in one window
    is not shifted (then the shift would only split it); a lattice the window
    does not divide is zero-padded at the bottom and right, as mmdet's Swin
    does for detection and segmentation inputs. Padded tokens are keys like
    any other (not masked), also as in mmdet.

    Args:
        embed_dims (int): Token channels.
        num_heads (int): Attention heads.
        window_size (int): Side of the square window. Defaults to 7.
        shift_size (int): Roll of the lattice before partitioning, 0 for
            W-MSA, ``window_size // 2`` on Swin's odd blocks. Defaults to 0.
        qkv_bias (bool): Bias of the qkv projection. Defaults to True.
        mask_value (float): Logit added between tokens of different regions
            of a shifted window (the official code adds -100, not -inf).
            Defaults to -100.
        qkv_proj (str | dict): ``'linear'`` or ``'life'``: a
            :class:`~.LIFE` ``qkv`` that convolves the whole H x W lattice
            before it is padded, rolled and cut into windows, so q, k and v
            see their true neighbours across window borders (the LIFE
            release convolves inside each window instead); padded positions
            then hold zero q, k and v. Defaults to 'linear'.
    """

    def __init__(self,
                 embed_dims: int,
                 num_heads: int,
                 window_size: int = 7,
                 shift_size: int = 0,
                 qkv_bias: bool = True,
                 mask_value: float = -100.,
                 qkv_proj: Union[str, dict] = 'linear'):
        super().__init__()
        check_heads(embed_dims, num_heads)
        if not 0 <= shift_size < window_size:
            raise ValueError(f'shift_size {shift_size} is not in '
                             f'[0, window_size {window_size})')
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift_size = shift_size
        self.mask_value = mask_value
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1)**2, num_heads))
        # Computed from the window size alone: not saved with the weights.
        self.register_buffer(
            'relative_position_index',
            relative_position_index(window_size),
            persistent=False)
        self.qkv = build_qkv_proj(qkv_proj, embed_dims, 3, qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)

    def relative_position_bias(self) -> torch.Tensor:
        """(heads, N, N) bias of every query-key pair in a window."""
        N = self.window_size**2
        bias = self.relative_position_bias_table[
            self.relative_position_index.view(-1)]
        return bias.view(N, N, -1).permute(2, 0, 1)

    def shift_for(self, hw_shape: Sequence[int]) -> int:
        """The shift used on an H x W lattice (0 when it fits one window)."""
        return self.shift_size if min(hw_shape) > self.window_size else 0

    def attn_mask(self, padded_shape: Tuple[int, int],
                  shift: int) -> torch.Tensor:
        """Additive mask for SDPA: (heads, N, N), or (windows, heads, N, N)
        with the shift mask."""
        bias = self.relative_position_bias()
        if torch.is_tensor(shift) or shift:
            mask = shift_mask(padded_shape, self.window_size, shift,
                              bias.device, self.mask_value)
            bias = bias + mask[:, None].to(bias.dtype)
        return bias

    def exported_shift(self,
                       hw_shape: Sequence[int],
                       device=None) -> torch.Tensor:
        """:meth:`shift_for` computed in the graph, as a tensor: under
        ``torch.export`` one graph serves every input size."""
        H, W = hw_shape
        # min(H, W) > window_size: the window size indexes both ranges.
        fits = (torch.arange(H, device=device) == self.window_size).any() & \
            (torch.arange(W, device=device) == self.window_size).any()
        return fits.long() * self.shift_size

    def forward(self, x: torch.Tensor,
                hw_shape: Sequence[int]) -> torch.Tensor:
        """Tokens (B, H*W, C) of an H x W lattice -> (B, H*W, C)."""
        B, L, C = x.shape
        H, W = hw_shape
        if L != H * W:
            raise ValueError(f'{L} tokens do not fill a {H}x{W} lattice')
        ws = self.window_size
        # An exported graph pads (maybe by 0) and crops for every input
        # size, and decides the shift at run time.
        exporting = torch.compiler.is_exporting()
        if exporting and self.shift_size:
            shift = self.exported_shift(hw_shape, x.device)
        else:
            shift = self.shift_for(hw_shape)
        projected = isinstance(self.qkv, LIFE)
        if projected:  # LIFE convolves the lattice before it is windowed
            x = self.qkv(x, hw_shape)
        x = x.view(B, H, W, -1)
        # Up to whole windows, by ceil division (a short expression when
        # the size is symbolic).
        padded = ((H + ws - 1) // ws * ws, (W + ws - 1) // ws * ws)
        pad_b, pad_r = padded[0] - H, padded[1] - W
        if exporting or pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        x = roll_lattice(x, -shift)
        windows = window_partition(x, ws)  # B, nW, N, C (or 3C)
        nW, N = windows.shape[1:3]
        qkv = windows if projected else self.qkv(windows)
        # 4-D SDPA (B * nW, heads, N, c): its fast kernels take no more dims
        q, k, v = qkv.view(B * nW, N, 3, self.num_heads,
                           -1).permute(2, 0, 3, 1, 4)
        attn_mask = self.attn_mask(padded, shift).to(q.dtype)
        if torch.is_tensor(shift) or shift:
            attn_mask = attn_mask.expand(B, -1, -1, -1,
                                         -1).reshape(B * nW, self.num_heads, N,
                                                     N)
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask).transpose(1, 2)
        if exporting:  # its strides differ between export and decomposition
            out = out.clone(memory_format=torch.contiguous_format)
        x = window_merge(out.reshape(B, nW, N, C), padded, ws)
        x = roll_lattice(x, shift)
        if exporting or pad_b or pad_r:
            x = x[:, :H, :W]
        return self.proj(x.reshape(B, L, C))

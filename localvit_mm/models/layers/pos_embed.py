"""Position embeddings that follow the input size.

Every backbone stores its position embeddings for one lattice (the
pre-training size) and resizes them at forward time and when a checkpoint
made for another size is loaded. Both go through :func:`resize_pos_embed`
(mmpretrain's argument order) and :func:`load_pos_embed`.
"""
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from mmengine.logging import print_log

from .lattice import lattice_to_tokens, tokens_to_lattice


def resize_pos_embed(pos_embed: torch.Tensor,
                     src_shape: Sequence[int],
                     dst_shape: Sequence[int],
                     mode: str = 'bicubic',
                     num_extra_tokens: int = 1) -> torch.Tensor:
    """Resample position embeddings from one patch lattice to another.

    Args:
        pos_embed (Tensor): (1, num_extra_tokens + H*W, C) embeddings.
        src_shape (tuple[int, int]): Lattice (H, W) they were made for.
        dst_shape (tuple[int, int]): Target lattice (h, w); may be
            non-square.
        mode (str): Interpolation mode of ``F.interpolate``.
            Defaults to 'bicubic'.
        num_extra_tokens (int): Leading positions (class token) that are kept
            as they are. Defaults to 1.

    Returns:
        Tensor: (1, num_extra_tokens + h*w, C); the input itself when the
        lattices are equal (but under ``torch.export``, whose graph must
        resize for every input size).
    """
    if not torch.compiler.is_exporting() and \
            tuple(src_shape) == tuple(dst_shape):
        return pos_embed
    extra, grid = pos_embed.split(
        [num_extra_tokens, pos_embed.shape[1] - num_extra_tokens], dim=1)
    grid = F.interpolate(
        tokens_to_lattice(grid, src_shape).contiguous().float(),
        size=tuple(dst_shape),
        mode=mode,
        align_corners=False if mode in ('bilinear', 'bicubic') else None)
    return torch.cat([extra, lattice_to_tokens(grid).to(extra.dtype)], dim=1)


def num_extra_positions(num_positions: int) -> Optional[int]:
    """Leading extra (class token) entries of a stored square-lattice
    embedding: 0 or 1, None when neither leaves a square lattice."""
    for extra in (0, 1):
        side = math.isqrt(num_positions - extra)
        if side * side == num_positions - extra:
            return extra
    return None


def load_pos_embed(state_dict: dict,
                   key: str,
                   dst_shape: Sequence[int],
                   num_extra_tokens: int,
                   mode: str = 'bicubic',
                   ckpt_extra_tokens: Optional[int] = None) -> None:
    """Fit a checkpoint's position embedding ``state_dict[key]`` to a model.

    The checkpoint's lattice is taken as square (the only shape its length
    tells) after its class-token entry, if any: ``ckpt_extra_tokens`` when
    the caller knows (the checkpoint holds a ``cls_token``), else whichever
    of 0 or 1 leaves a square. The entry is dropped for a model without a
    class token; a checkpoint without one for a model that has one is left
    as it is, for ``load_state_dict`` to report.

    Raises:
        ValueError: The stored positions form no square lattice.
    """
    if key not in state_dict:
        return
    pos = state_dict[key]
    extra = ckpt_extra_tokens
    if extra is None:
        extra = num_extra_positions(pos.shape[1])
    side = math.isqrt(pos.shape[1] - (extra or 0))
    if extra is None or side * side != pos.shape[1] - extra:
        raise ValueError(
            f'cannot resize {key} of shape {tuple(pos.shape)}: its patch '
            'positions are not a square lattice')
    if extra < num_extra_tokens:
        return
    if (side, side) != tuple(dst_shape):
        print_log(
            f'Resize {key} from {side}x{side} to '
            f'{dst_shape[0]}x{dst_shape[1]}',
            logger='current')
    pos = resize_pos_embed(pos, (side, side), dst_shape, mode, extra)
    state_dict[key] = pos[:, extra - num_extra_tokens:]

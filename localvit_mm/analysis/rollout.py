"""Attention roll-out for classification and dense-prediction models.

*Roll-out* (Abnar & Zuidema, "Quantifying Attention Flow in Transformers",
2020) follows how much of each input token reaches each output token. Every
attention layer ``l`` gives a matrix ``A_l`` (its softmax probabilities, heads
fused by their mean, max or min); the residual connection adds the identity
and the rows are renormalised, ``Â_l = (A_l + I) / rowsum(A_l + I)``
(``(A_l + I) / 2`` for the mean of softmax rows); the roll-out is the product
``R = Â_L ... Â_2 Â_1``, whose row ``i`` says how much output token ``i``
draws from every input token (each row sums to 1).

* Classification (:func:`class_token_rollout`): the row of the class token
  (or of a distillation-style token, ``token_index=1``) over the patch tokens,
  laid out on the patch lattice.
* Detection and segmentation, the Dense Attention Roll-Out of the LIFE paper
  (:func:`dense_rollout`): the roll-out of the attention of *all* tokens, no
  class token needed; the class-specific map of a predicted box or mask is
  the mean of the rows of the output tokens inside it, minus the global mean
  (the mean row over all output tokens). The map sums to 0 over the input
  tokens: where it is positive the region draws more from a token than the
  image as a whole does.

Only the rows asked for are computed: a row vector ``w`` is carried from the
last layer to the first (``w <- w Â_l``), so an N x N product is never
formed and large detection inputs stay cheap. :func:`rollout` forms the full
product for one token set (the definition, and its test).

Spatial-reduction attention (PVT): the keys are the tokens of a lattice
reduced ``sr x sr`` times by a strided convolution, so ``A_l`` is N x M with
``M = (H // sr) (W // sr)``. Each reduced key pools an ``sr x sr`` block of
tokens; its attention is spread uniformly over them (``1 / sr**2`` each;
tokens of a last row or column that no key pools, when ``sr`` does not
divide the lattice, get none), which makes ``A_l`` a square, row-stochastic
N x N matrix (:func:`square_attention`), rolled out like any other. Stages
with different lattices are chained the same way: each token of the coarser
stage came from a block of tokens of the finer one (its patch embedding), so
its roll-out mass is upsampled, spread uniformly over that block; tokens a
stage adds (PVT's class token, a parameter) have no image position and their
mass is dropped. The map lives on the first attention layer's lattice
(stride 4 for LocalViT-PVT, 16 for LocalViT / DeiT).

Backbones: LocalViT and DeiT (:class:`~localvit_mm.models.layers.Attention`,
with a class token or none), LocalViT-T2T (its transformer blocks; the
tokens-to-token module's performer attention has no attention matrix and is
treated like a patch embedding), LocalViT-PVT
(:class:`~localvit_mm.models.layers.SpatialReductionAttention`) and
LocalViT-TNT (its outer, patch-level attention: the inner attention mixes the
pixels of one patch only, so it moves nothing between patch tokens). Window
attention (LocalViT-Swin) is refused: it has no attention between windows to
roll out.

Attention is captured by :func:`capture_attention` with forward hooks: the
attention modules keep their fused ``scaled_dot_product_attention``; the
hooks take the output of each module's own q/k/v projection (a Linear or
LIFE) and form ``softmax(q k^T * scale)`` once more.
"""
import contextlib
import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from ..utils.errors import UserInputError

HEAD_FUSIONS = ('mean', 'max', 'min')


class UnsupportedAttentionError(UserInputError):
    """The model has no attention that can be rolled out."""


@dataclass
class AttentionRecord:
    """The attention probabilities of one layer and where its tokens lie.

    Attributes:
        attn (Tensor): Softmax probabilities, (B, heads, N, M), or (B, N, M)
            with the heads fused.
        hw_shape (tuple[int, int]): Lattice of the query tokens.
        num_extra_tokens (int): Query tokens in front of the lattice (class,
            distillation); the keys have the same ones when ``sr_ratio`` is 1.
        sr_ratio (int): 1 when the keys are the query tokens; ``r`` when
            each key pools an ``r x r`` block of the query lattice.
        name (str): The attention module's name in the model.
    """
    attn: torch.Tensor
    hw_shape: Tuple[int, int]
    num_extra_tokens: int = 0
    sr_ratio: int = 1
    name: str = ''

    @property
    def num_tokens(self) -> int:
        return self.num_extra_tokens + math.prod(self.hw_shape)

    @property
    def key_shape(self) -> Tuple[int, int]:
        """The lattice of the key tokens."""
        return tuple(s // self.sr_ratio for s in self.hw_shape)


def fuse_heads(attn: torch.Tensor, head_fusion: str = 'mean') -> torch.Tensor:
    """(B, heads, N, M) -> (B, N, M) by the heads' mean, max or min; a
    3-D tensor is taken as already fused."""
    if head_fusion not in HEAD_FUSIONS:
        raise ValueError(f'head_fusion must be one of {HEAD_FUSIONS}, got '
                         f'{head_fusion!r}')
    if attn.dim() == 3:
        return attn
    if head_fusion == 'mean':
        return attn.mean(dim=1)
    return getattr(attn, head_fusion)(dim=1).values


def spread_to_lattice(values: torch.Tensor,
                      coarse_shape: Sequence[int],
                      fine_shape: Sequence[int],
                      stride: Optional[Sequence[int]] = None) -> torch.Tensor:
    """Spread values on a coarse lattice uniformly over the fine cells each
    coarse cell pools.

    Fine cell ``(y, x)`` belongs to coarse cell ``(y // sy, x // sx)``; a
    coarse cell's value is divided evenly among its fine cells, so the total
    is kept. Fine cells beyond the coarse lattice (a floor-reduced lattice)
    get 0.

    Args:
        values (Tensor): (..., h * w) over the coarse lattice.
        coarse_shape (tuple[int, int]): (h, w).
        fine_shape (tuple[int, int]): (H, W).
        stride (tuple[int, int], optional): (sy, sx); None is
            ``ceil(H / h), ceil(W / w)`` (a padded patch embedding).

    Returns:
        Tensor: (..., H * W).
    """
    (h, w), (H, W) = coarse_shape, fine_shape
    if stride is None:
        stride = (math.ceil(H / h), math.ceil(W / w))
    device = values.device
    cy = torch.arange(H, device=device) // stride[0]
    cx = torch.arange(W, device=device) // stride[1]
    inside = ((cy < h)[:, None] & (cx < w)[None, :]).flatten()
    index = (cy.clamp(max=h - 1)[:, None] * w +
             cx.clamp(max=w - 1)[None, :]).flatten()
    counts = torch.bincount(index[inside], minlength=h * w)
    if (counts == 0).any():
        raise ValueError(f'a {h}x{w} lattice does not pool a {H}x{W} one '
                         f'with stride {tuple(stride)}')
    weights = inside.to(values.dtype) / counts[index].to(values.dtype)
    return values[..., index] * weights


def _spread_keys(rows: torch.Tensor, record: AttentionRecord) -> torch.Tensor:
    """Rows over the keys of ``record`` -> rows over its query tokens."""
    if record.sr_ratio == 1:
        return rows
    return spread_to_lattice(rows, record.key_shape, record.hw_shape,
                             (record.sr_ratio, ) * 2)


def square_attention(record: AttentionRecord,
                     head_fusion: str = 'mean') -> torch.Tensor:
    """The attention of a layer as a square (B, N, N) matrix over its query
    tokens: with spatial reduction, each reduced key's attention spread over
    the ``sr x sr`` tokens it pools (rows keep their sums)."""
    return _spread_keys(fuse_heads(record.attn, head_fusion), record)


def add_residual(attn: torch.Tensor) -> torch.Tensor:
    """``(A + I)`` with rows renormalised to 1, for square (..., N, N)
    ``A``."""
    eye = torch.eye(attn.shape[-1], dtype=attn.dtype, device=attn.device)
    attn = attn + eye
    return attn / attn.sum(dim=-1, keepdim=True)


def rollout(attentions: Sequence[torch.Tensor],
            head_fusion: str = 'mean') -> torch.Tensor:
    """The full roll-out ``Â_L ... Â_1`` of square attention matrices of one
    token set, first layer first.

    Args:
        attentions (Sequence[Tensor]): (B, heads, N, N) or fused (B, N, N).
        head_fusion (str): 'mean', 'max' or 'min' over heads.

    Returns:
        Tensor: (B, N, N); row ``i``: what output token ``i`` draws from each
        input token (rows sum to 1).
    """
    result = None
    for attn in attentions:
        layer = add_residual(fuse_heads(attn, head_fusion).float())
        result = layer if result is None else layer @ result
    if result is None:
        raise ValueError('no attention to roll out')
    return result


def _to_earlier_tokens(rows: torch.Tensor, later: AttentionRecord,
                       earlier: AttentionRecord) -> torch.Tensor:
    """Rows over ``later``'s input tokens -> rows over ``earlier``'s
    output tokens (a stage change: the lattice part upsampled, new extra
    tokens dropped)."""
    if later.hw_shape == earlier.hw_shape and \
            later.num_extra_tokens == earlier.num_extra_tokens:
        return rows
    if any(c > f for c, f in zip(later.hw_shape, earlier.hw_shape)):
        raise ValueError(f'layer {later.name} has a finer lattice '
                         f'{later.hw_shape} than the layer before it '
                         f'{earlier.hw_shape}: not a pyramid')
    lattice = rows[..., later.num_extra_tokens:]
    if later.hw_shape != earlier.hw_shape:
        lattice = spread_to_lattice(lattice, later.hw_shape, earlier.hw_shape)
    extra = rows.new_zeros(*rows.shape[:-1], earlier.num_extra_tokens)
    return torch.cat([extra, lattice], dim=-1)


def propagate(rows: torch.Tensor,
              records: Sequence[AttentionRecord],
              head_fusion: str = 'mean') -> torch.Tensor:
    """Rows of the roll-out: ``rows @ Â_L ... Â_1``, layer by layer.

    Args:
        rows (Tensor): (B, K, N_L) weights over the last layer's tokens.
        records (Sequence[AttentionRecord]): The layers, first first.
        head_fusion (str): 'mean', 'max' or 'min' over heads.

    Returns:
        Tensor: (B, K, N_1) over the first layer's tokens (extra tokens
        first, then its lattice).
    """
    if not records:
        raise ValueError('no attention to roll out')
    rows = rows.float()
    for i in range(len(records) - 1, -1, -1):
        record = records[i]
        attn = fuse_heads(record.attn, head_fusion).float()
        if attn.shape[-2] != record.num_tokens or \
                rows.shape[-1] != record.num_tokens:
            raise ValueError(f'layer {record.name}: {attn.shape[-2]} queries '
                             f'and {rows.shape[-1]} row entries for '
                             f'{record.num_tokens} tokens')
        # rows (A_sq + I) / d, with d the row sums of A_sq + I: A_sq keeps
        # the row sums of A, so the spreading comes after the product.
        scaled = rows / (attn.sum(dim=-1) + 1).unsqueeze(1)
        rows = _spread_keys(scaled @ attn, record) + scaled
        if i:
            rows = _to_earlier_tokens(rows, record, records[i - 1])
    return rows


def _lattice_map(rows: torch.Tensor,
                 records: Sequence[AttentionRecord]) -> torch.Tensor:
    """(B, K, N_1) -> (B, K, h, w) on the first layer's lattice."""
    first = records[0]
    return rows[..., first.num_extra_tokens:].reshape(*rows.shape[:-1],
                                                      *first.hw_shape)


def class_token_rollout(records: Sequence[AttentionRecord],
                        head_fusion: str = 'mean',
                        token_index: int = 0) -> torch.Tensor:
    """The roll-out row of the class token (``token_index=1``: a
    distillation token) over the patch tokens.

    Returns:
        Tensor: (B, h, w) on the first layer's lattice; it sums to 1 minus
        the share of the extra tokens (and of tokens added on the way, such
        as PVT's last-stage class token).
    """
    last = records[-1]
    if not 0 <= token_index < last.num_extra_tokens:
        raise UserInputError(
            f'the last attention layer has {last.num_extra_tokens} extra '
            f'token(s), so token {token_index} is not one: class-token '
            'roll-out needs a backbone with a class token (use the dense '
            'roll-out otherwise)')
    rows = last.attn.new_zeros(last.attn.shape[0], 1, last.num_tokens)
    rows[..., token_index] = 1
    return _lattice_map(propagate(rows, records, head_fusion), records)[:, 0]


def dense_rollout(records: Sequence[AttentionRecord],
                  token_weights: torch.Tensor,
                  head_fusion: str = 'mean') -> torch.Tensor:
    """The LIFE paper's Dense Attention Roll-Out of a region.

    The mean roll-out row of the region's output tokens minus the mean row
    of all output tokens of the last layer's lattice.

    Args:
        records (Sequence[AttentionRecord]): The layers, first first.
        token_weights (Tensor): (B, h_L * w_L) or (h_L * w_L, ) weights of
            the region's tokens on the last layer's lattice (e.g. from
            :func:`region_token_weights`), summing to 1.
        head_fusion (str): 'mean', 'max' or 'min' over heads.

    Returns:
        Tensor: (B, h, w) on the first layer's lattice. With the class
        token's column (when the first layer has one) it sums to 0.
    """
    last = records[-1]
    lattice = math.prod(last.hw_shape)
    weights = token_weights.float().reshape(-1, lattice)
    weights = weights.expand(last.attn.shape[0], -1)
    rows = torch.stack([weights, torch.full_like(weights, 1 / lattice)], 1)
    rows = torch.cat(
        [rows.new_zeros(*rows.shape[:2], last.num_extra_tokens), rows], -1)
    maps = _lattice_map(propagate(rows, records, head_fusion), records)
    return maps[:, 0] - maps[:, 1]


def region_token_weights(coverage: torch.Tensor,
                         min_coverage: float = 0.5) -> torch.Tensor:
    """Uniform weights over the tokens inside a region.

    Args:
        coverage (Tensor): (h, w) share of each token's cell that the box or
            mask covers.
        min_coverage (float): Tokens covered at least this much are inside;
            when none is, the most covered ones are. Defaults to 0.5.

    Returns:
        Tensor: (h * w, ) weights summing to 1.
    """
    coverage = coverage.flatten().float()
    if coverage.max() <= 0:
        raise UserInputError('the box or mask covers no token of the image')
    inside = coverage >= min_coverage
    if not inside.any():
        inside = coverage == coverage.max()
    return inside.float() / inside.sum()


def _projections(module: nn.Module) -> Optional[List[Tuple[str, int, int]]]:
    """``(child, chunks, index)`` of the q and the k projections of a
    supported attention module; None for another module."""
    from ..models.layers import Attention, SpatialReductionAttention
    from ..models.layers.tnt_attention import TNTAttention
    if isinstance(module, Attention):
        return [('qkv', 3, 0), ('qkv', 3, 1)]
    if isinstance(module, SpatialReductionAttention):
        return [('q', 1, 0), ('kv', 2, 0)]
    if isinstance(module, TNTAttention):
        if module.qkv is not None:
            return [('qkv', 3, 0), ('qkv', 3, 1)]
        return [('qk', 2, 0), ('qk', 2, 1)]
    return None


def find_attention(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The global attention modules of a model's backbone, in forward order.

    Raises:
        UnsupportedAttentionError: The backbone has window attention or no
            attention that can be rolled out.
    """
    from ..models.backbones.localvit_tnt import TNTBlock
    from ..models.layers.window_attention import WindowAttention
    backbone = getattr(model, 'backbone', model)
    inner = {
        id(m.inner.attn)
        for m in backbone.modules() if isinstance(m, TNTBlock)
    }
    found = []
    for name, module in backbone.named_modules():
        if isinstance(module, WindowAttention):
            raise UnsupportedAttentionError(
                f'{type(backbone).__name__} uses window attention '
                f'({name}): it attends within windows only, so there is no '
                'global attention to roll out; use LocalViT/DeiT, '
                'LocalViT-PVT, LocalViT-T2T or LocalViT-TNT')
        if id(module) not in inner and _projections(module) is not None:
            found.append((name, module))
    if not found:
        raise UnsupportedAttentionError(
            f'{type(backbone).__name__} has no global attention of '
            'localvit_mm to roll out; use LocalViT/DeiT, LocalViT-PVT, '
            'LocalViT-T2T or LocalViT-TNT')
    return found


def _attention_probs(module: nn.Module, outputs: dict) -> torch.Tensor:
    """``softmax(q k^T * scale)`` from the stored projection outputs."""
    heads = module.num_heads
    q_spec, k_spec = _projections(module)
    q, k = (outputs[child].float().reshape(*outputs[child].shape[:2], chunks,
                                           heads, -1)[:, :, index]
            for child, chunks, index in (q_spec, k_spec))
    q, k = q.transpose(1, 2), k.transpose(1, 2)  # (B, heads, N, d)
    scale = getattr(module, 'qk_scale', None) or q.shape[-1]**-0.5
    return torch.softmax(q @ k.transpose(-2, -1) * scale, dim=-1)


@contextlib.contextmanager
def capture_attention(model: nn.Module,
                      head_fusion: Optional[str] = 'mean') -> Iterator[List]:
    """Record the attention probabilities of every global attention layer
    of ``model``'s backbone while it runs forward.

    Forward hooks keep the outputs of each attention module's own q/k/v
    projection and, once the module has run (on its fused kernel), append an
    :class:`AttentionRecord` to the yielded list. The hooks are removed on
    exit.

    Args:
        model (nn.Module): A backbone, or a model with ``.backbone``.
        head_fusion (str, optional): Fuse the heads when recording ('mean',
            'max', 'min'; less memory), or None to keep them.
            Defaults to 'mean'.

    Yields:
        list[AttentionRecord]: Filled in forward order.

    Example:
        >>> with capture_attention(model) as records:
        ...     model.extract_feat(inputs)
        >>> heatmap = class_token_rollout(records)
    """
    records, handles = [], []

    def keep_output(store, child):

        def hook(_module, _args, output):
            store[child] = output.detach()

        return hook

    def record(name, store):

        def hook(module, args, kwargs, _output):
            hw_shape = args[1] if len(args) > 1 else kwargs.get('hw_shape')
            if hw_shape is None:
                raise ValueError(f'{name} ran without hw_shape: the token '
                                 'lattice is unknown')
            children = {child for child, _, _ in _projections(module)}
            if not children <= set(store):
                raise RuntimeError(f'{name} did not call its projections '
                                   f'{sorted(children)} as modules')
            attn = _attention_probs(module, store)
            store.clear()
            if head_fusion is not None:
                attn = fuse_heads(attn, head_fusion)
            hw_shape = tuple(int(s) for s in hw_shape)
            records.append(
                AttentionRecord(
                    attn,
                    hw_shape,
                    attn.shape[-2] - math.prod(hw_shape),
                    getattr(module, 'sr_ratio', 1),
                    name=name))

        return hook

    if head_fusion is not None:
        fuse_heads(torch.zeros(1, 1, 1), head_fusion)  # check the name
    try:
        for name, module in find_attention(model):
            store = {}
            for child in {child for child, _, _ in _projections(module)}:
                handles.append(
                    getattr(module, child).register_forward_hook(
                        keep_output(store, child)))
            handles.append(
                module.register_forward_hook(
                    record(name, store), with_kwargs=True))
        yield records
    finally:
        for handle in handles:
            handle.remove()

"""Performer attention of the tokens-to-token module (T2T-ViT, Yuan et al.,
2021), with positive random features (Choromanski et al., 2021).

Softmax attention ``softmax(q k^T) v`` is approximated with the feature map
``phi(x) = exp(W x - |x|^2 / 2) / sqrt(m)`` of ``m`` fixed random directions
``W``: ``y = phi(q) (phi(k)^T v) / (phi(q) sum_t phi(k_t))``, linear in the
token count, which matters at the 56 x 56 lattice of the first T2T step.
"""
import math

import torch
import torch.nn as nn


class PerformerAttention(nn.Module):
    """Single-head performer attention that changes the channel count.

    T2T-ViT's token layers map the unfolded patches (``in_dims`` channels,
    e.g. 3 x 7 x 7) to ``embed_dims`` channels, so the residual of the
    attention is taken from the values ``v`` (already ``embed_dims`` wide),
    not from the input: ``out = v + drop(proj(y))``. That is why this module
    is no :data:`ATTENTIONS` entry: :class:`LocalViTBlock` adds its input to
    the attention output, which cannot work when the widths differ. The
    tokens-to-token layer of :mod:`..backbones.localvit_t2t` composes it.

    Keys follow the official code: ``kqv`` (keys, queries, values in this
    order), ``proj`` and the random directions ``random_features`` (official
    ``w``). These are a buffer, not a parameter: they are drawn once (rows
    orthonormal, scaled by ``sqrt(m)``, as in T2T-ViT) and never trained;
    checkpoints carry them so a trained model keeps its own.

    The feature map runs in float32 (outside autocast): its exponentials
    overflow in half precision.

    Args:
        in_dims (int): Input token channels.
        embed_dims (int): Output (and key/query/value) channels.
        kernel_ratio (float): Random features per value channel,
            ``m = int(embed_dims * kernel_ratio)``. Defaults to 0.5.
        proj_drop (float): Dropout after ``proj`` (0.1 in T2T-ViT).
            Defaults to 0.
        eps (float): Added to the normalizer. Defaults to 1e-8.
    """

    def __init__(self,
                 in_dims: int,
                 embed_dims: int,
                 kernel_ratio: float = 0.5,
                 proj_drop: float = 0.,
                 eps: float = 1e-8):
        super().__init__()
        self.embed_dims = embed_dims
        self.num_features = int(embed_dims * kernel_ratio)
        if self.num_features < 1:
            raise ValueError(f'kernel_ratio {kernel_ratio} leaves no random '
                             f'feature for {embed_dims} channels')
        self.eps = eps
        self.kqv = nn.Linear(in_dims, 3 * embed_dims)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)
        self.register_buffer('random_features',
                             torch.empty(self.num_features, embed_dims))
        self.reset_random_features()

    @torch.no_grad()
    def reset_random_features(self):
        """Draw new random directions: orthonormal rows times ``sqrt(m)``."""
        nn.init.orthogonal_(self.random_features)
        self.random_features.mul_(math.sqrt(self.num_features))

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, C) -> (B, N, m): ``exp(W x - |x|^2 / 2) / sqrt(m)``."""
        wx = x @ self.random_features.to(x.dtype).t()
        half_sq_norm = x.square().sum(-1, keepdim=True) / 2
        return torch.exp(wx - half_sq_norm) / math.sqrt(self.num_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, in_dims) tokens -> (B, N, embed_dims)."""
        k, q, v = self.kqv(x).split(self.embed_dims, dim=-1)
        with torch.autocast(x.device.type, enabled=False):
            kp = self.feature_map(k.float())
            qp = self.feature_map(q.float())
            context = kp.transpose(1, 2) @ v.float()  # (B, m, C)
            normalizer = qp @ kp.sum(1).unsqueeze(-1)  # (B, N, 1)
            y = (qp @ context) / (normalizer + self.eps)
        return v + self.proj_drop(self.proj(y.to(v.dtype)))

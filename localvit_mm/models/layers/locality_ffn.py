"""The locality feed-forward of LocalViT (Li et al., 2021, Sec. 3)."""
from types import SimpleNamespace
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import build_activation_layer, build_norm_layer
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from .channel_attention import build_channel_attention
from .fast_ffn import (GatedProjection, NormActConv, act_dwconv_act_, activate,
                       activation_code, bn_scale_shift, bn_train_args,
                       conv_kernels_for, fused_path, use_fused_ffn)
from .lattice import lattice_to_tokens, tokens_to_lattice


def fold_bn(weight: torch.Tensor, bias: Optional[torch.Tensor],
            norm: _BatchNorm):
    """Weight and bias of ``norm(layer(x))`` for a linear layer (Linear or
    conv, output channels first) and an eval-mode BatchNorm after it."""
    scale, shift = bn_scale_shift(norm)
    weight = weight * scale.view(-1, *[1] * (weight.dim() - 1))
    return weight, shift if bias is None else bias * scale + shift


def _resolve_reduction(cfg: Optional[dict], embed_dims: int) -> Optional[dict]:
    """An SE reduction written in terms of the block's channels
    (``'embed_dims'``, ``'embed_dims//k'``) as a number."""
    reduction = (cfg or {}).get('reduction')
    if not isinstance(reduction, str):
        return cfg
    name, _, divisor = reduction.partition('//')
    if name != 'embed_dims' or not (divisor or '1').isdigit():
        raise ValueError(f"SE reduction {reduction!r} is neither a number "
                         "nor 'embed_dims' or 'embed_dims//k'")
    return dict(cfg, reduction=embed_dims // int(divisor or 1))


class LocalityFeedForward(BaseModule):
    """Conv feed-forward on the image lattice, with the residual inside.

    The leading extra tokens (class, distillation) bypass it; the image tokens
    go through, in the paper's order::

        1x1 conv -> BN -> act -> kxk depth-wise conv -> BN -> act
        -> SE / ECA -> 1x1 conv -> BN

    The 1x1 convolutions run as ``nn.Linear`` on the (B, N, C) tokens and the
    depth-wise conv on a channels-last view of them, so no layout copy is
    made. With ``fused`` on (the default) and BatchNorm with a ReLU-family or
    h-swish activation the forward takes a fused path (:mod:`.fast_ffn`): in
    eval mode the BatchNorms fold on the fly into the weights before them; in
    training only the two BN inputs are kept for the backward pass. Otherwise
    it runs the plain composition of the modules (:meth:`conv_ffn`), the
    reference the fused paths are tested against.

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
            (``r='embed_dims'`` or ``'embed_dims//k'``: the reduction follows
            the block's channels, as the official LocalViT-PVT / TNT and
            Swin (``'embed_dims//4'``) write it) or
            ``dict(type='ECA', gate='sigmoid' | 'hsigmoid')``. Defaults to
            None.
        norm_cfg (dict): Norm of the three BN slots. Defaults to BN.
        deploy (bool): Build the inference form that
            :meth:`switch_to_deploy` produces: no BatchNorm, biases on
            ``fc1``, ``dw_conv`` and ``fc2``. Defaults to False.
        fused (bool, optional): Allow the fused paths; None takes
            :func:`~.fast_ffn.use_fused_ffn` (the ``LOCALVIT_FUSED_FFN``
            environment variable, on by default). Defaults to None.
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
                 deploy: bool = False,
                 fused: Optional[bool] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        hidden = int(embed_dims * expansion_ratio)
        self.deploy = deploy
        self.fused = use_fused_ffn() if fused is None else fused
        self.with_dw_conv = with_dw_conv

        def norm(channels):
            return nn.Identity() if deploy else build_norm_layer(
                norm_cfg, channels)[1]

        self.fc1 = nn.Linear(embed_dims, hidden, bias=deploy)
        self.norm1 = norm(hidden)
        self.act1 = build_activation_layer(act_cfg)
        if with_dw_conv:
            self.dw_conv = nn.Conv2d(
                hidden,
                hidden,
                kernel_size,
                padding=kernel_size // 2,
                groups=hidden,
                bias=deploy)
            self.norm2 = norm(hidden)
            self.act2 = build_activation_layer(act_cfg)
        else:
            self.dw_conv = self.norm2 = self.act2 = nn.Identity()
        self.channel_attention = build_channel_attention(
            _resolve_reduction(channel_attention, embed_dims), hidden)
        self.fc2 = nn.Linear(hidden, embed_dims, bias=deploy)
        self.norm3 = norm(embed_dims)

    def conv_ffn(self, tokens: torch.Tensor,
                 hw_shape: Sequence[int]) -> torch.Tensor:
        """The nine-step conv FFN on image tokens (B, H*W, C), module by
        module (no residual)."""
        x = tokens_to_lattice(self.fc1(tokens), hw_shape)
        x = self.act1(self.norm1(x))
        x = self.act2(self.norm2(self.dw_conv(x)))
        x = self.channel_attention(x)
        x = tokens_to_lattice(self.fc2(lattice_to_tokens(x)), hw_shape)
        return lattice_to_tokens(self.norm3(x))

    def forward(self,
                x: torch.Tensor,
                hw_shape: Sequence[int],
                num_extra_tokens: int = 1,
                inplace: bool = False) -> torch.Tensor:
        """Split off the extra tokens, update the image tokens, concatenate.

        Args:
            x (Tensor): Tokens (B, num_extra_tokens + H*W, C).
            hw_shape (tuple[int, int]): The lattice (H, W) of the patch
                embedding; non-square lattices work.
            num_extra_tokens (int): Leading tokens that bypass the FFN.
            inplace (bool): The caller owns ``x``: without autograd the
                residual is added into it (no new output tensor).
                Defaults to False.
        """
        H, W = hw_shape
        num_tokens = x.shape[1] - num_extra_tokens
        if num_tokens != H * W:
            raise ValueError(f'{num_tokens} tokens do not fill a {H}x{W} '
                             'lattice')
        extra, tokens = x.split([num_extra_tokens, num_tokens], dim=1)
        path = fused_path(self)
        if path == 'folded':
            return self._forward_folded(x, extra, tokens, hw_shape, inplace)
        if path == 'batch_stats':
            out = self._forward_batch_stats(tokens, hw_shape)
        else:
            out = tokens + self.conv_ffn(tokens, hw_shape)
        return torch.cat([extra, out], dim=1) if num_extra_tokens else out

    def folds(self):
        """(layer, BatchNorm after it) attribute names, in forward order."""
        folds = [('fc1', 'norm1'), ('dw_conv', 'norm2'), ('fc2', 'norm3')]
        return folds if self.with_dw_conv else folds[::2]

    def folded_params(self):
        """(fc1 weight, bias, dw weight, bias, fc2 weight, bias) with every
        BatchNorm folded in (dw entries None without the conv)."""
        cw = cb = None
        if self.deploy:
            if self.with_dw_conv:
                cw, cb = self.dw_conv.weight, self.dw_conv.bias
            return (self.fc1.weight, self.fc1.bias, cw, cb, self.fc2.weight,
                    self.fc2.bias)
        w1, b1 = fold_bn(self.fc1.weight, self.fc1.bias, self.norm1)
        if self.with_dw_conv:
            cw, cb = fold_bn(self.dw_conv.weight, self.dw_conv.bias,
                             self.norm2)
        w2, b2 = fold_bn(self.fc2.weight, self.fc2.bias, self.norm3)
        return w1, b1, cw, cb, w2, b2

    def _forward_folded(self, x, extra, tokens, hw_shape, inplace=False):
        """Eval / deploy path: three matmul-like ops with their biases;
        without autograd, activations, channel gate and residual in place."""
        B, N, C = tokens.shape
        E = extra.shape[1]
        code = activation_code(self.act1)
        no_grad = not torch.is_grad_enabled()
        w1, b1, cw, cb, w2, b2 = self.folded_params()
        # On the CPU the conv stage runs as one in-place kernel pass, which
        # also adds fc1's bias (its GEMM would copy it into the output).
        kernels = conv_kernels_for(tokens, cw, b1, cb) \
            if cw is not None and no_grad else None
        bias1 = None if kernels is not None else b1
        if no_grad and E:  # batched GEMM reads the strided image tokens
            w1t = w1.t().expand(B, C, -1)
            h = torch.bmm(tokens, w1t) if bias1 is None else \
                torch.baddbmm(bias1, tokens, w1t)
        else:
            h = tokens.reshape(B * N, C) @ w1.t() if bias1 is None else \
                torch.addmm(bias1, tokens.reshape(B * N, C), w1.t())
        h = h.view(B * N, -1)
        gated = not isinstance(self.channel_attention, nn.Identity)
        pooled = None
        if kernels is not None:
            pooled = act_dwconv_act_(kernels, h, b1, cw, cb, code,
                                     (B, *hw_shape), gated)
        else:
            h = activate(h, code, no_grad)
            if cw is not None:
                lattice = h.view(B, *hw_shape, -1).permute(0, 3, 1, 2)
                h = F.conv2d(
                    lattice,
                    cw,
                    cb,
                    padding=cw.shape[-1] // 2,
                    groups=cw.shape[0])
                h = activate(
                    lattice_to_tokens(h).reshape(B * N, -1), code, no_grad)
        if gated:
            h = h.view(B, N, -1)
            pooled = h.mean(1) if pooled is None else pooled
            gate = self.channel_attention.channel_weights(pooled)[:, None]
            h = (h.mul_(gate) if no_grad else h * gate).view(B * N, -1)
        z = torch.addmm(b2, h, w2.t()).view(B, N, C)
        if no_grad and inplace:
            tokens.add_(z)
            return x
        if E == 0:
            return z.add_(tokens)
        if no_grad:  # write into the output instead of concatenating
            out = torch.empty_like(x)
            out[:, :E] = extra
            torch.add(z, tokens, out=out[:, E:])
            return out
        return torch.cat([extra, z.add_(tokens)], dim=1)

    def _forward_batch_stats(self, tokens, hw_shape):
        """Training path (BN with batch statistics) that keeps only the BN
        inputs of the hidden layers for the backward pass."""
        B, N, C = tokens.shape
        code = activation_code(self.act1)
        h = F.linear(tokens.reshape(B * N, C), self.fc1.weight, self.fc1.bias)
        dw = self.with_dw_conv
        gated = not isinstance(self.channel_attention, nn.Identity)
        a, pooled, t, scale, shift = NormActConv.apply(
            h, code, (B, *hw_shape), gated, *bn_train_args(self.norm1),
            self.dw_conv.weight if dw else None,
            *bn_train_args(self.norm2 if dw else None))
        source = h if t is None else t
        a = a.view(B, N, -1)
        gate = self.channel_attention.channel_weights(pooled) \
            if gated else None
        z = GatedProjection.apply(a, gate, self.fc2.weight, source, scale,
                                  shift, code)
        z = self.norm3(z.view(B * N, C, 1, 1)).view(B, N, C)
        return tokens + z

    @torch.no_grad()
    def switch_to_deploy(self):
        """Fold the three BatchNorms into ``fc1``, ``dw_conv`` and ``fc2``
        (running statistics, computed in float64) for inference."""
        if self.deploy:
            return
        norms = [getattr(self, norm) for _, norm in self.folds()]
        if not all(
                isinstance(n, _BatchNorm) and n.running_mean is not None
                for n in norms):
            raise ValueError('switch_to_deploy folds BatchNorm with running '
                             'statistics only, not '
                             f'{sorted({type(n).__name__ for n in norms})}')
        for name, norm in self.folds():
            layer = getattr(self, name)
            weight, bias = fold_bn(
                layer.weight.double(),
                None if layer.bias is None else layer.bias.double(),
                _float64_bn(getattr(self, norm)))
            if isinstance(layer, nn.Linear):
                new = nn.Linear(layer.in_features, layer.out_features)
            else:
                new = nn.Conv2d(
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel_size,
                    padding=layer.padding,
                    groups=layer.groups)
            new.to(device=layer.weight.device, dtype=layer.weight.dtype)
            new.weight.copy_(weight)
            new.bias.copy_(bias)
            setattr(self, name, new)
            setattr(self, norm, nn.Identity())
        self.deploy = True


def _float64_bn(norm: _BatchNorm) -> SimpleNamespace:
    """A BatchNorm's parameters and statistics in float64, for folding."""

    def double(t):
        return None if t is None else t.double()

    return SimpleNamespace(
        eps=norm.eps,
        running_mean=double(norm.running_mean),
        running_var=double(norm.running_var),
        weight=double(norm.weight),
        bias=double(norm.bias))

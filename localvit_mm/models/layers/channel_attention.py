"""Channel attention of the locality feed-forward: SE and ECA (paper
Table 2)."""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

GATES = {'sigmoid': torch.sigmoid, 'hsigmoid': F.hardsigmoid}


class SELayer(nn.Module):
    """Squeeze-and-excitation with an h-sigmoid gate.

    Args:
        channels (int): Channels of the input lattice.
        reduction (int): Divisor of the squeeze: ``channels // reduction``
            channels are kept (LocalViT-T: 768 // 192 = 4).
    """

    def __init__(self, channels: int, reduction: int = 4):
        super().__init__()
        squeezed = channels // reduction
        if squeezed < 1:
            raise ValueError(f'SE reduction {reduction} leaves no channel of '
                             f'{channels}: use a reduction <= {channels}')
        self.fc = nn.Sequential(
            nn.Linear(channels, squeezed), nn.ReLU(inplace=True),
            nn.Linear(squeezed, channels), nn.Hardsigmoid(inplace=True))

    def channel_weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) channel weights."""
        return self.fc(pooled)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x.mean((2, 3)))[:, :, None, None]


class ECALayer(nn.Module):
    """Efficient channel attention: a 1-D conv over the pooled channels.

    Args:
        channels (int): Channels of the input lattice; they set the kernel
            size ``k = odd(|log2(C) + 1| / 2)`` (5 for 768 channels).
        gate (str): ``'sigmoid'`` (paper "hs+eca") or ``'hsigmoid'``
            ("hs+ecah").
    """

    def __init__(self, channels: int, gate: str = 'sigmoid'):
        super().__init__()
        if gate not in GATES:
            raise ValueError(f'ECA gate must be one of {sorted(GATES)}, '
                             f'got {gate!r}')
        k = int(abs((math.log2(channels) + 1) / 2))
        k = k if k % 2 else k + 1
        self.conv = nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
        self.gate = GATES[gate]

    def channel_weights(self, pooled: torch.Tensor) -> torch.Tensor:
        """(B, C) channel means -> (B, C) channel weights."""
        return self.gate(self.conv(pooled[:, None, :]))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.channel_weights(x.mean((2, 3)))[:, :, None, None]


def build_channel_attention(cfg, channels: int) -> nn.Module:
    """``None`` -> identity, ``dict(type='SE', reduction=r)`` or
    ``dict(type='ECA', gate=...)`` -> the layer."""
    if cfg is None:
        return nn.Identity()
    cfg = dict(cfg)
    layer_type = cfg.pop('type')
    layers = {'SE': SELayer, 'ECA': ECALayer}
    if layer_type not in layers:
        raise ValueError(f'channel attention type must be one of '
                         f'{sorted(layers)} or None, got {layer_type!r}')
    return layers[layer_type](channels, **cfg)

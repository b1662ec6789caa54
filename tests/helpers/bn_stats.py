"""Trained-looking BatchNorms for tests of the locality FFN."""
import torch
import torch.nn as nn

from localvit_mm.models.layers import SELayer


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters (folding them is then
    not the identity); SE squeeze biases of 1 keep their ReLU open."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.weight.copy_(1 +
                               0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.normal_(0, 0.2, generator=g)
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2., generator=g)
        if isinstance(m, SELayer):
            nn.init.constant_(m.fc[0].bias, 1.)
    return model

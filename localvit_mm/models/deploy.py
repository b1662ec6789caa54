"""Re-parameterization for inference (mmpretrain's RepVGG convention).

``switch_to_deploy(model)`` converts every submodule that has a
``switch_to_deploy`` method (each :class:`LocalityFeedForward` folds its
three BatchNorms into the linear and conv layers next to them), so every
backbone built on the shared locality FFN gets a deploy mode for free.
Backbones inherit :class:`DeployMixin` to offer ``model.switch_to_deploy()``.
A deploy model is built directly with ``ffn_cfg=dict(deploy=True)`` in the
backbone config, which loads checkpoints written by
``tools/model_converters/localvit_deploy.py``.
"""
import torch.nn as nn


def _convertible(model: nn.Module):
    """Submodules with their own ``switch_to_deploy`` (not the mixin's)."""
    return [
        m for m in model.modules()
        if callable(getattr(m, 'switch_to_deploy', None))
        and not isinstance(m, DeployMixin)
    ]


def has_deploy_mode(model: nn.Module) -> bool:
    """Whether :func:`switch_to_deploy` changes anything in ``model``."""
    return any(not getattr(m, 'deploy', False) for m in _convertible(model))


def switch_to_deploy(model: nn.Module) -> nn.Module:
    """Convert every re-parameterizable submodule of ``model`` in place.

    Returns:
        nn.Module: ``model`` itself (switching to eval mode is left to the
        caller).
    """
    for module in _convertible(model):
        if not getattr(module, 'deploy', False):
            module.switch_to_deploy()
    for module in model.modules():
        if isinstance(module, DeployMixin):
            module.deploy = True
    return model


class DeployMixin:
    """``switch_to_deploy()`` for a backbone made of locality FFN blocks."""

    deploy = False

    def switch_to_deploy(self):
        """Fold the BatchNorms of every locality FFN for inference."""
        switch_to_deploy(self)

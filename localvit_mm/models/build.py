"""Build the model of a config of any scope (mmpretrain, mmdet, mmseg) and
run it without pre- and post-processing."""
import importlib

import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope


def build_model_from_config(cfg: Config):
    """The model of ``cfg`` with freshly initialized (untrained) weights.

    ``cfg`` comes from :func:`localvit_mm.utils.load_config`, which has
    registered the modules of its ``default_scope``.

    Returns:
        nn.Module: mmpretrain's ``get_model`` result for that scope, else the
        scope's ``MODELS.build(cfg.model)``. ``init_weights`` is not called,
        so no pretrained file is read.
    """
    scope = cfg.default_scope
    if scope == 'mmpretrain':
        from mmpretrain.apis import get_model
        return get_model(cfg)
    registry = importlib.import_module(f'{scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(scope):
        return registry.build(cfg.model)


def forward_tensors(model, inputs):
    """The network's own outputs (backbone, neck and head; no data
    preprocessing, no post-processing such as NMS): ``mode='tensor'`` for an
    mmengine model, the plain forward for a bare module."""
    if hasattr(model, 'data_preprocessor'):
        return model(inputs, mode='tensor')
    return model(inputs)


def flatten_tensors(outputs) -> list:
    """The tensors in nested tuples, lists and dicts of outputs, in order."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    if isinstance(outputs, (list, tuple)):
        return [t for out in outputs for t in flatten_tensors(out)]
    return []

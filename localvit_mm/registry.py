"""The model registry of localvit_mm and its bridge to the OpenMMLab codebases.

Every public model is registered once in :data:`MODELS` (scope
``localvit_mm``). :func:`register_in_codebases` then adds each of them to the
``MODELS`` registry of mmpretrain, mmdet and mmseg, whichever are installed, so
``type='LocalViT'`` builds in a config of any of the three scopes. The model
code itself imports none of the three codebases.

:data:`ATTENTIONS` holds the attention modules a transformer block can be
built with (``attn_cfg=dict(type='WindowAttention', ...)``); they are parts,
not models, so they stay out of the codebases' registries.
"""
import importlib

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry(
    'model', parent=MMENGINE_MODELS, locations=['localvit_mm.models'])
ATTENTIONS = Registry(
    'attention', scope='localvit_mm', locations=['localvit_mm.models.layers'])

CODEBASES = ('mmpretrain', 'mmdet', 'mmseg')


def register_in_codebases():
    """Add every model of :data:`MODELS` to the installed codebases' MODELS."""
    for codebase in CODEBASES:
        try:
            registry = importlib.import_module(f'{codebase}.registry').MODELS
        except ImportError:
            continue
        for name, module in MODELS.module_dict.items():
            if registry.module_dict.get(name) is not module:
                registry.register_module(name=name, module=module)

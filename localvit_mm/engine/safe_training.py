"""The training-time safety every ``tools/train.py`` run gets."""
from mmengine.config import Config, ConfigDict
from mmengine.hooks import CheckpointHook


def use_safe_training_hooks(cfg: Config) -> Config:
    """Save checkpoints atomically and stop on a non-finite loss.

    The checkpoint hook of the config (mmengine's default one when the config
    names none) becomes :class:`AtomicCheckpointHook` with the same
    arguments; ``default_hooks.checkpoint = None`` keeps saving off.
    :class:`NonFiniteLossHook` is added unless the config sets
    ``stop_on_nonfinite_loss = False`` (mmengine's behaviour: keep training).
    """
    hooks = cfg.setdefault('default_hooks', ConfigDict())
    if 'checkpoint' not in hooks:
        hooks.checkpoint = ConfigDict(type='CheckpointHook', interval=1)
    checkpoint = hooks.checkpoint
    if checkpoint is not None and checkpoint.get('type') in ('CheckpointHook',
                                                             CheckpointHook):
        checkpoint.type = 'AtomicCheckpointHook'
    if cfg.get('stop_on_nonfinite_loss', True):
        custom = list(cfg.get('custom_hooks') or [])
        if not any(h.get('type') == 'NonFiniteLossHook' for h in custom):
            custom.append(ConfigDict(type='NonFiniteLossHook'))
        cfg.custom_hooks = custom
    return cfg

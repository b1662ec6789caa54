"""Training-time safety (atomic checkpoints, a stop on non-finite loss) and
TensorBoard logging where installed."""
from .atomic_checkpoint import (AtomicCheckpointHook, AtomicLocalBackend,
                                DiskFullError, atomic_write, partial_path)
from .nonfinite_loss import NonFiniteLossError, NonFiniteLossHook
from .safe_training import use_safe_training_hooks
from .tensorboard import tensorboard_installed, use_tensorboard_if_installed

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'DiskFullError',
    'atomic_write', 'partial_path', 'NonFiniteLossError', 'NonFiniteLossHook',
    'use_safe_training_hooks', 'tensorboard_installed',
    'use_tensorboard_if_installed'
]

"""Training-time safety: atomic checkpoints and a stop on non-finite loss."""
from .atomic_checkpoint import (AtomicCheckpointHook, AtomicLocalBackend,
                                DiskFullError, atomic_write, partial_path)
from .nonfinite_loss import NonFiniteLossError, NonFiniteLossHook
from .safe_training import use_safe_training_hooks

__all__ = [
    'AtomicCheckpointHook', 'AtomicLocalBackend', 'DiskFullError',
    'atomic_write', 'partial_path', 'NonFiniteLossError', 'NonFiniteLossHook',
    'use_safe_training_hooks'
]

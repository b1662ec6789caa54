from .complexity import (ELEMENTWISE_OPS, NORM_OPS, model_complexity,
                         paper_flop_handles, sdpa_flop_jit)
from .memory import SavedTensorBytes

__all__ = [
    'ELEMENTWISE_OPS', 'NORM_OPS', 'model_complexity', 'paper_flop_handles',
    'sdpa_flop_jit', 'SavedTensorBytes'
]

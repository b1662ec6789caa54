"""Compiled CPU kernels (``localvit_mm._ext``, built by setup.py)."""
import torch

try:
    from localvit_mm import _ext
except ImportError:  # not built: callers fall back to ATen ops
    _ext = None


def cpu_kernels():
    """The compiled module when it is built and this CPU runs its AVX2 code
    (or the machine is not x86), else None."""
    if _ext is None:
        return None
    if torch.backends.cpu.get_cpu_capability() == 'DEFAULT':
        return None
    return _ext

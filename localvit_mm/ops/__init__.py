"""Compiled CPU kernels of the locality FFN (``localvit_mm._ext``, built by
setup.py from ``csrc/bn_act.cpp``)."""
import os
import platform

import torch

try:
    from localvit_mm import _ext
except ImportError:  # not built: callers fall back to ATen ops
    _ext = None

# setup.py compiles the x86 build with AVX2 vectors.
_NEEDS_AVX2 = platform.machine() in ('x86_64', 'AMD64')


def cpu_kernels():
    """The compiled module when it is built, this CPU can run it and the
    environment variable ``LOCALVIT_CPU_KERNELS`` is not ``0``; else None
    (the callers then compute the same with ATen ops)."""
    if _ext is None or os.environ.get('LOCALVIT_CPU_KERNELS') == '0':
        return None
    if _NEEDS_AVX2 and torch.backends.cpu.get_cpu_capability() == 'DEFAULT':
        return None
    return _ext

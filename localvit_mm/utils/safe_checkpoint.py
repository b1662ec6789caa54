"""Checkpoint loading that keeps torch's ``weights_only`` safety on.

torch >= 2.6 unpickles with ``weights_only=True``; mmengine 0.10.7 calls
``torch.load`` without the argument, so the checkpoints it saves itself (their
message hub holds ``HistoryBuffer`` objects and numpy arrays) fail to load.
Instead of turning the safety off, the few classes mmengine and the official
LocalViT releases are known to store are allowed, and anything else is refused
with a message that names the problem and the fix.
"""
import argparse
import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from .errors import UserInputError


def _numpy_globals():
    """The numpy reconstructors and dtypes that pickled arrays refer to."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else \
        np.core.multiarray
    # The scalar types, not their names: numpy 2 warns on deprecated name
    # aliases such as 'a'.
    dtype_classes = [
        type(np.dtype(scalar)) for scalar in set(np.sctypeDict.values())
    ]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype
            ] + sorted(
                set(dtype_classes), key=str)


def _history_buffer_method(owner, name):
    """``getattr`` as a pickled ``HistoryBuffer`` uses it: only its
    statistics methods (min, max, mean, current) may be looked up."""
    methods = {'min', 'max', 'mean', 'current'}
    methods.update(HistoryBuffer._statistics_methods)
    if (owner is HistoryBuffer or isinstance(owner, HistoryBuffer)) and \
            name in methods:
        return getattr(owner, name)
    raise pickle.UnpicklingError(
        f'getattr({type(owner).__name__}, {name!r}) is not allowed')


SAFE_GLOBALS = [
    HistoryBuffer, argparse.Namespace,
    (_history_buffer_method, 'builtins.getattr')
] + _numpy_globals()


def _unpickling_reason(message: str) -> str:
    """The informative line of torch's long weights-only error."""
    for line in message.splitlines():
        if 'Unsupported global' in line:
            return line.split('Unsupported global: ')[-1].split(' was not')[0]
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:]):
        if line.endswith('WeightsUnpickler error:'):
            return following
    return lines[-1] if lines else 'unknown reason'


def safe_load(filename: str, map_location=None):
    """``torch.load`` with ``weights_only=True`` and the known-safe classes.

    Raises:
        UserInputError: The file is missing, corrupt, or holds an object that
            is not known to be safe.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise UserInputError(
            f'checkpoint {filename!r} not found: check the path (a training '
            "run's newest checkpoint is named in its "
            'work_dir/last_checkpoint)')
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = _unpickling_reason(str(error))
        raise UserInputError(
            f'checkpoint {filename!r} holds an object that is not known to '
            f'be safe ({reason}): only load checkpoints saved by mmengine or '
            'converted with tools/model_converters/; if you trust the file, '
            'convert it to a plain state dict') from None
    except (RuntimeError, EOFError, ValueError) as error:
        reason = str(error).strip().splitlines()[0]
        raise UserInputError(
            f'checkpoint {filename!r} is corrupt or not a torch checkpoint '
            f'({reason}): re-download or re-save it, or pick an earlier '
            'checkpoint') from None


def register_safe_checkpoint_loader():
    """Route mmengine's local-file checkpoint loading through
    :func:`safe_load` (``load_from``, ``--resume``, ``init_cfg``)."""
    CheckpointLoader.register_scheme(prefixes='', force=True)(safe_load)

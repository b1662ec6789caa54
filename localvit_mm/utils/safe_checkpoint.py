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
    dtype_classes = [
        type(np.dtype(name)) for name in np.sctypeDict
        if isinstance(name, str)
    ]
    return [multiarray._reconstruct, multiarray.scalar, np.ndarray, np.dtype
            ] + sorted(set(dtype_classes), key=str)


SAFE_GLOBALS = [HistoryBuffer, argparse.Namespace] + _numpy_globals()


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
            f"run's newest checkpoint is named in its work_dir/last_checkpoint)")
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(
                filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).strip().splitlines()[0]
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

"""Checkpoint loading that keeps torch's ``weights_only`` safety on.

torch >= 2.6 unpickles with ``weights_only=True``; mmengine 0.10.7 calls
``torch.load`` without the argument, so the checkpoints it saves itself (their
message hub holds ``HistoryBuffer`` objects and numpy arrays) fail to load,
and its URL loader (``http://``, ``torchvision://``, ``open-mmlab://``...)
passes ``weights_only=False`` through ``torch.hub``, so a downloaded file can
run code. Instead of turning the safety off, the few classes mmengine and the
official LocalViT releases are known to store are allowed, every scheme of
mmengine's ``CheckpointLoader`` unpickles weights only, and anything else is
refused with a message that names the problem and the fix.

``import localvit_mm`` (which every config's ``custom_imports`` does)
registers these loaders, so ``load_from``, ``--resume``, ``init_cfg``
Pretrained and the codebases' ``init_model`` / ``init_detector`` and
inferencers all load this way.
"""
import argparse
import contextlib
import functools
import os
import os.path as osp
import pickle
import re

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
    """The informative part of torch's long weights-only error: the global
    it refused, else the line after ``WeightsUnpickler error:``."""
    refused = re.search(r'GLOBAL ([\w.]+)', message)
    if refused:
        return f'GLOBAL {refused.group(1)}'
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    for line, following in zip(lines, lines[1:]):
        if line.endswith('WeightsUnpickler error:'):
            return following
    return lines[-1] if lines else 'unknown reason'


def _refusal(filename: str, error: Exception) -> UserInputError:
    """The one-line error for a checkpoint torch refused or could not
    read."""
    if isinstance(error, pickle.UnpicklingError):
        reason = _unpickling_reason(str(error))
        return UserInputError(
            f'checkpoint {filename!r} holds an object that is not known to '
            f'be safe ({reason}): only load checkpoints saved by mmengine or '
            'converted with tools/model_converters/; if you trust the file, '
            'convert it to a plain state dict')
    reason = str(error).strip().splitlines()[0] if str(error).strip() \
        else type(error).__name__
    return UserInputError(
        f'checkpoint {filename!r} is corrupt or not a torch checkpoint '
        f'({reason}): re-download or re-save it, or pick an earlier '
        'checkpoint')


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
    except (pickle.UnpicklingError, RuntimeError, EOFError,
            ValueError) as error:
        raise _refusal(filename, error) from None


@contextlib.contextmanager
def weights_only_everywhere():
    """Within the block every ``torch.load`` unpickles weights only (with
    the known-safe classes), even one that passes ``weights_only=False``.

    torch reads ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` at each call; the
    opposite switch ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` is lifted meanwhile.
    """
    switches = ('TORCH_FORCE_WEIGHTS_ONLY_LOAD',
                'TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD')
    saved = {name: os.environ.get(name) for name in switches}
    os.environ[switches[0]] = '1'
    os.environ.pop(switches[1], None)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def load_from_local(filename: str, map_location=None):
    """mmengine's local-file scheme: :func:`safe_load`."""
    return safe_load(filename, map_location)


# Marks the loaders registered here (each is registered once).
load_from_local.weights_only = True


def _weights_only_scheme(loader):
    """One of mmengine's other schemes (URLs, model zoos, object stores),
    run with :func:`weights_only_everywhere`."""

    @functools.wraps(loader)
    def load(filename, map_location=None, *args, **kwargs):
        with weights_only_everywhere():
            try:
                return loader(filename, map_location, *args, **kwargs)
            except (pickle.UnpicklingError, RuntimeError, EOFError) as error:
                raise _refusal(filename, error) from None

    load.weights_only = True
    return load


def register_safe_checkpoint_loader():
    """Make every scheme of mmengine's ``CheckpointLoader`` (local files,
    URLs, model zoos, object stores: what ``load_from``, ``--resume``,
    ``init_cfg`` Pretrained and ``init_model`` read through) unpickle
    weights only.

    Called by ``import localvit_mm``; calling it again is harmless and also
    covers schemes registered since.
    """
    for prefix, loader in list(CheckpointLoader._schemes.items()):
        if getattr(loader, 'weights_only', False):
            continue
        if prefix == '':
            safe = load_from_local
        else:
            safe = _weights_only_scheme(loader)
        CheckpointLoader.register_scheme(prefix, safe, force=True)

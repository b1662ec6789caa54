"""Checkpoints that are never half written, and never picked when they are.

mmengine writes a checkpoint straight to its final name and then overwrites
``last_checkpoint`` in place, so a kill or a full disk in the middle of a save
leaves a truncated ``.pth`` (or an empty ``last_checkpoint``) that ``--resume``
then picks. Here every file goes to a hidden ``.NAME.partial`` file in the same
folder, is flushed to disk and renamed over the final name (atomic on POSIX
file systems); old checkpoints are removed only once the new one is complete.
"""
import errno
import glob
import os
import os.path as osp
import shutil
from collections import deque

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook
from mmengine.registry import HOOKS

from ..utils.errors import UserInputError
from ..utils.launch import latest_checkpoint

PARTIAL_SUFFIX = '.partial'
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(UserInputError):
    """A checkpoint did not fit on the disk of the work dir."""


def partial_path(path: str) -> str:
    """The hidden file a save of ``path`` writes before renaming it."""
    folder, name = osp.split(path)
    return osp.join(folder, f'.{name}{PARTIAL_SUFFIX}')


def atomic_write(data: bytes, path: str):
    """Write ``data`` to ``path`` so that ``path`` is either its old content
    or all of ``data``, whatever happens during the call.

    Raises:
        OSError: The write failed; nothing is left behind. A full disk sets
            ``errno.ENOSPC`` and ``needed_bytes`` on the error.
    """
    folder = osp.dirname(osp.abspath(path))
    os.makedirs(folder, exist_ok=True)
    partial = partial_path(path)
    try:
        with open(partial, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except OSError as error:
        if osp.exists(partial):
            os.remove(partial)
        error.needed_bytes = len(data)
        raise
    # The rename itself survives a power cut only once the folder is synced.
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


@register_backend('atomic_local')
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose writes are atomic."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


def _megabytes(num_bytes: int) -> str:
    return f'{num_bytes / 2**20:.1f} MB'


@HOOKS.register_module()
class AtomicCheckpointHook(CheckpointHook):
    """:class:`mmengine.hooks.CheckpointHook` with atomic saves.

    Same arguments and files. Differences: checkpoints, best checkpoints and
    ``last_checkpoint`` are written atomically (:func:`atomic_write`); with
    ``max_keep_ckpts`` the oldest checkpoint is removed after the new one and
    ``last_checkpoint`` are complete; partial files of an interrupted save are
    removed when training starts; a full disk stops training with one line
    naming the work dir and the space needed.
    """

    def __init__(self, *args, backend_args=None, **kwargs):
        local = '://' not in str(kwargs.get('out_dir') or '')
        if local and backend_args is None and \
                kwargs.get('file_client_args') is None:
            backend_args = dict(backend='atomic_local')
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def _is_atomic(self) -> bool:
        return isinstance(self.file_backend, AtomicLocalBackend)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not (self._is_atomic() and is_main_process()):
            return
        leftovers = glob.glob(
            osp.join(glob.escape(self.out_dir), f'.*{PARTIAL_SUFFIX}'))
        for path in leftovers:
            os.remove(path)
        if leftovers:
            runner.logger.warning(
                f'removed {len(leftovers)} partial checkpoint file(s) of an '
                f'interrupted save: {", ".join(map(osp.basename, leftovers))}')

    def _save_checkpoint_with_step(self, runner, step, meta):
        if not self._is_atomic():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = []
        if self.max_keep_ckpts > 0 and (not self.keep_ckpt_ids
                                        or self.keep_ckpt_ids[-1] != step):
            # The saved message hub lists the outdated checkpoint too, so a
            # run killed before it is removed removes it when resumed.
            kept = list(self.keep_ckpt_ids) + [step]
            outdated = kept[:-self.max_keep_ckpts]
            runner.message_hub.update_info('keep_ckpt_ids', kept)
            self.keep_ckpt_ids = deque(kept[-self.max_keep_ckpts:],
                                       self.max_keep_ckpts)

        filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        try:
            runner.save_checkpoint(
                self.out_dir,
                filename,
                save_optimizer=self.save_optimizer,
                save_param_scheduler=self.save_param_scheduler,
                meta=meta,
                by_epoch=self.by_epoch,
                backend_args=self.backend_args,
                **self.args)
        except OSError as error:
            if error.errno in NO_SPACE:
                self._raise_disk_full(runner, filename, error)
            raise
        if not is_main_process():
            return
        atomic_write(self.last_ckpt.encode(),
                     osp.join(runner.work_dir, 'last_checkpoint'))
        for old_step in outdated:
            path = self.file_backend.join_path(
                self.out_dir, self.filename_tmpl.format(old_step))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)
        if outdated:
            runner.message_hub.update_info('keep_ckpt_ids',
                                           list(self.keep_ckpt_ids))

    def _raise_disk_full(self, runner, filename, error):
        needed = getattr(error, 'needed_bytes', 0)
        free = shutil.disk_usage(self.out_dir).free
        last = latest_checkpoint(runner.work_dir)
        previous = f'{last} is intact' if last else \
            'no checkpoint was saved before'
        raise DiskFullError(
            f'no space left to save {filename} in work dir {self.out_dir}: '
            f'it needs {_megabytes(needed)}, {_megabytes(free)} are free '
            f'({previous}); free space or pass --work-dir on a bigger disk, '
            'then rerun with --resume') from None

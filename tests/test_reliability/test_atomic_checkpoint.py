"""The parts behind atomic checkpoints, on a real (tiny) full disk."""
import errno
import subprocess

import pytest
from mmengine.config import Config

from localvit_mm.engine import (AtomicCheckpointHook, atomic_write,
                                partial_path, use_safe_training_hooks)


@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KB tmpfs: a real file system that fills up."""
    folder = tmp_path / 'disk'
    folder.mkdir()
    subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', 'size=64k', 'tmpfs',
         str(folder)],
        check=True,
        capture_output=True)
    yield folder
    subprocess.run(['umount', str(folder)], check=True)


def test_atomic_write_replaces_the_whole_file(tmp_path):
    path = tmp_path / 'a.pth'
    atomic_write(b'old', str(path))
    atomic_write(b'new content', str(path))
    assert path.read_bytes() == b'new content'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['a.pth']
    assert partial_path(str(path)) == str(tmp_path / '.a.pth.partial')


def test_full_disk_keeps_the_old_file_and_leaves_nothing(tiny_disk):
    path = tiny_disk / 'iter_8.pth'
    atomic_write(b'x' * 16 * 1024, str(path))
    with pytest.raises(OSError) as error:
        atomic_write(b'y' * 100 * 1024, str(path))
    assert error.value.errno == errno.ENOSPC
    assert error.value.needed_bytes == 100 * 1024
    assert path.read_bytes() == b'x' * 16 * 1024
    assert [p.name for p in tiny_disk.iterdir()] == ['iter_8.pth']


def test_safe_training_hooks_in_a_config():
    cfg = Config(
        dict(
            default_hooks=dict(
                checkpoint=dict(type='CheckpointHook', interval=4))))
    use_safe_training_hooks(cfg)
    use_safe_training_hooks(cfg)  # idempotent
    assert cfg.default_hooks.checkpoint == dict(
        type='AtomicCheckpointHook', interval=4)
    assert cfg.custom_hooks == [dict(type='NonFiniteLossHook')]

    # mmengine's default checkpoint hook when the config names none.
    cfg = use_safe_training_hooks(Config(dict(stop_on_nonfinite_loss=False)))
    assert cfg.default_hooks.checkpoint == dict(
        type='AtomicCheckpointHook', interval=1)
    assert 'custom_hooks' not in cfg

    cfg = use_safe_training_hooks(
        Config(dict(default_hooks=dict(checkpoint=None))))
    assert cfg.default_hooks.checkpoint is None


def test_hook_writes_locally_through_the_atomic_backend():
    assert AtomicCheckpointHook(interval=1).backend_args == dict(
        backend='atomic_local')
    remote = AtomicCheckpointHook(interval=1, out_dir='s3://bucket/run')
    assert remote.backend_args is None

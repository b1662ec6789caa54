"""Real faults during real training runs: SIGKILL at random moments and in
the middle of a save, a dead rank, a full disk, a diverging loss.

Every run is LeNet-5 on real Fashion-MNIST with deterministic settings, so a
run that is interrupted and resumed must end with exactly (bit for bit) the
weights and optimizer state of the uninterrupted run.
"""
import glob
import os
import os.path as osp
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import REPO, run_tool
from recording_hooks import assert_same_tensors, state_of
from short_runs import short_run

MAX_ITERS = 24
INTERVAL = 4
KEEP = 2


def config(tmp_path, name, extra='', batch_size=16):
    return short_run(
        tmp_path,
        name,
        batch_size=batch_size,
        max_iters=MAX_ITERS,
        extra=extra,
        images=128,
        interval=INTERVAL,
        max_keep_ckpts=KEEP)


def train(cfg, work_dir, *args, env=None):
    return run_tool(
        'python',
        'tools/train.py',
        cfg,
        '--work-dir',
        str(work_dir),
        *args,
        env=env)


def dist_train(cfg, work_dir, *args, port):
    return run_tool(
        'bash',
        'tools/dist_train.sh',
        cfg,
        '2',
        '--work-dir',
        str(work_dir),
        *args,
        env={'PORT': str(port)})


def checkpoints(work_dir):
    return sorted(
        osp.basename(p) for p in glob.glob(osp.join(work_dir, '*.pth')))


def partial_files(work_dir):
    return sorted(
        osp.basename(p) for p in glob.glob(osp.join(work_dir, '.*.partial')))


def last_checkpoint(work_dir):
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return osp.basename(f.read().strip())


def assert_same_final_state(work_dir, reference_dir):
    final = f'iter_{MAX_ITERS}.pth'
    it, weights, optim = state_of(osp.join(work_dir, final))
    it_ref, weights_ref, optim_ref = state_of(osp.join(reference_dir, final))
    assert it == it_ref == MAX_ITERS
    assert_same_tensors(weights, weights_ref)
    assert_same_tensors(optim, optim_ref)
    assert checkpoints(work_dir) == checkpoints(reference_dir)
    assert partial_files(work_dir) == []


@pytest.fixture(scope='module')
def reference(tmp_path_factory, fashion_mnist):
    """The uninterrupted runs, one process and two processes."""
    tmp_path = tmp_path_factory.mktemp('reference')
    runs = {}
    result = train(config(tmp_path, 'one.py'), tmp_path / 'one')
    assert result.returncode == 0, result.stderr[-3000:]
    runs['one'] = tmp_path / 'one'
    result = dist_train(
        config(tmp_path, 'two.py', batch_size=8), tmp_path / 'two', port=29531)
    assert result.returncode == 0, result.stderr[-3000:]
    runs['two'] = tmp_path / 'two'
    assert checkpoints(runs['one']) == [
        f'iter_{MAX_ITERS - INTERVAL}.pth', f'iter_{MAX_ITERS}.pth'
    ]
    return runs


def kill_at_random_moment(cfg, work_dir, rng):
    """Resume the run, SIGKILL it at a random moment of its training."""
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([REPO,
                                    osp.join(REPO, 'tests', 'helpers')]))
    process = subprocess.Popen([
        sys.executable, 'tools/train.py', cfg, '--work-dir',
        str(work_dir), '--resume'
    ],
                               cwd=REPO,
                               env=env,
                               stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT,
                               text=True)
    for line in process.stdout:
        if 'Iter(train)' in line:  # the first logged iteration
            break
    time.sleep(rng.uniform(0, 0.3))
    process.send_signal(signal.SIGKILL)
    process.communicate()
    return process.returncode


def test_sigkill_mid_save_and_at_random_moments_loses_nothing(
        tmp_path, reference):
    work_dir = tmp_path / 'run'
    killed = config(
        tmp_path,
        'killed.py',
        extra="custom_hooks = ["
        "dict(type='GlobalLossRecorderHook'), "
        "dict(type='KillDuringSaveHook', at_iter=12)]")
    result = train(killed, work_dir)
    assert result.returncode == -signal.SIGKILL
    # Killed with every byte of iter_12.pth written but not committed: the
    # partial file is there, the previous checkpoints and the record intact.
    assert partial_files(work_dir) == ['.iter_12.pth.partial']
    assert checkpoints(work_dir) == ['iter_4.pth', 'iter_8.pth']
    assert last_checkpoint(work_dir) == 'iter_8.pth'
    assert state_of(work_dir / 'iter_8.pth')[0] == 8

    cfg = config(tmp_path, 'cfg.py')
    rng = random.Random(0)
    for _ in range(2):
        assert kill_at_random_moment(cfg, work_dir, rng) == -signal.SIGKILL
        # Whenever the kill lands, the record names a complete checkpoint.
        assert len(partial_files(work_dir)) <= 1
        newest = last_checkpoint(work_dir)
        assert state_of(work_dir / newest)[0] == int(newest[5:-4])
    result = train(cfg, work_dir, '--resume')
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_final_state(work_dir, reference['one'])


def test_dist_train_killed_mid_save_resumes_bit_for_bit(tmp_path, reference):
    work_dir = tmp_path / 'run'
    killed = config(
        tmp_path,
        'killed.py',
        batch_size=8,
        extra="custom_hooks = [dict(type='GlobalLossRecorderHook'), "
        "dict(type='KillDuringSaveHook', at_iter=12)]")
    result = dist_train(killed, work_dir, port=29532)
    assert result.returncode != 0
    assert partial_files(work_dir) == ['.iter_12.pth.partial']
    assert last_checkpoint(work_dir) == 'iter_8.pth'
    cfg = config(tmp_path, 'cfg.py', batch_size=8)
    result = dist_train(cfg, work_dir, '--resume', port=29533)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_final_state(work_dir, reference['two'])


def test_dead_rank_ends_the_job(tmp_path, fashion_mnist):
    cfg = config(
        tmp_path,
        'cfg.py',
        batch_size=8,
        extra="custom_hooks = [dict(type='KillAfterIterHook', at_iter=6, "
        'rank=1)]')
    start = time.monotonic()
    result = dist_train(cfg, tmp_path / 'run', port=29534)
    elapsed = time.monotonic() - start
    assert result.returncode == 1
    assert elapsed < 120, elapsed
    last_line = result.stderr.strip().splitlines()[-1]
    assert last_line.startswith('error: rank 1 (pid '), last_line
    assert 'died from SIGKILL, so the job was stopped: rerun with --resume' \
        in last_line
    assert last_checkpoint(tmp_path / 'run') == 'iter_4.pth'


def mount_tmpfs(path, size):
    path.mkdir()
    subprocess.run(
        ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs',
         str(path)],
        check=True,
        capture_output=True)


def test_full_disk_stops_in_one_line_and_resume_finishes(tmp_path, reference):
    size = osp.getsize(reference['one'] / f'iter_{MAX_ITERS}.pth')
    work_dir = tmp_path / 'small_disk'
    # Room for two checkpoints and the logs, not for a third.
    mount_tmpfs(work_dir, 2 * size + 256 * 1024)
    try:
        cfg = config(tmp_path, 'cfg.py')
        result = train(cfg, work_dir)
        assert result.returncode == 2, result.stderr[-3000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith('error: no space left to save iter_12.pth'
                                   f' in work dir {work_dir}: it needs '
                                   f'{size / 2**20:.1f} MB'), lines[0]
        assert f'{work_dir}/iter_8.pth is intact' in lines[0]
        assert lines[0].endswith('then rerun with --resume')
        assert checkpoints(work_dir) == ['iter_4.pth', 'iter_8.pth']
        assert partial_files(work_dir) == []
        assert last_checkpoint(work_dir) == 'iter_8.pth'

        subprocess.run(
            ['mount', '-o', f'remount,size={4 * size + 2**20}',
             str(work_dir)],
            check=True)
        result = train(cfg, work_dir, '--resume')
        assert result.returncode == 0, result.stderr[-3000:]
        assert_same_final_state(work_dir, reference['one'])
    finally:
        subprocess.run(['umount', str(work_dir)])


def test_nonfinite_loss_stops_with_the_last_good_checkpoint(
        tmp_path, fashion_mnist):
    diverging = "optim_wrapper = dict(optimizer=dict(lr=1e9))\n"
    work_dir = tmp_path / 'run'
    result = train(config(tmp_path, 'nan.py', extra=diverging), work_dir)
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error: loss is not finite at iteration ')
    bad_iter = int(lines[0].split('iteration ')[1].split(' ')[0])
    last = (bad_iter - 1) // INTERVAL * INTERVAL
    assert f'the last good checkpoint is {work_dir}/iter_{last}.pth' in \
        lines[0]
    assert checkpoints(work_dir)[-1] == f'iter_{last}.pth'
    weights = state_of(work_dir / f'iter_{last}.pth')[1]
    assert all(torch.isfinite(w).all() for w in weights.values())

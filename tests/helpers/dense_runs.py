"""Real-data detection and segmentation runs through the project's tools:
data preparation, tools/train.py (or tools/dist_train.sh) with a loss
recorder, the logged metrics and the trivial segmentation baseline."""
import glob
import json
import math
import os.path as osp
import textwrap

import numpy as np
from conftest import REPO, run_tool
from PIL import Image


def prepare(script):
    """Run a data script; a failed download fails with its message."""
    result = run_tool('python', f'tools/data/{script}')
    assert result.returncode == 0, (
        f'tools/data/{script} failed:\n{result.stdout}{result.stderr}')


def write_config(tmp_path, config, body=''):
    """A config over ``config`` that also records the loss of every
    iteration (``work_dir/losses.json``)."""
    path = tmp_path / 'config.py'
    base = f'_base_ = [{osp.join(REPO, config)!r}]\n'
    path.write_text(base + textwrap.dedent("""
        custom_imports = dict(
            imports=['localvit_mm.models', 'recording_hooks'],
            allow_failed_imports=False)
        custom_hooks = [dict(type='GlobalLossRecorderHook')]
        """) + textwrap.dedent(body))
    return str(path)


def train(tmp_path, config, body='', nproc=1):
    """tools/train.py, or tools/dist_train.sh with ``nproc`` CPU processes.

    Returns:
        tuple: (work_dir, the global loss of every iteration, the log).
    """
    work_dir = tmp_path / 'work'
    args = (write_config(tmp_path, config, body), '--work-dir', str(work_dir))
    if nproc == 1:
        result = run_tool('python', 'tools/train.py', *args, timeout=1800)
    else:
        result = run_tool(
            'bash',
            'tools/dist_train.sh',
            args[0],
            str(nproc),
            *args[1:],
            env={'PORT': '29527'},
            timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = json.loads((work_dir / 'losses.json').read_text())
    assert all(math.isfinite(x) for x in losses)
    return work_dir, losses, result.stdout + result.stderr


def metrics(work_dir, key):
    """The last logged value of ``key`` in any scalar log under work_dir."""
    found = []
    for path in sorted(
            glob.glob(osp.join(work_dir, '**', '*.json'), recursive=True)):
        with open(path) as f:
            for line in f:
                if key in line:
                    found.append(json.loads(line)[key])
    assert found, f'{key} was never logged under {work_dir}'
    return found[-1]


def mean(values):
    return sum(values) / len(values)


def background_only_miou(ann_dir, num_classes):
    """mIoU (%) of predicting background everywhere: IoU of the background
    over the classes present in the ground truth (255 ignored)."""
    counts = np.zeros(256, np.int64)
    for path in glob.glob(osp.join(ann_dir, '*.png')):
        counts += np.bincount(
            np.asarray(Image.open(path)).ravel(), minlength=256)
    valid = counts[:num_classes]
    return 100 * valid[0] / valid.sum() / np.count_nonzero(valid)

"""LocalViT-Swin (narrow) in an mmseg model, trained on real images through
tools/train.py and tested through tools/test.py (a CPU-sized run, data
prepared by the project's own tools/data script)."""
import glob
import json
import math
import os.path as osp
import textwrap

import numpy as np
import pytest
from conftest import REPO, run_tool
from PIL import Image

SEG_CONFIG = 'configs/segmentation/fpn_localvit-swin-t_labelme.py'
MAX_ITERS = 60  # the config's max_iters


@pytest.fixture(scope='module')
def labelme():
    result = run_tool('python', 'tools/data/prepare_labelme.py')
    assert result.returncode == 0, (
        f'tools/data/prepare_labelme.py failed:\n{result.stdout}'
        f'{result.stderr}')
    return osp.join(REPO, 'data')


def train(tmp_path, config):
    """tools/train.py on ``config``, recording the loss of every iteration
    (``work_dir/losses.json``)."""
    path = tmp_path / 'config.py'
    path.write_text(f'_base_ = [{osp.join(REPO, config)!r}]\n' +
                    textwrap.dedent("""
        custom_imports = dict(
            imports=['localvit_mm.models', 'recording_hooks'],
            allow_failed_imports=False)
        custom_hooks = [dict(type='GlobalLossRecorderHook')]
        """))
    work_dir = tmp_path / 'work'
    result = run_tool(
        'python',
        'tools/train.py',
        str(path),
        '--work-dir',
        str(work_dir),
        timeout=1800)
    assert result.returncode == 0, result.stderr[-4000:]
    losses = json.loads((work_dir / 'losses.json').read_text())
    assert all(math.isfinite(x) for x in losses)
    return path, work_dir, losses


def metric(work_dir, key):
    """The last logged value of ``key`` in any scalar log under work_dir."""
    found = []
    for path in sorted(
            glob.glob(osp.join(work_dir, '**', '*.json'), recursive=True)):
        with open(path) as f:
            found += [json.loads(line)[key] for line in f if key in line]
    assert found, f'{key} was never logged under {work_dir}'
    return found[-1]


def background_only_miou(ann_dir, num_classes):
    """mIoU (%) of predicting background everywhere: IoU of the background
    over the classes present in the ground truth (255 ignored)."""
    counts = np.zeros(256, np.int64)
    for path in glob.glob(osp.join(ann_dir, '*.png')):
        counts += np.bincount(
            np.asarray(Image.open(path)).ravel(), minlength=256)
    valid = counts[:num_classes]
    return 100 * valid[0] / valid.sum() / np.count_nonzero(valid)


def test_semantic_fpn_swin_learns_street_masks(tmp_path, labelme):
    """Semantic FPN + a narrow LocalViT-Swin trains from scratch on labelme
    masks and beats the all-background prediction on two held-out street
    frames (measured: 51.2 mIoU against 29.0); tools/test.py reproduces the
    validation mIoU."""
    config, work_dir, losses = train(tmp_path, SEG_CONFIG)
    assert len(losses) == MAX_ITERS
    head, tail = losses[:5], losses[-5:]
    assert sum(tail) < 0.6 * sum(head)
    miou = metric(work_dir, 'mIoU')
    baseline = background_only_miou(
        osp.join(labelme, 'labelme_seg', 'ann_dir', 'val'), 8)
    assert 25 < baseline < 35  # 3 classes in the frames, ~88% background
    assert miou > baseline + 10, f'mIoU {miou} vs baseline {baseline:.1f}'

    result = run_tool('python', 'tools/test.py', str(config),
                      str(work_dir / f'iter_{MAX_ITERS}.pth'), '--work-dir',
                      str(tmp_path / 'test'))
    assert result.returncode == 0, result.stderr[-4000:]
    assert metric(tmp_path / 'test', 'mIoU') == pytest.approx(miou, abs=0.01)

"""tools/train.py, tools/test.py and the launchers on real Fashion-MNIST."""
import hashlib
import json
import os
import os.path as osp
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_tool
from short_runs import LENET, short_run


def test_environment_imports():
    import mmcv.ops
    import mmdet.models  # noqa: F401
    import mmpretrain.models  # noqa: F401
    import mmseg.models  # noqa: F401

    import localvit_mm.models  # noqa: F401
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.],
                          [20., 20., 30., 30.]])
    _, keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.).reshape(1, 1, 4, 4)
    rois = torch.tensor([[0., 0., 0., 4., 4.]])
    pooled = mmcv.ops.roi_align(feat, rois, (1, 1), 1.0, 0, 'avg', True)
    assert pooled.item() == pytest.approx(feat.mean().item())


def test_dist_train_two_cpu_processes_match_one(tmp_path, fashion_mnist):
    """2 gloo processes x 8 images == 1 process x 16 images, step by step."""
    one = short_run(tmp_path, 'one.py', batch_size=16, max_iters=6)
    two = short_run(tmp_path, 'two.py', batch_size=8, max_iters=6)
    result = run_tool('python', 'tools/train.py', one, '--work-dir',
                      str(tmp_path / 'one'))
    assert result.returncode == 0, result.stderr[-3000:]
    result = run_tool(
        'bash',
        'tools/dist_train.sh',
        two,
        '2',
        '--work-dir',
        str(tmp_path / 'two'),
        env={'PORT': '29517'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'gloo' in result.stdout + result.stderr
    losses_one = json.loads((tmp_path / 'one' / 'losses.json').read_text())
    losses_two = json.loads((tmp_path / 'two' / 'losses.json').read_text())
    assert len(losses_one) == len(losses_two) == 6
    # Same global batch, same weights: only the summation order differs.
    assert losses_two == pytest.approx(losses_one, rel=1e-5)
    assert losses_one[-1] < losses_one[0]


def tree_digest(folder):
    """Every file under folder with the hash of its bytes."""
    return {
        osp.relpath(osp.join(root, name), folder):
        hashlib.sha256(Path(root, name).read_bytes()).hexdigest()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture
def used_work_dir(tmp_path):
    """A work dir that holds the results of an earlier run."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'lenet5_1xb64_fashion-mnist.py').write_text('# earlier\n')
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_4.pth'))
    torch.save({'state_dict': {'w': torch.ones(2)}}, work_dir / 'iter_4.pth')
    return work_dir


def expect_one_line_error(result, *phrases):
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith('error: ')
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


def test_bad_inputs_fail_in_one_line_without_touching_work_dir(
        tmp_path, used_work_dir, fashion_mnist):
    before = tree_digest(used_work_dir)
    no_scope = tmp_path / 'no_scope.py'
    no_scope.write_text("model = dict(type='ImageClassifier')\n")
    bad_scope = tmp_path / 'bad_scope.py'
    bad_scope.write_text("default_scope = 'mmfoo'\n")
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes((used_work_dir / 'iter_4.pth').read_bytes()[:100])
    untrusted = tmp_path / 'untrusted.pth'
    from fractions import Fraction
    torch.save({'state_dict': {}, 'meta': Fraction(1, 3)}, untrusted)

    def train(config, *args):
        return run_tool('python', 'tools/train.py', config, '--work-dir',
                        str(used_work_dir), *args)

    expect_one_line_error(
        train('configs/nope.py'), "config 'configs/nope.py' not found",
        'check the path')
    expect_one_line_error(
        train(str(no_scope)), 'sets no default_scope', "'mmpretrain'")
    expect_one_line_error(
        train(str(bad_scope)), "default_scope='mmfoo'", 'use one of')
    expect_one_line_error(
        train(LENET, '--cfg-options',
              'train_dataloader.dataset.data_root=data/missing'),
        "data folder 'data/missing'", 'tools/data/')
    expect_one_line_error(
        train(LENET, '--resume', str(corrupt)), 'is corrupt', 'pick an')
    expect_one_line_error(
        train(LENET, '--resume', str(untrusted)), 'not known to be safe',
        'fractions.Fraction')
    expect_one_line_error(
        train(LENET, '--resume', str(tmp_path / 'gone.pth')), 'not found')
    expect_one_line_error(
        run_tool('python', 'tools/test.py', LENET, str(untrusted),
                 '--work-dir', str(used_work_dir)), 'not known to be safe')
    assert tree_digest(used_work_dir) == before


def test_slurm_train_on_cpu_tasks(tmp_path, fashion_mnist):
    """tools/slurm_train.sh through a local stand-in for srun, two tasks."""
    config = short_run(tmp_path, 'cfg.py', batch_size=8, max_iters=2)
    record = tmp_path / 'srun_args'
    result = run_tool(
        'bash',
        'tools/slurm_train.sh',
        'cpu',
        'lenet',
        config,
        '--work-dir',
        str(tmp_path / 'run'),
        env={
            'PATH':
            osp.join(REPO, 'tests/helpers/fake_slurm') + os.pathsep +
            os.environ['PATH'],
            'GPUS':
            '2',
            'GPUS_PER_NODE':
            '2',
            'GRES':
            '',
            'SRUN_RECORD':
            str(record),
            'MASTER_ADDR':
            '127.0.0.1',
            'MASTER_PORT':
            '29519'
        })
    assert result.returncode == 0, result.stderr[-3000:]
    args = record.read_text().split()
    assert args[:3] == ['-p', 'cpu', '--job-name=lenet']
    assert '--ntasks=2' in args and '--launcher' in args
    assert 'distributed over 2 processes with the gloo backend' in \
        result.stdout
    assert len(json.loads((tmp_path / 'run/losses.json').read_text())) == 2


def test_test_tool_dumps_predictions(tmp_path, fashion_mnist):
    config = short_run(
        tmp_path,
        'cfg.py',
        batch_size=16,
        max_iters=4,
        extra="test_dataloader = dict(dataset=dict(indices=32))")
    result = run_tool('python', 'tools/train.py', config, '--work-dir',
                      str(tmp_path / 'run'))
    assert result.returncode == 0, result.stderr[-3000:]
    out = tmp_path / 'preds.pkl'
    result = run_tool(
        'bash',
        'tools/dist_test.sh',
        config,
        str(tmp_path / 'run/iter_4.pth'),
        '2',
        '--work-dir',
        str(tmp_path / 'test'),
        '--out',
        str(out),
        env={'PORT': '29518'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy/top1' in result.stdout + result.stderr
    import pickle
    with open(out, 'rb') as f:
        predictions = pickle.load(f)
    assert len(predictions) == 32
    assert predictions[0]['pred_score'].shape == (10, )

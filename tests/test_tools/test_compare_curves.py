"""tools/analysis_tools/compare_curves.py on real short training runs."""
import importlib.util
import json
import os.path as osp
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import REPO, run_tool
from PIL import Image

from localvit_mm.utils import UserInputError

LENET = osp.join(REPO, 'configs/quickstart/lenet5_1xb64_fashion-mnist.py')
TOOL = osp.join(REPO, 'tools/analysis_tools/compare_curves.py')
# matplotlib's first two line colours: the first and the second run.
COLOURS = [(31, 119, 180), (255, 127, 14)]


def compare_curves():
    spec = importlib.util.spec_from_file_location('compare_curves', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def lenet_run(tmp_path, name, lr):
    """4 iterations of LeNet-5 on 32 real Fashion-MNIST images, every loss
    logged, validated on 64 test images after iterations 2 and 4."""
    config = tmp_path / f'{name}.py'
    config.write_text(f'_base_ = [{LENET!r}]\n' + textwrap.dedent(f"""
        train_dataloader = dict(
            batch_size=8, num_workers=0, persistent_workers=False,
            dataset=dict(indices=32))
        val_dataloader = dict(
            batch_size=64, num_workers=0, persistent_workers=False,
            dataset=dict(indices=64))
        test_dataloader = val_dataloader
        optim_wrapper = dict(optimizer=dict(lr={lr}))
        train_cfg = dict(max_iters=4, val_interval=2)
        default_hooks = dict(
            logger=dict(interval=1, log_metric_by_epoch=False),
            checkpoint=dict(interval=4))
        """))
    work_dir = tmp_path / name
    result = run_tool('python', 'tools/train.py', str(config), '--work-dir',
                      str(work_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    return work_dir


def logged(work_dir, key):
    """[step, value] of ``key`` in the run's scalars.json, read by hand."""
    [path] = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [[r['step'], r[key]] for r in records if key in r]


def test_png_of_two_real_runs(tmp_path, fashion_mnist):
    with ThreadPoolExecutor(2) as pool:  # two processes, one per core
        runs = list(
            pool.map(lambda args: lenet_run(tmp_path, *args),
                     [('lenet-lr0.05', 0.05), ('lenet-lr0.2', 0.2)]))
    expected = {
        run.name: {
            'loss': logged(run, 'loss'),
            'accuracy/top1': logged(run, 'accuracy/top1')
        }
        for run in runs
    }
    # An older run in the same work dir is not read: only the newest one.
    older = runs[0] / '19700101_000000' / 'vis_data'
    older.mkdir(parents=True)
    (older / 'scalars.json').write_text('{"loss": 99.0, "step": 1}\n')

    out, data = tmp_path / 'curves.png', tmp_path / 'curves.json'
    result = run_tool('python', 'tools/analysis_tools/compare_curves.py',
                      *map(str, runs), '--out', str(out), '--json', str(data))
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        'lenet-lr0.05: loss: 4 points, accuracy/top1: 2 points',
        'lenet-lr0.2: loss: 4 points, accuracy/top1: 2 points',
        f'curves: {out} (1440x480)'
    ]
    curves = json.loads(data.read_text())
    assert curves == expected
    for run in expected.values():
        assert [step for step, _ in run['loss']] == [1, 2, 3, 4]
        assert [step for step, _ in run['accuracy/top1']] == [2, 4]
    # Same seed and data: the first loss is the same, then the lr tells.
    first, second = expected.values()
    assert first['loss'][0] == second['loss'][0]
    assert first['loss'][1:] != second['loss'][1:]

    with Image.open(out) as image:  # two 6 x 4 inch panels at 120 dpi
        assert (image.format, image.size) == ('PNG', (1440, 480))
        rgb = image.convert('RGB')
    for left in (0, 720):  # each panel holds a line of each run
        panel = set(rgb.crop((left, 0, left + 720, 480)).getdata())
        assert all(colour in panel for colour in COLOURS)


def test_refusals(tmp_path):
    tool = compare_curves()
    with pytest.raises(
            UserInputError,
            match="work dir '.*nowhere' not "
            'found: check the path'):
        tool.main([str(tmp_path / 'nowhere')])
    (tmp_path / 'empty').mkdir()
    with pytest.raises(
            UserInputError, match='holds no run with '
            'vis_data/scalars.json'):
        tool.main([str(tmp_path / 'empty')])
    run = tmp_path / 'run' / '20240101_000000' / 'vis_data'
    run.mkdir(parents=True)
    (run / 'scalars.json').write_text('{"loss": 1.5, "lr": 0.1, "iter": 1, '
                                      '"step": 1}\n')
    with pytest.raises(
            UserInputError,
            match=r"no run logged 'accuracy/top1': choose --keys among "
            r"\['loss', 'lr'\]"):
        tool.main([str(tmp_path / 'run')])
    with pytest.raises(UserInputError, match='2 --names for 1 work dirs'):
        tool.main([str(tmp_path / 'run'), '--names', 'a', 'b'])
    shutil.copytree(tmp_path / 'run', tmp_path / 'again' / 'run')
    with pytest.raises(
            UserInputError, match=r"run names \['run', 'run'\] "
            'repeat'):
        tool.main([str(tmp_path / 'run'), str(tmp_path / 'again' / 'run')])
    # An epoch-based run logs its validation metrics by epoch.
    epochs = tmp_path / 'epochs' / '20240101_000000' / 'vis_data'
    epochs.mkdir(parents=True)
    (epochs / 'scalars.json').write_text(
        '{"lr": 0.1, "loss": 2.0, "epoch": 1, "iter": 5, "step": 5}\n'
        '{"accuracy/top1": 40.0, "step": 1}\n')
    curves, xlabels = tool.read_curves([str(tmp_path / 'epochs')], ['e'],
                                       ['loss', 'accuracy/top1'])
    assert curves == {'e': {'loss': [(5, 2.0)], 'accuracy/top1': [(1, 40.0)]}}
    assert xlabels == {'loss': 'iteration', 'accuracy/top1': 'epoch'}
    iters = tmp_path / 'iters' / '20240101_000000' / 'vis_data'
    iters.mkdir(parents=True)
    (iters / 'scalars.json').write_text(
        '{"lr": 0.1, "loss": 2.0, "iter": 5, "step": 5}\n'
        '{"accuracy/top1": 40.0, "step": 5}\n')
    _, xlabels = tool.read_curves(
        [str(tmp_path / 'epochs'),
         str(tmp_path / 'iters')], ['e', 'i'], ['loss', 'accuracy/top1'])
    assert xlabels == {'loss': 'iteration', 'accuracy/top1': 'step'}
    out = tmp_path / 'loss.png'
    tool.main([str(tmp_path / 'run'), '--keys', 'loss', '--out', str(out)])
    with Image.open(out) as image:
        assert image.size == (720, 480)

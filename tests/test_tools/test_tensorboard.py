"""TensorBoard event files from tools/train.py where tensorboard is
installed: the same scalars as mmengine's scalars.json."""
import glob
import json

import pytest
from conftest import run_tool
from mmengine.config import Config
from short_runs import short_run

from localvit_mm.engine import (tensorboard_installed,
                                use_tensorboard_if_installed)

pytestmark = pytest.mark.skipif(
    not tensorboard_installed(),
    reason='tensorboard (requirements/optional.txt) is not installed')


def backends(cfg):
    return [b['type'] for b in cfg.visualizer.vis_backends]


def test_backend_added_once_and_opt_out():
    cfg = Config(
        dict(
            visualizer=dict(
                type='Visualizer', vis_backends=[dict(
                    type='LocalVisBackend')])))
    use_tensorboard_if_installed(cfg)
    use_tensorboard_if_installed(cfg)
    assert backends(cfg) == ['LocalVisBackend', 'TensorboardVisBackend']

    off = Config(
        dict(
            log_to_tensorboard=False,
            visualizer=dict(type='Visualizer', vis_backends=[])))
    assert backends(use_tensorboard_if_installed(off)) == []
    assert 'visualizer' not in use_tensorboard_if_installed(Config({}))


def test_train_writes_the_logged_scalars(tmp_path, fashion_mnist):
    from tensorboard.backend.event_processing.event_accumulator import \
        EventAccumulator
    config = short_run(tmp_path, 'cfg.py', batch_size=8, max_iters=5)
    result = run_tool('python', 'tools/train.py', config, '--work-dir',
                      str(tmp_path / 'work'))
    assert result.returncode == 0, result.stderr[-3000:]
    [events
     ] = glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' / 'events.out.*'))
    [scalars
     ] = glob.glob(str(tmp_path / 'work' / '*' / 'vis_data' / 'scalars.json'))
    with open(scalars) as f:
        logged = [json.loads(line) for line in f]
    board = EventAccumulator(events)
    board.Reload()
    loss = [(e.step, e.value) for e in board.Scalars('loss')]
    assert [step for step, _ in loss] == [r['step'] for r in logged]
    expected = [r['loss'] for r in logged]
    assert [value for _, value in loss] == pytest.approx(expected, rel=1e-6)
    assert {'lr', 'loss'} <= set(board.Tags()['scalars'])

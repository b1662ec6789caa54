"""The small-data study: its table and PNG from run records, and the tool
on real Fashion-MNIST runs (a few iterations), resumed run by run."""
import glob
import json
import os.path as osp

import pytest
import torch
from conftest import REPO, run_tool
from PIL import Image

from localvit_mm.analysis.study import group_results, markdown_table, plot_grid
from localvit_mm.utils import load_config

TOOL = 'tools/experiments/small_data.py'


def record(model, size, seed, top1):
    return dict(model=model, size=size, seed=seed, top1=top1)


def test_table_mean_and_spread(tmp_path):
    grid = group_results([
        record('DeiT-T', 1000, 1, 82.0),
        record('DeiT-T', 1000, 0, 80.0),
        record('LocalViT-T', 1000, 0, 90.0),
    ])
    assert grid == {
        ('DeiT-T', 1000): [80.0, 82.0],
        ('LocalViT-T', 1000): [90.0]
    }
    # sample standard deviation of (80, 82): sqrt(2) = 1.41
    assert markdown_table(
        grid, ['DeiT-T', 'LocalViT-T'],
        [1000, 5000]) == ('| model | 1,000 images | 5,000 images |\n'
                          '|---|---|---|\n'
                          '| DeiT-T | 81.00 ± 1.41 | - |\n'
                          '| LocalViT-T | 90.00 ± 0.00 | - |')
    out = str(tmp_path / 'grid.png')
    plot_grid(grid, ['DeiT-T', 'LocalViT-T'], [1000, 5000], out, dpi=50)
    assert Image.open(out).size == (325, 225)  # 6.5 x 4.5 inches at 50 dpi


def test_study_runs_and_resumes(tmp_path, fashion_mnist):
    """Two seeds of DeiT-T on 64 images: the second call trains only the
    seed the first did not, and the table holds both."""
    work_dir = tmp_path / 'study'
    common = ('--sizes', '64', '--models', 'DeiT-T', '--iters', '2',
              '--test-images', '256', '--work-dir', str(work_dir))
    first = run_tool('python', TOOL, '--seeds', '0', *common)
    assert first.returncode == 0, first.stderr[-3000:]
    assert '1 runs (0 already finished)' in first.stdout
    log = work_dir / 'deit-tiny' / 'n64' / 'seed0' / 'train.log'
    written = osp.getmtime(log)

    second = run_tool('python', TOOL, '--seeds', '0', '1', *common)
    assert second.returncode == 0, second.stderr[-3000:]
    assert '2 runs (1 already finished)' in second.stdout
    assert '[1/1] DeiT-T, 64 images, seed 1: top-1' in second.stdout
    assert osp.getmtime(log) == written  # seed 0 was not trained again

    with open(work_dir / 'results.json') as f:
        results = json.load(f)
    assert sorted(r['seed'] for r in results) == [0, 1]
    assert all(r['iters'] == 2 and r['test_images'] == 256 for r in results)
    # top-1 on 256 images: a multiple of 100/256
    assert all(
        (r['top1'] * 2.56) == pytest.approx(round(r['top1'] * 2.56), abs=1e-3)
        for r in results)
    table = (work_dir / 'results.md').read_text()
    top1 = [r['top1'] for r in sorted(results, key=lambda r: r['seed'])]
    mean = sum(top1) / 2
    assert f'| DeiT-T | {mean:.2f} ± ' in table
    assert 'first 256 Fashion-MNIST test images' in table
    assert Image.open(work_dir / 'results.png').format == 'PNG'


def test_bad_sizes_one_line(tmp_path):
    result = run_tool('python', TOOL, '--sizes', '70000', '--work-dir',
                      str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (
        'error: --sizes [70000]: Fashion-MNIST has 60,000 training images, '
        'pick sizes from 1 to 60000')


CONFIGS = sorted(glob.glob(osp.join(REPO, 'configs', 'small_data', '*.py')))


@pytest.mark.usefixtures('restore_default_scope')
@pytest.mark.parametrize(
    'config', CONFIGS, ids=[osp.basename(c) for c in CONFIGS])
def test_each_model_takes_a_real_training_step(config, fashion_mnist):
    """Each study config's model and optimizer take one step on a batch of
    its own training loader (real Fashion-MNIST); every block moves."""
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS
    from mmengine.runner import Runner
    cfg = load_config(config)
    loader_cfg = cfg.train_dataloader
    loader_cfg.update(batch_size=8, num_workers=0, persistent_workers=False)
    loader_cfg.dataset.data_root = fashion_mnist
    batch = next(iter(Runner.build_dataloader(loader_cfg, seed=0)))
    assert batch['inputs'][0].shape == (1, 28, 28)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    before = [b.attn.proj.weight.clone() for b in model.backbone.blocks]
    losses = model.train_step(batch, optim_wrapper)
    assert torch.isfinite(losses['loss'])
    assert all(not torch.equal(b.attn.proj.weight, w)
               for b, w in zip(model.backbone.blocks, before))


def test_the_tool_trains_every_study_config():
    import importlib.util
    spec = importlib.util.spec_from_file_location('small_data',
                                                  osp.join(REPO, TOOL))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert sorted(map(tool.config_of, tool.MODELS)) == CONFIGS

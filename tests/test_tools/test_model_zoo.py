"""OpenMMLab entry points know the zoo by name: mmpretrain's list_models /
get_model, and mim (search, train) on the installed package."""
import os
import os.path as osp
import sys

import pytest
import torch
from conftest import REPO, run_tool

import localvit_mm  # noqa: F401 (registers the zoo)
from localvit_mm.analysis.model_table import load_zoo

ZOO = load_zoo(REPO)
CLASSIFIERS = sorted(e.name for e in ZOO if e.task == 'Image Classification')
QUICKSTART = 'localvit-tiny_2xb32_fashion-mnist'


def test_list_models_knows_the_classifiers_only():
    from mmpretrain import list_models
    assert list_models('*localvit*') == sorted(name for name in CLASSIFIERS
                                               if 'localvit' in name)
    everything = set(list_models())  # mmpretrain's own zoo registers too
    assert set(CLASSIFIERS) <= everything
    assert not {e.name for e in ZOO} - set(CLASSIFIERS) & everything
    assert list_models(
        'localvit-tiny_', task='Image Classification') == [
            'localvit-tiny_2xb32_fashion-mnist', 'localvit-tiny_8xb128_in1k'
        ]


def test_get_model_by_name_with_a_checkpoint(tmp_path):
    """A checkpoint saved from the built model loads by name: same
    outputs."""
    from mmpretrain import get_model
    torch.manual_seed(0)
    model = get_model(QUICKSTART)
    assert model._metainfo.config.filename == osp.join(REPO, 'configs',
                                                       'quickstart',
                                                       f'{QUICKSTART}.py')
    model.init_weights()
    path = str(tmp_path / 'ckpt.pth')
    torch.save(dict(state_dict=model.state_dict(), meta={}), path)
    loaded = get_model(QUICKSTART, pretrained=path)
    images = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        expected = model.eval()(images)
        assert torch.equal(loaded(images), expected)
    fresh = get_model(QUICKSTART)
    with torch.no_grad():
        assert not torch.equal(fresh(images), expected)


@pytest.fixture(scope='module')
def installed(tmp_path_factory):
    """The package as ``pip install .`` installs it (without building the
    CPU kernels), in a folder put first on the path."""
    target = str(tmp_path_factory.mktemp('site'))
    result = run_tool(
        sys.executable,
        '-m',
        'pip',
        'install',
        '-q',
        '--no-deps',
        '--no-build-isolation',
        '--no-index',
        '--target',
        target,
        '.',
        env=dict(LOCALVIT_BUILD_EXT='0'))
    assert result.returncode == 0, result.stderr[-3000:]
    return target


def mim(*args, target):
    return run_tool(
        osp.join(osp.dirname(sys.executable), 'mim'),
        *args,
        env=dict(PYTHONPATH=target))


def test_installed_package_ships_the_mim_files(installed):
    mim_dir = osp.join(installed, 'localvit_mm', '.mim')
    assert sorted(
        os.listdir(mim_dir)) == ['configs', 'model-index.yml', 'tools']
    for entry in ZOO:
        assert osp.isfile(osp.join(mim_dir, entry.config))
    assert osp.isfile(osp.join(mim_dir, 'tools', 'train.py'))


def test_mim_search_lists_the_zoo(installed):
    result = mim('search', 'localvit_mm', '--valid-config', target=installed)
    assert result.returncode == 0, result.stderr[-3000:]
    listed = result.stdout.split('valid config ids:')[1].strip()
    assert listed == repr([e.name for e in ZOO])


def test_mim_train_runs_a_packaged_config(installed, fashion_mnist, tmp_path):
    """``mim train localvit_mm NAME.py`` finds the config and the train
    script in the installed package and trains (one iteration)."""
    config = 'lenet5_1xb64_fashion-mnist.py'
    result = mim(
        'train',
        'localvit_mm',
        config,
        '--work-dir',
        str(tmp_path),
        '--no-validate',
        '--cfg-options',
        'train_cfg.max_iters=1',
        target=installed)
    assert result.returncode == 0, result.stderr[-3000:]
    mim_dir = osp.join(installed, 'localvit_mm', '.mim')
    packaged = osp.join(mim_dir, 'configs', 'quickstart', config)
    assert f'will use {packaged} instead' in result.stdout
    assert osp.join(mim_dir, 'tools', 'train.py') in result.stdout
    assert 'Training finished successfully' in result.stdout
    assert osp.isfile(tmp_path / 'iter_1.pth')

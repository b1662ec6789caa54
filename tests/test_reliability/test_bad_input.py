"""Bad input stops every tool with one line that names the problem and the
fix, before the work dir is made or a checkpoint is written.

Most cases run a tool's ``__main__`` in this process (the same code as the
command line, without the interpreter start); real processes check the
launchers' arguments and a 2-process launch, whose error must appear once
and alone (tests/test_tools/test_train_tools.py checks single processes).
"""
import os.path as osp
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest
import torch
from conftest import REPO, run_cli, run_tool
from mmengine.dataset import pseudo_collate
from short_runs import LENET
from torch.utils.data import DataLoader

from localvit_mm.utils import (CorruptImageError, UserInputError, build_model,
                               check_checkpoint_fits, load_config, one_line)

QUICK = osp.join(REPO, 'configs/quickstart/localvit-tiny_2xb32_'
                 'fashion-mnist.py')
ARCHS = ("['base', 'deit-small', 'deit-tiny', 'small', 'tiny', "
         "'tiny-relu6-mlp6', 'tiny-se4']")


@pytest.fixture
def in_repo(monkeypatch, fashion_mnist):
    """The configs' relative data roots resolve from the repository."""
    monkeypatch.chdir(REPO)


# --cfg-options of the quickstart LocalViT config -> the error line.
MODEL_CASES = {
    'unknown arch': ('model.backbone.arch=tinny',
                     f"model.backbone (LocalViT, {QUICK}): arch 'tinny' is "
                     f"not one of {ARCHS}: did you mean 'tiny'?"),
    'arch far from any': ('model.backbone.arch=huge',
                          f"model.backbone (LocalViT, {QUICK}): arch 'huge' "
                          f'is not one of {ARCHS}: use one of them or a dict '
                          "with ['embed_dims', 'num_heads', 'num_layers']"),
    'misspelt type': ('model.backbone.type=LocalVit',
                      "model.backbone: unknown model type 'LocalVit' in "
                      f"{QUICK}: did you mean 'LocalViT'?"),
    'misspelt head type': ('model.head.type=LinearClsHeed',
                           "model.head: unknown model type 'LinearClsHeed' "
                           f"in {QUICK}: did you mean 'LinearClsHead'?"),
    'misspelt norm type': ("model.backbone.ffn_cfg.norm_cfg.type=BNN",
                           'model.backbone.ffn_cfg.norm_cfg: unknown model '
                           f"type 'BNN' in {QUICK}: did you mean 'BN'?"),
    'misspelt ffn_cfg key': ('model.backbone.ffn_cfg.kernal_size=3',
                             f'model.backbone (LocalViT, {QUICK}): unknown '
                             "ffn_cfg keys ['kernal_size']; allowed: "
                             "['act_cfg', 'channel_attention', 'deploy', "
                             "'fused', 'kernel_size', 'mlp_ratio', "
                             "'norm_cfg', 'with_dw_conv']: did you mean "
                             "'kernel_size'?"),
    'misspelt argument': ('model.backbone.locality_layer=[0]',
                          "model.backbone: LocalViT has no argument "
                          f"'locality_layer' ({QUICK}): did you mean "
                          "'locality_layers'?"),
    'locality_layers out of range': ('model.backbone.locality_layers=[0,12]',
                                     f'model.backbone (LocalViT, {QUICK}): '
                                     'locality_layers [12] are not block '
                                     'indices 0..11'),
    'out_indices out of range':
    ('model.backbone.out_indices=[12]', f'model.backbone (LocalViT, {QUICK}): '
     'out_indices [12] out of range for 12 '
     'blocks: use indices in -12..11'),
    'wrong in_channels': ('model.backbone.in_channels=3',
                          'train_dataloader: its images have 1 channel(s) '
                          'after the data preprocessor but model.backbone '
                          '(LocalViT) takes 3: set '
                          'model.backbone.in_channels=1'),
    'image smaller than the patch':
    ('model.backbone.patch_size=32', 'train_dataloader: its images are 28x28 '
     'after the pipeline, too small for the '
     '32x32 patch of model.backbone '
     '(LocalViT): resize them to at least '
     '32x32 in the pipeline or use a smaller '
     'patch_size'),
    'missing data folder': ('train_dataloader.dataset.data_root=data/missing',
                            "data folder 'data/missing' of train_dataloader "
                            'not found: prepare it with the matching script '
                            'in tools/data/ (e.g. tools/data/prepare_fashion_'
                            'mnist.sh) or point to it with --cfg-options '
                            'train_dataloader.dataset.data_root=PATH'),
}


@pytest.mark.parametrize(
    'options, message', MODEL_CASES.values(), ids=list(MODEL_CASES))
def test_train_refuses_bad_config_in_one_line(options, message, tmp_path,
                                              in_repo):
    status, stderr = run_cli('tools/train.py', QUICK,
                             '--work-dir', tmp_path / 'run', '--cfg-options',
                             *options.split())
    assert (status, stderr) == (2, f'error: {message}\n')
    assert not (tmp_path / 'run').exists()


def write(path, text):
    path.write_text(text)
    return str(path)


def test_syntax_errors_name_file_and_line(tmp_path, in_repo):
    base = write(
        tmp_path / 'base.py', "model = dict(\n    type='ImageClassifier',\n"
        "    backbone=dict(type='LeNet5' num_classes=10))\n")
    child = write(tmp_path / 'child.py', "_base_ = ['./base.py']\n")
    undefined = write(tmp_path / 'undefined.py',
                      f'_base_ = [{LENET!r}]\nbatch = size * 2\n')
    for config, message in (
        (child, f"config {base!r} line 3: invalid syntax. Perhaps you forgot "
         'a comma?: fix the syntax there'),
        (undefined, f"config {undefined!r} line 2 cannot be read: NameError: "
         "name 'size' is not defined: fix it (and its _base_ files and "
         'custom_imports)'),
    ):
        status, stderr = run_cli('tools/train.py', config, '--work-dir',
                                 tmp_path / 'run')
        assert (status, stderr) == (2, f'error: {message}\n')
    assert not (tmp_path / 'run').exists()


def random_weights(config):
    """Random weights in the shapes of ``config``'s model."""
    torch.manual_seed(0)
    model = build_model(load_config(config), config)
    return {k: torch.randn(v.shape) for k, v in model.state_dict().items()}


def test_checkpoint_that_does_not_fit(tmp_path, in_repo, capsys):
    lenet = tmp_path / 'lenet.pth'
    torch.save(dict(state_dict=random_weights(LENET)), lenet)
    refused = (
        f'error: checkpoint {str(lenet)!r} does not fit the model of {QUICK}: '
        "344 of the model's 344 keys missing (backbone.cls_token, "
        'backbone.pos_embed, backbone.patch_embed.proj.weight, ...); 10 '
        'unexpected keys (backbone.features.0.weight, '
        'backbone.features.0.bias, backbone.features.3.weight, ...): pass a '
        'checkpoint of this config (a run of tools/train.py), or convert an '
        'official release with tools/model_converters/localvit_to_'
        'mmpretrain.py\n')
    status, stderr = run_cli('tools/train.py', QUICK, '--work-dir',
                             tmp_path / 'run', '--cfg-options',
                             f'load_from={lenet}')
    assert (status, stderr) == (2, refused)
    status, stderr = run_cli('tools/test.py', QUICK, lenet, '--work-dir',
                             tmp_path / 'run')
    assert (status, stderr) == (2, refused)
    assert not (tmp_path / 'run').exists()

    # A few keys off: one line of warning, the rest loads.
    weights = random_weights(QUICK)
    weights['head.fc.weight'] = torch.zeros(1000, 192)
    del weights['head.fc.bias']
    weights['head.extra'] = torch.zeros(1)
    partial = tmp_path / 'partial.pth'
    torch.save(dict(state_dict=weights), partial)
    model = build_model(load_config(QUICK), QUICK)
    state = check_checkpoint_fits(model, str(partial), QUICK)
    assert torch.equal(state['backbone.cls_token'],
                       weights['backbone.cls_token'])
    assert capsys.readouterr().out == (
        f'warning: checkpoint {str(partial)!r} fits the model of {QUICK} '
        "only in part: 1 of the model's 344 keys missing (head.fc.bias); 1 "
        'unexpected keys (head.extra); 1 keys of another shape (checkpoint '
        'vs model: head.fc.weight (1000, 192) vs (10, 192)); those weights '
        'keep their initial values\n')
    # The deploy tool needs every key.
    with pytest.raises(UserInputError, match='does not fit the model'):
        check_checkpoint_fits(model, str(partial), QUICK, exact=True)


@pytest.fixture
def image_folder(tmp_path):
    """A class folder of 8x8 grey PNGs whose first file is corrupt and
    whose second is empty."""
    folder = tmp_path / 'images' / 'a'
    folder.mkdir(parents=True)
    for i in range(2, 6):
        cv2.imwrite(str(folder / f'{i}.png'), np.full((8, 8), 40 * i, 'uint8'))
    (folder / '0_corrupt.png').write_bytes(b'\x89PNG\r\n\x1a\n not an image')
    (folder / '1_empty.png').write_bytes(b'')
    return tmp_path / 'images'


def folder_config(tmp_path, root, skip_bad=False):
    """LeNet-5 trained and tested on the images of ``root``."""
    return write(
        tmp_path / 'folder.py', f"""_base_ = [{LENET!r}]
pipeline = [
    dict(type='LoadImageFromFile', color_type='grayscale',
         skip_bad={skip_bad}),
    dict(type='Resize', scale=(32, 32)),
    dict(type='PackInputs')]
train_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root={str(root)!r},
                 pipeline=pipeline))
test_dataloader = dict(
    num_workers=0, persistent_workers=False,
    dataset=dict(_delete_=True, type='CustomDataset', data_root={str(root)!r},
                 test_mode=True, pipeline=pipeline))
val_cfg = val_dataloader = val_evaluator = None
""")


def test_corrupt_image_is_named_or_skipped(tmp_path, image_folder, in_repo):
    from mmpretrain.registry import DATASETS
    config = folder_config(tmp_path, image_folder)
    status, stderr = run_cli('tools/train.py', config, '--work-dir',
                             tmp_path / 'run')
    corrupt = osp.join(str(image_folder), 'a/0_corrupt.png')
    assert (status, stderr) == (
        2, f'error: image {corrupt!r} cannot be read (not a readable '
        "image): replace or delete it, or skip such images in training with "
        "dict(type='LoadImageFromFile', skip_bad=True) in the train "
        'pipeline\n')
    assert not (tmp_path / 'run').exists()
    # Met in a DataLoader worker in the middle of a run, the error comes
    # back wrapped in the worker's traceback; the line is recovered.
    dataset = DATASETS.build(load_config(config).train_dataloader.dataset)
    loader = DataLoader(
        dataset, batch_size=6, num_workers=1, collate_fn=pseudo_collate)
    with pytest.raises(CorruptImageError) as error:
        next(iter(loader))
    assert 'Original Traceback' in str(error.value)
    assert 'error: ' + one_line(error.value) + '\n' == stderr

    # The switch: both bad files are skipped and counted; the dataset serves
    # a real image in their place.
    config = folder_config(tmp_path, image_folder, skip_bad=True)
    dataset = DATASETS.build(load_config(config).train_dataloader.dataset)
    load = dataset.pipeline.transforms[0]
    assert [dataset.prepare_data(i) is None for i in range(6)] == \
        [True, True, False, False, False, False]
    assert load.skipped == 2
    np.random.seed(0)  # mmengine draws the replacement at random: image 4
    assert torch.equal(dataset[0]['inputs'], dataset.prepare_data(4)['inputs'])
    assert load.skipped == 3
    # A test-mode dataset cannot skip, and skipping would change metrics.
    status, stderr = run_cli('tools/test.py', config, tmp_path / 'x.pth',
                             '--work-dir', tmp_path / 'run')
    assert (status, stderr) == (
        2, 'error: test_dataloader skips bad images (LoadImageFromFile with '
        'skip_bad=True), which only training can: remove skip_bad from its '
        'pipeline\n')
    assert not (tmp_path / 'run').exists()


def test_converter_and_deploy_tool_report_the_same_way(tmp_path, in_repo):
    typo = write(
        tmp_path / 'typo.py',
        f"_base_ = [{QUICK!r}]\nmodel = dict(backbone=dict("
        "arch='tinny'))\n")
    status, stderr = run_cli('tools/model_converters/localvit_deploy.py', typo,
                             tmp_path / 'in.pth', tmp_path / 'out.pth')
    assert (status, stderr) == (
        2, f"error: model.backbone (LocalViT, {typo}): arch 'tinny' is not "
        f"one of {ARCHS}: did you mean 'tiny'?\n")
    trained = tmp_path / 'trained.pth'
    torch.save(dict(state_dict=random_weights(QUICK)), trained)
    status, stderr = run_cli(
        'tools/model_converters/localvit_to_mmpretrain.py', trained,
        tmp_path / 'out.pth')
    assert (status, stderr) == (
        2, f'error: {trained} is not a LocalViT release file: no "model" '
        'entry (a checkpoint of tools/train.py needs no conversion)\n')
    assert not (tmp_path / 'out.pth').exists()


@pytest.fixture(scope='module', autouse=True)
def launch(tmp_path_factory, fashion_mnist):
    """A 2-process launch of tools/dist_train.sh on a missing data folder,
    started in the background when the module starts (the in-process cases
    run meanwhile)."""
    root = tmp_path_factory.mktemp('launch')
    with ThreadPoolExecutor(1) as background:
        yield root, background.submit(
            run_tool,
            'bash',
            'tools/dist_train.sh',
            LENET,
            '2',
            '--work-dir',
            str(root / 'run'),
            '--cfg-options',
            'train_dataloader.dataset.data_root=data/missing',
            env={'PORT': '29541'})


NOT_A_COUNT = ('NUM_PROCESSES must be a number of processes per node '
               '(1 or more)')


@pytest.mark.parametrize(
    'launcher, args, message', [
        ('tools/dist_train.sh', [QUICK, 'eight'], f"{NOT_A_COUNT}, got "
         f"'eight': e.g. tools/dist_train.sh {QUICK} 8"),
        ('tools/dist_test.sh', [QUICK, 'x.pth', '2.5'], f"{NOT_A_COUNT}, got "
         f"'2.5': e.g. tools/dist_test.sh {QUICK} x.pth 8"),
        ('tools/dist_train.sh', [QUICK, '0'], f"{NOT_A_COUNT}, got '0': "
         f'e.g. tools/dist_train.sh {QUICK} 8'),
    ],
    ids=['train-eight', 'test-2.5', 'train-zero'])
def test_launcher_arguments_must_be_numbers(launcher, args, message):
    result = run_tool('bash', launcher, *args)
    assert (result.returncode, result.stdout,
            result.stderr) == (2, '', f'error: {message}\n')
    result = run_tool('bash', launcher, *args[:-1], '2', env={'PORT': 'p'})
    assert (result.returncode, result.stderr) == (
        2, "error: PORT must be a port number, got 'p': e.g. PORT=29500\n")


def test_two_process_launch_prints_the_error_once(launch):
    """Real processes (torchrun and two ranks of tools/train.py): the line
    once and nothing else on stdout and stderr (no warning, no traceback),
    status 2, no work dir. Before: the message twice among 47 lines
    (torchrun's banner, its agent's log lines, the ChildFailedError
    traceback and report), status 1."""
    root, result = launch[0], launch[1].result()
    assert result.returncode == 2
    assert result.stdout + result.stderr == (
        "error: data folder 'data/missing' of train_dataloader not found: "
        'prepare it with the matching script in tools/data/ (e.g. '
        'tools/data/prepare_fashion_mnist.sh) or point to it with '
        '--cfg-options train_dataloader.dataset.data_root=PATH\n')
    assert not (root / 'run').exists()

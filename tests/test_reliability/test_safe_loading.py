"""Every path that reads a checkpoint refuses a malicious pickle in one line
and loads the checkpoints tools/train.py writes.

The planted checkpoint is a real attack: real weights plus an object whose
unpickling runs ``touch MARKER`` through ``os.system`` (a control test shows
that plain ``torch.load(weights_only=False)`` does create the marker).
"""
import functools
import http.server
import os
import os.path as osp
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch
from conftest import REPO, run_cli, run_tool
from short_runs import LENET, short_run

import localvit_mm  # noqa: F401 (what registers the safe loaders)
from localvit_mm.utils import (UserInputError, build_model, load_config,
                               safe_load)

LOCALVIT = osp.join(REPO, 'configs/localvit/localvit-tiny_8xb128_in1k.py')
DET = osp.join(
    REPO, 'configs/detection/retinanet_localvit-pvt-t_fpn_'
    'deepforest.py')
SEG = osp.join(REPO, 'configs/segmentation/fpn_localvit-pvt-t_labelme.py')


class Plant:
    """Unpickling it runs a shell command that creates ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}', )


def refusal(path):
    return (f'checkpoint {str(path)!r} holds an object that is not known to '
            'be safe (GLOBAL posix.system): only load checkpoints saved by '
            'mmengine or converted with tools/model_converters/; if you '
            'trust the file, convert it to a plain state dict')


FRESH_INTERPRETER = """
import pickle
from mmpretrain.apis import init_model
try:
    init_model({config!r}, {checkpoint!r}, device='cpu')
except pickle.UnpicklingError as error:
    print('before:', str(error).split('GLOBAL ')[1].split()[0])
import localvit_mm
model = init_model({config!r}, {checkpoint!r}, device='cpu')
print('after:', type(model).__name__)
"""


def train_then_load(root):
    """A 2-iteration run of tools/train.py, then mmpretrain's init_model on
    its checkpoint in a fresh interpreter, before and after
    ``import localvit_mm``."""
    config = short_run(
        root, 'lenet.py', batch_size=8, max_iters=2, images=16, interval=2)
    trained = run_tool('python', 'tools/train.py', config, '--work-dir',
                       str(root / 'run'))
    if trained.returncode != 0:
        return trained, None
    return trained, run_tool(
        'python', '-c',
        FRESH_INTERPRETER.format(
            config=LENET, checkpoint=str(root / 'run' / 'iter_2.pth')))


@pytest.fixture(scope='module', autouse=True)
def background(tmp_path_factory, fashion_mnist):
    """:func:`train_then_load`, started when the module starts: the tests
    that do not need its results run meanwhile."""
    root = tmp_path_factory.mktemp('trained')
    with ThreadPoolExecutor(1) as pool:
        yield pool.submit(train_then_load, root), root


@pytest.fixture(scope='module')
def trained(background):
    """The checkpoint of that run (its message hub holds mmengine
    HistoryBuffers and numpy values)."""
    result = background[0].result()[0]
    assert result.returncode == 0, result.stderr[-3000:]
    return background[1] / 'run' / 'iter_2.pth'


@pytest.fixture(scope='module')
def planted(tmp_path_factory):
    """A LeNet-5 checkpoint with a Plant in its meta, and the marker its
    unpickling would create."""
    from mmpretrain.apis import get_model
    root = tmp_path_factory.mktemp('planted')
    torch.save(
        dict(
            state_dict=get_model(LENET).state_dict(),
            meta=dict(note=Plant(root / 'MARKER'))), root / 'planted.pth')
    return root / 'planted.pth', root / 'MARKER'


def test_the_plant_runs_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / 'MARKER'
    torch.save({'meta': Plant(marker)}, tmp_path / 'control.pth')
    torch.load(tmp_path / 'control.pth', weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize(
    'tool', [
        ['tools/train.py', LENET, '--resume', '{ckpt}'],
        ['tools/train.py', LENET, '--cfg-options', 'load_from={ckpt}'],
        [
            'tools/train.py', LENET, '--cfg-options',
            'model.init_cfg.type=Pretrained',
            'model.init_cfg.checkpoint={ckpt}'
        ],
        ['tools/test.py', LENET, '{ckpt}'],
        [
            'tools/model_converters/localvit_to_mmpretrain.py', '{ckpt}',
            '{tmp}/converted.pth'
        ],
        [
            'tools/model_converters/localvit_deploy.py', LOCALVIT, '{ckpt}',
            '{tmp}/deploy.pth'
        ],
    ],
    ids=[
        'train-resume', 'train-load_from', 'train-init_cfg', 'test',
        'converter', 'deploy'
    ])
def test_tools_refuse_in_one_line(tool, tmp_path, planted):
    """Each tool's ``__main__``: exactly the one line on stderr, status 2,
    nothing written (no work dir, no output file)."""
    checkpoint, marker = planted
    args = [a.format(ckpt=checkpoint, tmp=tmp_path) for a in tool]
    if args[0].startswith('tools/t'):
        args += ['--work-dir', str(tmp_path / 'run')]
    status, stderr = run_cli(*args)
    assert status == 2
    assert stderr.splitlines() == ['error: ' + refusal(checkpoint)]
    assert not marker.exists()
    assert os.listdir(tmp_path) == []


def test_mmengine_loaders_refuse(tmp_path, planted):
    from mmengine.runner import load_checkpoint
    from mmpretrain.apis import get_model
    checkpoint, marker = planted
    model = get_model(LENET)
    with pytest.raises(UserInputError) as error:
        load_checkpoint(model, str(checkpoint))
    assert str(error.value) == refusal(checkpoint)
    # init_cfg Pretrained, as a runner initializes the model.
    model = get_model(
        LENET, init_cfg=dict(type='Pretrained', checkpoint=str(checkpoint)))
    with pytest.raises(UserInputError) as error:
        model.init_weights()
    assert str(error.value) == refusal(checkpoint)
    assert not marker.exists()


@pytest.fixture
def http_server(tmp_path, monkeypatch):
    """Serves ``tmp_path/served`` on a local port; torch.hub's download
    cache goes to ``tmp_path/torch_home``."""
    monkeypatch.setenv('TORCH_HOME', str(tmp_path / 'torch_home'))
    (tmp_path / 'served').mkdir()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler,
        directory=str(tmp_path / 'served'))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield tmp_path / 'served', f'http://127.0.0.1:{server.server_port}'
    server.shutdown()


def test_url_scheme_refuses_and_loads(http_server, planted, trained):
    """mmengine downloads through torch.hub with weights_only=False; the
    registered scheme unpickles weights only."""
    from mmengine.runner.checkpoint import _load_checkpoint
    served, url = http_server
    checkpoint, marker = planted
    (served / 'planted.pth').write_bytes(checkpoint.read_bytes())
    (served / 'trained.pth').write_bytes(trained.read_bytes())
    with pytest.raises(UserInputError) as error:
        _load_checkpoint(f'{url}/planted.pth')
    assert str(error.value) == refusal(f'{url}/planted.pth')
    assert not marker.exists()
    loaded = _load_checkpoint(f'{url}/trained.pth')
    assert loaded['meta']['iter'] == 2
    assert_same_weights(loaded['state_dict'], safe_load(str(trained)))


def assert_same_weights(model_or_state, checkpoint):
    """Every tensor of the checkpoint's state dict equals the model's."""
    state = model_or_state if isinstance(model_or_state, dict) else \
        model_or_state.state_dict()
    expected = checkpoint.get('state_dict', checkpoint)
    assert sorted(state) == sorted(expected)
    for key, value in expected.items():
        assert torch.equal(state[key].cpu(), value), key


def test_mmpretrain_apis_refuse_and_load(planted, trained):
    from mmpretrain.apis import (ImageClassificationInferencer, get_model,
                                 init_model)
    checkpoint, marker = planted
    for load in (functools.partial(init_model, LENET),
                 functools.partial(get_model, LENET), lambda ckpt:
                 ImageClassificationInferencer(LENET, pretrained=ckpt).model):
        with pytest.raises(UserInputError) as error:
            load(str(checkpoint))
        assert str(error.value) == refusal(checkpoint)
        assert_same_weights(load(str(trained)), safe_load(str(trained)))
    assert not marker.exists()


def runner_checkpoint_of(config, trained, path):
    """A checkpoint as tools/train.py writes it (message hub, meta) holding
    random weights of the model of ``config`` (shapes from a build on the
    meta device)."""
    torch.manual_seed(0)
    checkpoint = safe_load(str(trained))
    checkpoint['state_dict'] = {
        key: torch.randn(value.shape).to(value.dtype)
        for key, value in build_model(load_config(config),
                                      config).state_dict().items()
    }
    torch.save(checkpoint, path)
    return checkpoint


@pytest.mark.parametrize('codebase', ['mmdet', 'mmseg'])
def test_dense_apis_refuse_and_load(codebase, planted, trained, tmp_path):
    if codebase == 'mmdet':
        from mmdet.apis import init_detector as init
        config = DET
    else:
        from mmseg.apis import init_model as init
        config = SEG
    checkpoint, marker = planted
    with pytest.raises(UserInputError) as error:
        init(config, str(checkpoint), device='cpu')
    assert str(error.value) == refusal(checkpoint)
    assert not marker.exists()
    saved = runner_checkpoint_of(config, trained, tmp_path / 'dense.pth')
    assert_same_weights(
        init(config, str(tmp_path / 'dense.pth'), device='cpu'), saved)


def test_importing_localvit_mm_is_enough(background, trained):
    """In a fresh interpreter mmpretrain's init_model fails on a checkpoint
    of tools/train.py until ``import localvit_mm`` (what every config's
    custom_imports does)."""
    result = background[0].result()[1]
    assert result.returncode == 0, result.stderr[-3000:]
    assert [
        line for line in result.stdout.splitlines()
        if line.startswith(('before:', 'after:'))
    ] == [
        'before: mmengine.logging.history_buffer.HistoryBuffer',
        'after: ImageClassifier'
    ]

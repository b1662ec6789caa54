"""tools/model_converters/publish_model.py on the checkpoint of a real run."""
import hashlib
import importlib.util
import os.path as osp
import textwrap

import pytest
import torch
from conftest import REPO, run_tool

from localvit_mm.models.build import build_model_from_config, forward_tensors
from localvit_mm.utils import UserInputError, load_config, safe_load

QUICKSTART = osp.join(
    REPO, 'configs/quickstart/localvit-tiny_2xb32_fashion-mnist.py')
TOOL = osp.join(REPO, 'tools/model_converters/publish_model.py')


def publish_model():
    spec = importlib.util.spec_from_file_location('publish_model', TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope='module')
def run(tmp_path_factory, fashion_mnist):
    """Config and checkpoint of 2 iterations of a 2-block LocalViT on real
    Fashion-MNIST through tools/train.py (AdamW, warm-up + cosine)."""
    tmp = tmp_path_factory.mktemp('publish')
    config = tmp / 'localvit-2blocks.py'
    config.write_text(f'_base_ = [{QUICKSTART!r}]\n' + textwrap.dedent("""
        model = dict(
            backbone=dict(arch=dict(
                _delete_=True,
                embed_dims=32, num_layers=2, num_heads=2,
                ffn_cfg=dict(act_cfg=dict(type='HSwish'),
                             channel_attention=dict(type='SE',
                                                    reduction=8)))),
            head=dict(in_channels=32))
        train_dataloader = dict(
            batch_size=8, num_workers=0, persistent_workers=False,
            dataset=dict(indices=16))
        train_cfg = dict(max_iters=2)
        default_hooks = dict(checkpoint=dict(interval=2))
        val_cfg = val_dataloader = val_evaluator = None
        """))
    result = run_tool('python', 'tools/train.py', str(config), '--work-dir',
                      str(tmp / 'work'))
    assert result.returncode == 0, result.stderr[-3000:]
    return str(config), tmp / 'work' / 'iter_2.pth'


def outputs(config, state_dict):
    model = build_model_from_config(load_config(config)).eval()
    model.load_state_dict(state_dict, strict=True)
    torch.manual_seed(1)
    with torch.no_grad():
        return forward_tensors(model, torch.randn(3, 1, 28, 28))


def test_publish_round_trip(run, tmp_path):
    config, checkpoint = run
    original = safe_load(str(checkpoint))
    assert sorted(original) == [
        'message_hub', 'meta', 'optimizer', 'param_schedulers', 'state_dict'
    ]
    result = run_tool('python', 'tools/model_converters/publish_model.py',
                      str(checkpoint), str(tmp_path / 'localvit-fmnist.pth'))
    assert result.returncode == 0, result.stderr[-3000:]
    [published] = tmp_path.glob('localvit-fmnist-*.pth')
    digest = hashlib.sha256(published.read_bytes()).hexdigest()
    assert published.name == f'localvit-fmnist-{digest[:8]}.pth'
    assert sorted(p.name for p in tmp_path.iterdir()) == [published.name]
    lines = result.stdout.splitlines()
    sizes = [p.stat().st_size / 2**20 for p in (checkpoint, published)]
    assert lines[0] == (
        f'{checkpoint} ({sizes[0]:.2f} MiB) -> {published} ({sizes[1]:.2f} '
        'MiB): kept meta, state_dict; dropped message_hub, optimizer, '
        'param_schedulers')
    assert lines[1] == (
        f'checked: {published} loads with the safe loader; outputs on (2, 1, '
        f'28, 28) random images equal those of {checkpoint} '
        '(max |difference| 0)')

    # Only meta and the weights remain, unchanged; no allow-listed class
    # (the message hub's HistoryBuffer) is left: plain weights_only loads it.
    stripped = torch.load(str(published), weights_only=True)
    assert list(stripped) == ['meta', 'state_dict']
    assert stripped['meta'] == original['meta']
    assert stripped['meta']['iter'] == 2
    assert list(stripped['state_dict']) == list(original['state_dict'])
    for name, tensor in original['state_dict'].items():
        assert torch.equal(stripped['state_dict'][name], tensor), name
    assert published.stat().st_size < checkpoint.stat().st_size / 2
    assert torch.equal(
        outputs(config, stripped['state_dict']),
        outputs(config, original['state_dict']))

    # Publishing again gives the same bytes, hence the same name.
    again = publish_model().main(
        [str(checkpoint),
         str(tmp_path / 'localvit-fmnist.pth')])
    assert again == str(published)


def test_config_argument_and_refusals(run, tmp_path):
    config, checkpoint = run
    tool = publish_model()
    weights = tmp_path / 'weights.pth'
    torch.save(safe_load(str(checkpoint))['state_dict'], weights)
    with pytest.raises(UserInputError, match='holds no state_dict'):
        tool.main([str(weights), str(tmp_path / 'out.pth')])
    no_meta = tmp_path / 'no_meta.pth'
    torch.save(dict(state_dict=torch.load(weights)), no_meta)
    with pytest.raises(
            UserInputError,
            match=r'stores no config in meta\["cfg"\]: pass the config it '
            'was trained with, --config CONFIG'):
        tool.main([str(no_meta), str(tmp_path / 'out.pth')])
    assert not list(tmp_path.glob('out*'))  # nothing unchecked is left
    final = tool.main(
        [str(no_meta),
         str(tmp_path / 'out.pth'), '--config', config])
    assert osp.basename(final).startswith('out-')
    with pytest.raises(UserInputError, match='must end with .pth'):
        tool.main([str(no_meta), str(tmp_path / 'out.pt')])
    with pytest.raises(
            UserInputError, match="output folder '.*missing' not "
            'found'):
        tool.main([str(no_meta), str(tmp_path / 'missing' / 'out.pth')])
    other = tmp_path / 'other.py'
    other.write_text(f'_base_ = [{config!r}]\n'
                     'model = dict(head=dict(num_classes=7))\n')
    with pytest.raises(
            UserInputError,
            match=r'do not fit the config: size mismatch for head\.fc\.bias: '
            r'copying a param with shape torch\.Size\(\[10\]\) from '
            r'checkpoint, the shape in current model is torch\.Size\(\[7\]\); '
            'pass the config they were trained with'):
        tool.main(
            [str(no_meta),
             str(tmp_path / 'x.pth'), '--config',
             str(other)])
    assert not list(tmp_path.glob('x-*.pth'))
    result = run_tool('python', 'tools/model_converters/publish_model.py',
                      str(tmp_path / 'nowhere.pth'), str(tmp_path / 'o.pth'))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"error: checkpoint '{tmp_path / 'nowhere.pth'}' not found: check "
        "the path (a training run's newest checkpoint is named in its "
        'work_dir/last_checkpoint)'
    ]

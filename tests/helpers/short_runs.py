"""Short deterministic training runs of LeNet-5 on real Fashion-MNIST, the
cheapest real runs of the tools (tools/train.py and the launchers)."""
import os.path as osp
import textwrap

from conftest import REPO

LENET = osp.join(REPO, 'configs/quickstart/lenet5_1xb64_fashion-mnist.py')


def write_config(tmp_path, name, body):
    """A test config over the LeNet-5 Fashion-MNIST config."""
    path = tmp_path / name
    path.write_text(f'_base_ = [{LENET!r}]\n' + textwrap.dedent(body))
    return str(path)


def short_run(tmp_path,
              name,
              batch_size,
              max_iters,
              extra='',
              images=64,
              interval=4,
              max_keep_ckpts=-1):
    """Iteration-based, deterministic, ``images`` images, no validation,
    the global loss of every iteration in ``work_dir/losses.json``."""
    return write_config(
        tmp_path, name, f"""
        custom_imports = dict(imports=['recording_hooks'])
        custom_hooks = [dict(type='GlobalLossRecorderHook')]
        train_dataloader = dict(
            batch_size={batch_size}, num_workers=0, persistent_workers=False,
            dataset=dict(indices={images}),
            sampler=dict(type='DefaultSampler', shuffle=True, seed=0))
        train_cfg = dict(by_epoch=False, max_iters={max_iters},
                         val_interval=1000)
        default_hooks = dict(
            logger=dict(interval=1),
            checkpoint=dict(interval={interval},
                            max_keep_ckpts={max_keep_ckpts}))
        val_cfg = val_dataloader = val_evaluator = None
        randomness = dict(seed=0, deterministic=True)
        {extra}
        """)

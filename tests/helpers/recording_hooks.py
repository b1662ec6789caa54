"""Hooks the tool tests add to configs: record global losses, die mid-run
or mid-save (a real SIGKILL of the training process itself)."""
import json
import os
import os.path as osp
import signal

import torch
from mmengine.dist import all_reduce, is_main_process
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class GlobalLossRecorderHook(Hook):
    """Write the loss averaged over all ranks at every iteration to
    ``work_dir/losses.json`` (the loss of the whole global batch)."""

    def before_train(self, runner):
        self.losses = []

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        loss = outputs['loss'].detach().clone().double()
        all_reduce(loss, op='mean')
        self.losses.append(loss.item())

    def after_train(self, runner):
        if is_main_process():
            with open(osp.join(runner.work_dir, 'losses.json'), 'w') as f:
                json.dump(self.losses, f)


@HOOKS.register_module()
class KillAfterIterHook(Hook):
    """SIGKILL the process (of one rank, or of every rank) once iteration
    ``at_iter`` is done and saved; with ``once_marker``, only if that file
    does not exist yet (it is created first), so a restarted job goes on."""

    priority = 'LOWEST'  # after the CheckpointHook

    def __init__(self, at_iter, rank=None, once_marker=None):
        self.at_iter = at_iter
        self.rank = rank
        self.once_marker = once_marker

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        if runner.iter + 1 != self.at_iter or self.rank not in (None,
                                                                runner.rank):
            return
        if self.once_marker is not None:
            if osp.exists(self.once_marker):
                return
            open(self.once_marker, 'w').close()
        os.kill(os.getpid(), signal.SIGKILL)


@HOOKS.register_module()
class KillDuringSaveHook(Hook):
    """SIGKILL the saving process in the middle of the save of the checkpoint
    of iteration ``at_iter``: its bytes are written, not yet committed."""

    def __init__(self, at_iter):
        self.at_iter = at_iter

    def before_save_checkpoint(self, runner, checkpoint):
        if checkpoint['meta']['iter'] == self.at_iter:
            os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)


def state_of(checkpoint_path):
    """Iteration, weights and optimizer state of an mmengine checkpoint."""
    from localvit_mm.utils import safe_load
    ckpt = safe_load(checkpoint_path, map_location='cpu')
    return ckpt['meta']['iter'], ckpt['state_dict'], ckpt['optimizer']


def assert_same_tensors(a, b, atol=0.):
    """Nested dicts/lists of tensors are equal (within atol)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for key in a:
            assert_same_tensors(a[key], b[key], atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same_tensors(x, y, atol)
    elif isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=0, atol=atol)
    else:
        assert a == b

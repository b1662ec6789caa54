"""Stop training at the first loss that is NaN or infinite.

mmengine keeps stepping on a NaN loss, and every later checkpoint then holds
NaN weights. This hook runs right after each training iteration, before the
checkpoint hook, so the diverged weights are never saved.
"""
import math

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ..utils.errors import UserInputError
from ..utils.launch import latest_checkpoint


class NonFiniteLossError(UserInputError):
    """A loss term became NaN or infinite during training."""


@HOOKS.register_module()
class NonFiniteLossHook(Hook):
    """Raise :class:`NonFiniteLossError` naming the iteration, the bad loss
    terms and the last good checkpoint (``last_checkpoint`` of the work dir).

    ``tools/train.py`` adds it to every run unless the config sets
    ``stop_on_nonfinite_loss = False``.
    """

    priority = 'VERY_HIGH'

    def after_train_iter(self,
                         runner,
                         batch_idx,
                         data_batch=None,
                         outputs=None):
        values = {
            name: float(value.detach() if hasattr(value, 'detach') else value)
            for name, value in (outputs or {}).items() if 'loss' in name
        }
        bad = {
            name: value
            for name, value in values.items() if not math.isfinite(value)
        }
        if not bad:
            return
        terms = ', '.join(f'{name}={value}' for name, value in bad.items())
        where = f'iteration {runner.iter + 1}'
        if runner.train_loop.__class__.__name__ == 'EpochBasedTrainLoop':
            where = f'epoch {runner.epoch + 1}, {where}'
        last = latest_checkpoint(runner.work_dir)
        last = f'the last good checkpoint is {last}' if last else \
            'no checkpoint was saved yet'
        raise NonFiniteLossError(
            f'loss is not finite at {where} ({terms}): training stopped '
            f'before saving the diverged weights; {last}; lower the learning '
            'rate or clip gradients (optim_wrapper.clip_grad=dict(max_norm='
            '...)) and train again from it with load_from (--resume would '
            'restore the old learning rate), or set stop_on_nonfinite_loss = '
            'False in the config to keep training')

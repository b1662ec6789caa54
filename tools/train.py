"""Train a model from a config of any scope: mmpretrain, mmdet or mmseg.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp]
        [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher pytorch]

The config's ``default_scope`` picks the codebase whose registries and runner
are used. Distributed training works with nccl on GPUs and gloo on CPUs (see
``tools/dist_train.sh``). With the ``tensorboard`` package installed the
logged scalars also go to TensorBoard event files (``log_to_tensorboard =
False`` in a config turns that off).
"""
import argparse
import warnings

# mmengine resolves 'pkg::' config paths with pkg_resources, which warns.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from localvit_mm.engine import (use_safe_training_hooks,
                                use_tensorboard_if_installed)
from localvit_mm.utils import (DATALOADERS, UserInputError, add_launch_args,
                               check_run, latest_checkpoint, load_config,
                               parse_launch_args, run_main, set_work_dir,
                               setup_device)


def parse_args():
    parser = argparse.ArgumentParser(description='Train a model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        nargs='?',
        type=str,
        const='auto',
        help='resume from the given checkpoint, or from the newest one in '
        'the work dir when no path is given')
    parser.add_argument(
        '--amp', action='store_true', help='mixed precision (GPU only)')
    parser.add_argument(
        '--no-validate',
        action='store_true',
        help='skip validation during training')
    parser.add_argument(
        '--auto-scale-lr',
        action='store_true',
        help='scale the lr with the real batch size (auto_scale_lr in the '
        'config gives the base batch size)')
    add_launch_args(parser)
    return parse_launch_args(parser)


def merge_args(cfg, args):
    """Apply the command-line arguments to the config."""
    cfg.launcher = args.launcher
    set_work_dir(cfg, args.work_dir, args.config)
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        cfg.resume, cfg.load_from = True, args.resume
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise UserInputError(
                f'--auto-scale-lr needs auto_scale_lr.base_batch_size in '
                f'{args.config}: add auto_scale_lr = dict(base_batch_size=N)')
        cfg.auto_scale_lr.enable = True
    return use_tensorboard_if_installed(use_safe_training_hooks(cfg))


def main():
    args = parse_args()
    cfg = merge_args(load_config(args.config, args.cfg_options), args)
    if cfg.get('resume') and cfg.get('load_from') is None:
        checkpoint = latest_checkpoint(cfg.work_dir)
    else:
        checkpoint = cfg.get('load_from')
    check_run(cfg, args.config, DATALOADERS, checkpoint=checkpoint)
    setup_device(cfg, args.launcher, amp=args.amp)
    runner = (
        Runner.from_cfg(cfg)
        if 'runner_type' not in cfg else RUNNERS.build(cfg))
    runner.train()


if __name__ == '__main__':
    run_main(main)

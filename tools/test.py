"""Test (evaluate) a checkpoint with a config of any scope.

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out FILE.pkl]
        [--show-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher pytorch]
"""
import argparse
import warnings

# mmengine resolves 'pkg::' config paths with pkg_resources, which warns.
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from localvit_mm.utils import (UserInputError, add_launch_args, check_run,
                               load_config, parse_launch_args, run_main,
                               set_work_dir, setup_device)

# Per scope: the metric that dumps the predictions.
DUMP_METRIC = {
    'mmpretrain': 'DumpResults',
    'mmdet': 'DumpDetResults',
    'mmseg': 'DumpResults'
}


def parse_args():
    parser = argparse.ArgumentParser(description='Test (evaluate) a model')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='the dir to save logs and metrics')
    parser.add_argument('--out', help='dump the predictions to a .pkl file')
    parser.add_argument(
        '--show-dir', help='save images with the predictions drawn here')
    add_launch_args(parser)
    return parse_launch_args(parser)


def enable_drawing(cfg, show_dir):
    """Turn on the scope's visualization hook, saving images to show_dir."""
    hook = cfg.default_hooks.visualization
    if cfg.default_scope == 'mmpretrain':
        hook.enable, hook.out_dir = True, show_dir
    elif cfg.default_scope == 'mmdet':
        hook.draw, hook.test_out_dir = True, show_dir
    else:
        hook.draw = True
        cfg.visualizer.save_dir = show_dir


def merge_args(cfg, args):
    """Apply the command-line arguments to the config."""
    cfg.launcher = args.launcher
    cfg.load_from = args.checkpoint
    set_work_dir(cfg, args.work_dir, args.config)
    if args.out is not None:
        if not args.out.endswith(('.pkl', '.pickle')):
            raise UserInputError(
                f'--out {args.out!r} must name a .pkl or .pickle file')
        cfg.test_evaluator = [
            *(cfg.test_evaluator if isinstance(cfg.test_evaluator, list) else
              [cfg.test_evaluator]),
            dict(type=DUMP_METRIC[cfg.default_scope], out_file_path=args.out)
        ]
    if args.show_dir is not None:
        enable_drawing(cfg, args.show_dir)
    return cfg


def main():
    args = parse_args()
    cfg = merge_args(load_config(args.config, args.cfg_options), args)
    check_run(
        cfg, args.config, ('test_dataloader', ), checkpoint=args.checkpoint)
    setup_device(cfg, args.launcher)
    runner = (
        Runner.from_cfg(cfg)
        if 'runner_type' not in cfg else RUNNERS.build(cfg))
    runner.test()


if __name__ == '__main__':
    run_main(main)

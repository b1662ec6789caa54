"""Fold the BatchNorms of every locality FFN of a trained model for inference.

    python tools/model_converters/localvit_deploy.py CONFIG CKPT DST \
        [--save-config DEPLOY_CONFIG]

Builds the model of CONFIG (any scope), loads CKPT (safely, weights only),
calls :func:`localvit_mm.models.switch_to_deploy` and writes the result to
DST. Each locality FFN then holds ``fc1``, ``dw_conv`` and ``fc2`` with
biases and no BatchNorm; the rest of the model is unchanged. Before writing,
the deploy model is checked against the eval-mode model on random images.

A deploy checkpoint loads into the deploy form of the config, which the
backbone builds with ``ffn_cfg=dict(deploy=True)``: pass
``--cfg-options model.backbone.ffn_cfg.deploy=True`` to ``tools/test.py`` or
write that config with ``--save-config``.
"""
import argparse
import copy
import sys
from typing import List, Optional

import torch

from localvit_mm.models import has_deploy_mode, switch_to_deploy
from localvit_mm.models.build import (build_model_from_config, flatten_tensors,
                                      forward_tensors)
from localvit_mm.utils import (UserInputError, build_model,
                               check_checkpoint_fits, load_config, run_main)

KNOB = 'model.backbone.ffn_cfg.deploy'


def deploy_config(cfg):
    """A copy of ``cfg`` whose backbone builds the deploy form directly."""
    cfg = copy.deepcopy(cfg)
    backbone = cfg.model.backbone
    backbone.ffn_cfg = dict(backbone.get('ffn_cfg') or {}, deploy=True)
    backbone.pop('init_cfg', None)  # the deploy checkpoint holds everything
    return cfg


def relative_error(a, b) -> float:
    """Largest |a - b| / max|b| over the output tensors."""
    return max(((x - y).abs().max() / y.abs().max().clamp_min(1e-12)).item()
               for x, y in zip(flatten_tensors(a), flatten_tensors(b)))


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Write the deploy (BatchNorm-folded) form of a '
        'LocalViT checkpoint.')
    parser.add_argument('config', help='config the checkpoint belongs to')
    parser.add_argument('checkpoint', help='trained checkpoint')
    parser.add_argument('dst', help='output deploy checkpoint')
    parser.add_argument(
        '--save-config', help='also write the deploy config here')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[224, 224],
        metavar=('H', 'W'),
        help='input size of the check (default 224 224)')
    args = parser.parse_args(argv)

    cfg = load_config(args.config)
    # Config mistakes and unsafe or unfit checkpoints as one-line errors.
    checked = build_model(cfg, args.config)
    if not has_deploy_mode(checked):
        raise UserInputError(f'{args.config}: the model has no locality FFN '
                             '(nothing to fold): pass a LocalViT config')
    state_dict = check_checkpoint_fits(
        checked, args.checkpoint, args.config, exact=True)
    model = build_model_from_config(cfg)
    model.load_state_dict(state_dict, strict=True)
    model.eval()
    inputs = torch.randn(2, 3, *args.shape)
    with torch.no_grad():
        expected = forward_tensors(model, inputs)
    switch_to_deploy(model)

    # The config knob must build a model that holds exactly these weights.
    deploy_cfg = deploy_config(cfg)
    check = build_model_from_config(deploy_cfg)
    check.load_state_dict(model.state_dict(), strict=True)
    check.eval()
    with torch.no_grad():
        error = relative_error(forward_tensors(check, inputs), expected)
    if error > 1e-4:
        raise SystemExit(f'deploy model differs from the eval model by a '
                         f'relative {error:.2e}; nothing written')
    torch.save(
        dict(
            state_dict=model.state_dict(),
            meta=dict(
                source=args.checkpoint,
                config=args.config,
                deploy=True,
                cfg_options={KNOB: True})), args.dst)
    print(f'{args.checkpoint} -> {args.dst}: BatchNorms folded, largest '
          f'relative difference to eval mode {error:.1e}')
    if args.save_config:
        deploy_cfg.dump(args.save_config)
        print(f'deploy config: {args.save_config}')
    else:
        print(f'load it with --cfg-options {KNOB}=True')


if __name__ == '__main__':
    run_main(main, sys.argv[1:])

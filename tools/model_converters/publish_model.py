"""Prepare a trained checkpoint for release (the OpenMMLab publish step).

    python tools/model_converters/publish_model.py IN OUT.pth \
        [--config CONFIG] [--shape H W]

Keeps the ``meta`` and ``state_dict`` of IN and drops what only resuming a
run needs (``optimizer``, ``param_schedulers``, ``message_hub``, an EMA
hook's ``ema_state_dict``...), then names the file after its content as
OpenMMLab model zoos do: ``OUT.pth`` is written as ``OUT-XXXXXXXX.pth``,
where ``XXXXXXXX`` are the first 8 hex digits of the sha256 of its bytes.

The published file is checked before the tool returns: it loads with the
safe loader (``weights_only``), and the model of the checkpoint's config
(the one mmengine stores in ``meta['cfg']``, or ``--config``) gives the same
outputs with its weights as with IN's on random images.
"""
import argparse
import hashlib
import io
import os
import os.path as osp
import tempfile
import warnings
from typing import List, Optional

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch

from localvit_mm.models.build import (build_model_from_config, flatten_tensors,
                                      forward_tensors)
from localvit_mm.utils import (UserInputError, load_config,
                               load_weights_exactly, run_main, safe_load)

KEPT = ('meta', 'state_dict')


def read_checkpoint(path: str) -> dict:
    """An mmengine checkpoint (a dict with ``state_dict``), loaded safely."""
    checkpoint = safe_load(path, map_location='cpu')
    if not isinstance(checkpoint, dict) or \
            not isinstance(checkpoint.get('state_dict'), dict):
        raise UserInputError(
            f'{path!r} holds no state_dict: pass a checkpoint saved by '
            'tools/train.py (mmengine) or by tools/model_converters/')
    return checkpoint


def config_of(checkpoint: dict, config: Optional[str], path: str):
    """The config to check the weights with: ``config`` (a file) or the
    text mmengine stored in the checkpoint's ``meta['cfg']``."""
    if config is not None:
        return load_config(config)
    text = (checkpoint.get('meta') or {}).get('cfg')
    if not isinstance(text, str):
        raise UserInputError(
            f'{path!r} stores no config in meta["cfg"]: pass the config it '
            'was trained with, --config CONFIG')
    with tempfile.TemporaryDirectory() as tmp:
        stored = osp.join(tmp, 'checkpoint_config.py')
        with open(stored, 'w') as f:
            f.write(text)
        return load_config(stored)


def default_shape(cfg) -> List[int]:
    """Input size of the check: the backbone's ``img_size``, else 224."""
    size = cfg.model.get('backbone', {}).get('img_size', 224)
    return list(size) if isinstance(size, (list, tuple)) else [size, size]


def outputs_with(model, state_dict: dict, inputs: torch.Tensor, name: str):
    """The model's output tensors with ``state_dict`` loaded (strictly)."""
    problem = load_weights_exactly(model, state_dict)
    if problem:
        raise UserInputError(
            f'the weights of {name!r} do not fit the config: {problem}; '
            'pass the config they were trained with, --config CONFIG')
    with torch.no_grad():
        return flatten_tensors(forward_tensors(model, inputs))


def publish(src: str, dst: str) -> str:
    """Write the ``meta`` and ``state_dict`` of ``src`` to
    ``DST_STEM-XXXXXXXX.pth`` and return that path."""
    if not dst.endswith('.pth'):
        raise UserInputError(f'output {dst!r} must end with .pth (the '
                             'sha256 prefix is added before it)')
    out_dir = osp.dirname(osp.abspath(dst))
    if not osp.isdir(out_dir):
        raise UserInputError(f'output folder {out_dir!r} not found: create '
                             'it first')
    checkpoint = read_checkpoint(src)
    published = {key: checkpoint[key] for key in KEPT if key in checkpoint}
    dropped = sorted(set(checkpoint) - set(published))
    # Saved in memory first: torch.save names the archive's folder after
    # the file, so the bytes (and the name) depend on the content alone.
    buffer = io.BytesIO()
    torch.save(published, buffer)
    data = buffer.getvalue()
    final = f'{dst[:-len(".pth")]}-{hashlib.sha256(data).hexdigest()[:8]}.pth'
    with open(final, 'wb') as f:
        f.write(data)
    print(f'{src} ({osp.getsize(src) / 2**20:.2f} MiB) -> {final} '
          f'({osp.getsize(final) / 2**20:.2f} MiB): kept '
          f"{', '.join(published)}; dropped {', '.join(dropped) or 'nothing'}")
    return final


def verify(src: str, final: str, config: Optional[str],
           shape: Optional[List[int]]) -> float:
    """Check that ``final`` loads safely and gives ``src``'s outputs; return
    the largest absolute difference (0 when they are the same)."""
    original = read_checkpoint(src)
    published = read_checkpoint(final)
    if set(published) - set(KEPT):
        raise UserInputError(f'{final!r} holds {sorted(published)}')
    cfg = config_of(original, config, src)
    model = build_model_from_config(cfg).eval()
    shape = shape or default_shape(cfg)
    channels = cfg.model.get('backbone', {}).get('in_channels', 3)
    torch.manual_seed(0)
    inputs = torch.randn(2, channels, *shape)
    expected = outputs_with(model, original['state_dict'], inputs, src)
    actual = outputs_with(model, published['state_dict'], inputs, final)
    difference = max(
        (a - e).abs().max().item() for a, e in zip(actual, expected))
    if difference != 0 or len(actual) != len(expected):
        raise UserInputError(
            f'{final!r} gives other outputs than {src!r} (max |difference| '
            f'{difference:.3g}): do not publish it')
    print(f'checked: {final} loads with the safe loader; outputs on '
          f'{tuple(inputs.shape)} random images equal those of {src} '
          f'(max |difference| {difference:g})')
    return difference


def main(argv: Optional[List[str]] = None) -> str:
    parser = argparse.ArgumentParser(
        description='Strip a checkpoint for release and add the sha256 '
        'prefix to its name.')
    parser.add_argument('in_file', help='trained checkpoint')
    parser.add_argument(
        'out_file', help='output name, e.g. localvit-tiny_in1k.pth')
    parser.add_argument(
        '--config',
        help='config of the check (default: the one stored in the '
        "checkpoint's meta)")
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help="input size of the check (default: the backbone's img_size, "
        'else 224)')
    args = parser.parse_args(argv)
    final = publish(args.in_file, args.out_file)
    try:
        verify(args.in_file, final, args.config, args.shape)
    except Exception:
        os.remove(final)  # an unchecked file is not published
        raise
    return final


if __name__ == '__main__':
    run_main(main)

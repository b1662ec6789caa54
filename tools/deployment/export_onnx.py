"""Export the deploy form of a model to ONNX, dynamic in batch and image size.

    python tools/deployment/export_onnx.py CONFIG CKPT [--output F.onnx] \
        [--shape H W] [--check-shape H W] [--opset N] \
        [--benchmark [--batch-size 32] [--threads 2] [--repeats 5]]

Builds the model of CONFIG, loads CKPT safely (weights only), folds the
BatchNorms of every locality FFN (``switch_to_deploy``) and exports it with
``torch.onnx.export`` (the ``torch.export`` based exporter) with the batch,
height and width of the input dynamic. What is exported:

* a classifier (mmpretrain): the logits, ``(N, num_classes)``;
* a detector or segmentor (mmdet, mmseg): the backbone's feature maps,
  ``feat0``, ``feat1``... (necks and heads, with their anchors and
  post-processing, are left to mmdeploy);
* a bare backbone config: its outputs.

The input is the normalized image batch ``input`` (N, C, H, W): the data
preprocessor (mean/std, BGR to RGB) is not part of the graph, as in mmdeploy.
Every LocalViT family exports for any input size: position embeddings are
resized in the graph, Swin pads to whole windows and decides the shift of
each stage at run time.

After export, onnxruntime (CPU) runs the file at the export size with
batch 2 and at ``--check-shape`` (default: a size no patch or window
divides, about 1.2x larger) with batch 3; the largest absolute difference to
the PyTorch deploy model is printed with the tolerance,
``1e-4 * max(1, max|output|)``, and a larger one is an error. The graph
holds the plain composition of the locality FFN's modules (the PyTorch fused
paths compute the same function with fewer memory passes).
``--benchmark`` then times PyTorch (the deploy model, as ``tools/test.py``
runs it) and onnxruntime on one batch of random images.
"""
import argparse
import contextlib
import importlib.util
import os.path as osp
import statistics
import time
import warnings
from typing import List, Optional

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import numpy as np
import torch
import torch.nn as nn

from localvit_mm.models import has_deploy_mode, switch_to_deploy
from localvit_mm.models.build import build_model_from_config, flatten_tensors
from localvit_mm.models.layers import LocalityFeedForward
from localvit_mm.utils import (UserInputError, load_config,
                               load_weights_exactly, run_main, safe_load)

RELATIVE_TOLERANCE = 1e-4


class ExportedForward(nn.Module):
    """What the ONNX graph computes: a classifier's logits, a detector's or
    segmentor's backbone features, or a bare module's outputs, as a flat
    tuple of tensors."""

    def __init__(self, model: nn.Module, scope: str):
        super().__init__()
        self.kind = 'outputs'
        if scope == 'mmpretrain' and getattr(model, 'with_head', False):
            self.kind = 'logits'
        elif hasattr(model, 'backbone'):
            model = model.backbone
            self.kind = 'backbone features'
        self.model = model

    def forward(self, inputs: torch.Tensor):
        if self.kind == 'logits':
            return self.model(inputs, mode='tensor')
        return tuple(flatten_tensors(self.model(inputs)))

    def output_names(self, num_outputs: int) -> List[str]:
        if self.kind == 'logits':
            return ['logits']
        return [f'feat{i}' for i in range(num_outputs)]


def check_packages():
    """Fail with one line when an export package is missing."""
    missing = [
        name for name in ('onnx', 'onnxscript', 'onnxruntime')
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        raise UserInputError(f"{', '.join(missing)} not installed: pip "
                             'install -r requirements/optional.txt')


@contextlib.contextmanager
def plain_ffn(model: nn.Module):
    """Trace the plain composition of modules of every locality FFN.

    Its fused paths only save PyTorch's memory passes (onnxruntime fuses by
    itself); they are switched back as they were afterwards.
    """
    ffns = [m for m in model.modules() if isinstance(m, LocalityFeedForward)]
    fused = [ffn.fused for ffn in ffns]
    for ffn in ffns:
        ffn.fused = False
    try:
        yield model
    finally:
        for ffn, flag in zip(ffns, fused):
            ffn.fused = flag


def load_deploy_model(config: str, checkpoint: str):
    """The config and its model with the checkpoint's weights, in eval mode
    and deploy form."""
    cfg = load_config(config)
    model = build_model_from_config(cfg)
    state = safe_load(checkpoint, map_location='cpu')
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    problem = load_weights_exactly(model, state)
    if problem:
        raise UserInputError(f'{checkpoint!r} does not fit {config!r}: '
                             f'{problem}')
    model.eval()
    if has_deploy_mode(model):
        switch_to_deploy(model)
    return cfg, model


def export_onnx(module: ExportedForward, inputs: torch.Tensor, path: str,
                opset: Optional[int]) -> List[str]:
    """Write ``module`` to ``path`` with batch, height and width dynamic;
    return the output names."""
    dynamic = torch.export.Dim.DYNAMIC
    with torch.no_grad():
        num_outputs = len(flatten_tensors(module(inputs)))
    output_names = module.output_names(num_outputs)
    program = torch.onnx.export(
        module, (inputs, ),
        dynamo=True,
        input_names=['input'],
        output_names=output_names,
        opset_version=opset,
        dynamic_shapes=({
            0: dynamic,
            2: dynamic,
            3: dynamic
        }, ),
        verbose=False)
    program.save(path, external_data=False)
    # The shape annotations of intermediate values hold expressions traced
    # at one size that onnxruntime may not resolve alike at another (it
    # warns and re-plans); without them it infers every shape itself.
    import onnx
    model = onnx.load(path)
    model.graph.ClearField('value_info')
    # The exporter's symbols (s85...) for the input's dynamic sizes get
    # their names, in the outputs too.
    names = dict(
        zip((d.dim_param for d in input_dims(model)),
            ('batch', '', 'height', 'width')))
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if names.get(dim.dim_param):
                dim.dim_param = names[dim.dim_param]
    onnx.save(model, path)
    return output_names


def input_dims(model) -> list:
    """The dims of an ONNX model's (first) input."""
    return list(model.graph.input[0].type.tensor_type.shape.dim)


def ort_session(path: str, threads: Optional[int] = None):
    """An onnxruntime CPU session of ``path``."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(
        path, options, providers=['CPUExecutionProvider'])


def compare(session, module: nn.Module, inputs: torch.Tensor) -> tuple:
    """(max |onnxruntime - torch|, tolerance) over every output."""
    with torch.no_grad():
        expected = [t.numpy() for t in flatten_tensors(module(inputs))]
    actual = session.run(None, {'input': inputs.numpy()})
    if [a.shape for a in actual] != [e.shape for e in expected]:
        raise AssertionError(f'onnxruntime output shapes '
                             f'{[a.shape for a in actual]} differ from '
                             f'torch {[e.shape for e in expected]}')
    difference = max(
        float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    scale = max(1.0, max(float(np.abs(e).max()) for e in expected))
    return difference, RELATIVE_TOLERANCE * scale


def check_shapes(shape: List[int], check_shape: Optional[List[int]]):
    """(batch, H, W) of the two checks: the export size with batch 2 and a
    larger size that no patch, stride or window divides with batch 3."""
    h, w = shape
    second = check_shape or [h + h // 4 + 3, w + w // 8 + 1]
    return [(2, h, w), (3, *second)]


def cpu_name() -> str:
    """The CPU model and its widest vector ISA, from /proc/cpuinfo."""
    model, flags = 'unknown CPU', set()
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                key, _, value = line.partition(':')
                if key.strip() == 'model name':
                    model = value.strip()
                elif key.strip() == 'flags':
                    flags = set(value.split())
                if model != 'unknown CPU' and flags:
                    break
    except OSError:
        pass
    isa = 'AVX-512' if 'avx512f' in flags else \
        'AVX2' if 'avx2' in flags else 'no AVX2'
    return f'{model} ({isa})'


def benchmark(session, module: nn.Module, inputs: torch.Tensor,
              repeats: int) -> dict:
    """Median img/s of PyTorch and onnxruntime on ``inputs``, timed in turns
    (one of each per repeat) after one warm-up run each."""
    array = inputs.numpy()
    runs = dict(
        pytorch=lambda: module(inputs),
        onnxruntime=lambda: session.run(None, {'input': array}))
    times = {name: [] for name in runs}
    with torch.no_grad():
        for name, run in runs.items():
            run()
        for _ in range(repeats):
            for name, run in runs.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
    return {
        name: len(inputs) / statistics.median(t)
        for name, t in times.items()
    }


def main(argv: Optional[List[str]] = None) -> dict:
    parser = argparse.ArgumentParser(
        description='Export the deploy form of a model to ONNX (dynamic '
        'batch and image size) and check it with onnxruntime.')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint of the config')
    parser.add_argument(
        '--output', help='ONNX file (default: CKPT with .onnx)')
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        default=[224, 224],
        metavar=('H', 'W'),
        help='input size of the export and the first check (default 224)')
    parser.add_argument(
        '--check-shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size of the second check (default about 1.2x --shape, '
        'divided by no patch or window)')
    parser.add_argument(
        '--opset', type=int, help='ONNX opset (default: the exporter\'s)')
    parser.add_argument(
        '--benchmark',
        action='store_true',
        help='time PyTorch and onnxruntime on one batch')
    parser.add_argument(
        '--batch-size',
        type=int,
        default=32,
        help='batch of the benchmark (default 32)')
    parser.add_argument(
        '--threads',
        type=int,
        default=2,
        help='CPU threads of the benchmark (default 2)')
    parser.add_argument(
        '--repeats',
        type=int,
        default=5,
        help='timed runs of the benchmark (default 5)')
    args = parser.parse_args(argv)

    check_packages()
    output = args.output or osp.splitext(args.checkpoint)[0] + '.onnx'
    if not osp.isdir(osp.dirname(osp.abspath(output))):
        raise UserInputError(f'output folder of {output!r} not found: '
                             'create it first')
    cfg, model = load_deploy_model(args.config, args.checkpoint)
    module = ExportedForward(model, cfg.default_scope).eval()
    channels = cfg.model.get('backbone', cfg.model).get('in_channels', 3)
    torch.manual_seed(0)
    with plain_ffn(module):
        names = export_onnx(module, torch.randn(2, channels, *args.shape),
                            output, args.opset)
    print(f'{output}: {module.kind} ({", ".join(names)}) of the deploy '
          f'form of {args.config}; input (batch, {channels}, height, width)')

    session = ort_session(output)
    result = dict(output=output, kind=module.kind, checks=[])
    for batch, h, w in check_shapes(args.shape, args.check_shape):
        inputs = torch.randn(batch, channels, h, w)
        difference, tolerance = compare(session, module, inputs)
        result['checks'].append(
            dict(
                shape=[batch, channels, h, w],
                max_abs_diff=difference,
                tolerance=tolerance))
        print(f'onnxruntime vs PyTorch on {batch}x{channels}x{h}x{w}: max '
              f'|difference| {difference:.2e} (tolerance {tolerance:.2e} = '
              f'{RELATIVE_TOLERANCE:g} x max(1, max|output|))')
        if not difference <= tolerance:
            raise UserInputError(
                f'onnxruntime differs from PyTorch by {difference:.3g} > '
                f'{tolerance:.3g} on {batch}x{channels}x{h}x{w}: the export '
                'is wrong, do not use it')

    if args.benchmark:
        torch.set_num_threads(args.threads)
        speed = benchmark(
            ort_session(output, args.threads), module,
            torch.randn(args.batch_size, channels, *args.shape), args.repeats)
        result['speed'] = speed
        print(f'img/s, batch {args.batch_size} at {args.shape[0]}x'
              f'{args.shape[1]}, {args.threads} threads, median of '
              f'{args.repeats}, {cpu_name()}: PyTorch '
              f"{speed['pytorch']:.1f}, onnxruntime "
              f"{speed['onnxruntime']:.1f} "
              f"({speed['onnxruntime'] / speed['pytorch']:.2f}x)")
    return result


if __name__ == '__main__':
    run_main(main)

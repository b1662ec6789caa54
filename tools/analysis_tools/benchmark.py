"""Speed, achieved FLOP/s and training memory of models, side by side.

    python tools/analysis_tools/benchmark.py CONFIG [CONFIG ...] \
        [--batch-size 32] [--shape H W] [--repeats 10] [--warmup 2] \
        [--device cpu|cuda] [--amp bf16|fp16] [--train] [--deploy] \
        [--threads N] [--json OUT]

Every config (any ``default_scope``: mmpretrain, mmdet, mmseg) is built
with random weights and fed a batch of random images. What is measured:

* Inference: one forward of the network in ``mode='tensor'`` (backbone,
  neck and head; no data preprocessing or post-processing such as NMS),
  under ``torch.no_grad``. Latency is the time of one batch, throughput
  ``batch / latency``.
* Training step (``--train``): forward in ``mode='tensor'`` with the model in
  train mode, a synthetic loss (mean square of every output), backward and
  an AdamW step. Head-specific loss code (target assignment) is left out on
  purpose: it does not depend on the backbone.
* Achieved GFLOP/s: ``2 * MACs per image * img/s``, with MACs counted as
  the paper counts them (:mod:`localvit_mm.analysis.complexity`), against a
  square matrix multiply timed in the same run (fp32 on the CPU, bf16 on a
  GPU, or the ``--amp`` type).
* Training memory (``--train``): on the CPU, the growth of the peak resident
  set size of a fresh process over one training step of a freshly built
  model (so gradients and optimizer state are included, as is what the
  allocator keeps); on a GPU, ``torch.cuda.max_memory_allocated`` over the
  same step. Also, deterministically, the bytes of the tensors autograd
  saves for the backward pass (activations, parameters excluded).

The models run interleaved: every repeat times each model once in turn, so
a change of machine load hits all of them alike, and the median of the
repeats is reported, with the ratio to the first config. ``--deploy`` adds
the ``switch_to_deploy()`` version of every model that has one.
"""
import argparse
import copy
import json
import logging
import math
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time
import warnings

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

import torch
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.utils import ProgressBar

from localvit_mm.analysis import SavedTensorBytes, model_complexity
from localvit_mm.models import has_deploy_mode, switch_to_deploy
from localvit_mm.models.build import (build_model_from_config, flatten_tensors,
                                      forward_tensors)
from localvit_mm.utils import load_config

DETECTION_SHAPE = (800, 1333)
DEFAULT_SHAPE = (224, 224)
AMP_DTYPES = {'bf16': torch.bfloat16, 'fp16': torch.float16}
# Environment variables that change CPU speed, recorded with the results.
ENV_KEYS = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS', 'THP_MEM_ALLOC_ENABLE',
            'LD_PRELOAD')


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Interleaved speed / FLOP/s / memory benchmark.')
    parser.add_argument('configs', nargs='+', help='config files')
    parser.add_argument('--batch-size', type=int, default=32)
    parser.add_argument(
        '--shape',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size (default: the crop size of mmseg configs, 800 1333 '
        "for mmdet configs, 224 224 otherwise), rounded up to the config's "
        'pad/size divisor')
    parser.add_argument(
        '--repeats', type=int, default=10, help='timed rounds over all models')
    parser.add_argument(
        '--warmup', type=int, default=2, help='untimed rounds first')
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument(
        '--amp', choices=sorted(AMP_DTYPES), help='autocast type (GPU only)')
    parser.add_argument(
        '--train',
        action='store_true',
        help='also time training steps and measure memory')
    parser.add_argument(
        '--deploy',
        action='store_true',
        help='also time the switch_to_deploy() models')
    parser.add_argument(
        '--threads',
        type=int,
        help='torch CPU threads (default: torch default)')
    parser.add_argument(
        '--matmul-size',
        type=int,
        help='side of the square matmul of the peak '
        '(default 2048 on the CPU, 8192 on a GPU)')
    parser.add_argument('--json', help='write the results here')
    parser.add_argument(
        '--memory-probe', action='store_true', help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.amp and args.device != 'cuda':
        parser.error('--amp needs --device cuda')
    if args.device == 'cuda' and not torch.cuda.is_available():
        parser.error('--device cuda: no GPU is visible')
    if args.repeats < 1 or args.warmup < 0 or args.batch_size < 1:
        parser.error('--repeats and --batch-size must be >= 1, '
                     '--warmup >= 0')
    return args


def build_model(config: str):
    """Model of a config (random weights, SyncBN as BN), its scope and its
    data preprocessor's settings."""
    cfg = load_config(config)
    model = build_model_from_config(cfg)
    preprocessor = dict(cfg.model.get('data_preprocessor') or {})
    return revert_sync_batchnorm(model), cfg.default_scope, preprocessor


def input_shape(args, scope: str, preprocessor: dict):
    """``--shape``, else the crop size an mmseg preprocessor pads to, else
    800x1333 for mmdet and 224x224 otherwise; rounded up to the divisor
    the preprocessor pads to."""
    shape = args.shape or preprocessor.get('size') or (
        DETECTION_SHAPE if scope == 'mmdet' else DEFAULT_SHAPE)
    divisor = preprocessor.get('pad_size_divisor') or preprocessor.get(
        'size_divisor') or 1
    return tuple(math.ceil(s / divisor) * divisor for s in shape)


def timed(fn, device: torch.device) -> float:
    """Seconds ``fn()`` takes, the GPU's queued work included."""
    if device.type == 'cuda':
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == 'cuda':
        torch.cuda.synchronize()
    return time.perf_counter() - start


def synthetic_loss(outputs):
    return sum(t.float().square().mean() for t in flatten_tensors(outputs))


class Case:
    """One model under test with its input and optimizer."""

    def __init__(self, name, config, model, scope, shape, args, deploy=False):
        self.name, self.config, self.scope = name, config, scope
        self.model, self.shape, self.deploy = model, shape, deploy
        self.device = torch.device(args.device)
        self.amp = AMP_DTYPES.get(args.amp)
        self.inputs = torch.randn(
            args.batch_size, 3, *shape, device=self.device)
        self.optimizer = None
        self.times = dict(inference=[], train=[])

    def autocast(self):
        return torch.autocast(
            self.device.type, dtype=self.amp, enabled=self.amp is not None)

    def infer(self):
        self.model.eval()
        with torch.no_grad(), self.autocast():
            forward_tensors(self.model, self.inputs)

    def train_step(self):
        self.model.train()
        if self.optimizer is None:
            self.optimizer = torch.optim.AdamW(
                [p for p in self.model.parameters() if p.requires_grad],
                lr=1e-4)
        with self.autocast():
            loss = synthetic_loss(forward_tensors(self.model, self.inputs))
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def timed(self, kind):
        step = self.infer if kind == 'inference' else self.train_step
        return timed(step, self.device)


class MatmulPeak:
    """Square matrix multiply, timed in the same rounds as the models."""

    def __init__(self, args):
        self.device = torch.device(args.device)
        self.dtype = (
            AMP_DTYPES.get(args.amp, torch.bfloat16)
            if args.device == 'cuda' else torch.float32)
        self.n = args.matmul_size or (8192 if args.device == 'cuda' else 2048)
        self.a = torch.randn(
            self.n, self.n, device=self.device, dtype=self.dtype)
        self.b = torch.randn_like(self.a)
        self.times = []

    def timed(self):
        return timed(lambda: torch.mm(self.a, self.b), self.device)

    def gflops(self):
        return 2 * self.n**3 / statistics.median(self.times) / 1e9


def round_robin(cases, kind, args, peak=None):
    """Warm-up rounds, then timed rounds; every round times each case once.
    A progress bar with the ETA goes to stderr."""
    rounds = args.warmup + args.repeats
    print(f'{kind}: {rounds} rounds of {len(cases)} models', file=sys.stderr)
    progress = ProgressBar(rounds, file=sys.stderr)
    for round_index in range(rounds):
        for case in cases:
            elapsed = case.timed(kind)
            if round_index >= args.warmup:
                case.times[kind].append(elapsed)
        if peak is not None:
            elapsed = peak.timed()
            if round_index >= args.warmup:
                peak.times.append(elapsed)
        progress.update()
    sys.stderr.write('\n')


def saved_activation_bytes(case) -> int:
    """Bytes of the tensors autograd keeps for backward (unique storages,
    parameters excluded), for one training forward."""
    case.model.train()
    with SavedTensorBytes(exclude=case.model) as saved, case.autocast():
        loss = synthetic_loss(forward_tensors(case.model, case.inputs))
    del loss
    return saved.nbytes


def _rss_bytes(field: str) -> int:
    """A VmRSS / VmHWM line of /proc/self/status, in bytes."""
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1]) * 1024
    raise KeyError(field)


def memory_probe(args):
    """(In a fresh process) peak memory growth of one training step."""
    model, scope, preprocessor = build_model(args.configs[0])
    shape = input_shape(args, scope, preprocessor)
    case = Case('probe', args.configs[0], model.to(args.device), scope, shape,
                args)
    if case.device.type == 'cuda':
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        case.train_step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
        method = 'cuda max_memory_allocated'
    else:
        try:  # reset the peak RSS (VmHWM) to the current RSS
            with open('/proc/self/clear_refs', 'w') as f:
                f.write('5')
            before = _rss_bytes('VmRSS')
            case.train_step()
            peak = _rss_bytes('VmHWM') - before
            method = 'peak RSS growth (VmHWM)'
        except OSError:
            before = _rss_bytes('VmRSS')
            case.train_step()
            peak = resource.getrusage(
                resource.RUSAGE_SELF).ru_maxrss * 1024 - before
            method = 'peak RSS growth (ru_maxrss)'
    print(json.dumps(dict(peak_bytes=peak, method=method)))


def probe_memory(config, args):
    """Run :func:`memory_probe` for ``config`` in a fresh interpreter."""
    cmd = [
        sys.executable,
        osp.abspath(__file__), config, '--memory-probe', '--batch-size',
        str(args.batch_size), '--device', args.device
    ]
    if args.shape:
        cmd += ['--shape', *map(str, args.shape)]
    if args.amp:
        cmd += ['--amp', args.amp]
    if args.threads:
        cmd += ['--threads', str(args.threads)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f'memory probe of {config} failed:\n'
                           f'{result.stderr[-2000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])


def complexity(model, shape):
    """(MACs per image, params), counted on the CPU without log chatter."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        info = model_complexity(model, shape)
    finally:
        logger.setLevel(level)
    return info['flops'], info['params']


def build_cases(args):
    """A case per config, plus its deploy form with ``--deploy``."""
    cases = []
    for index, config in enumerate(args.configs):
        model, scope, preprocessor = build_model(config)
        shape = input_shape(args, scope, preprocessor)
        name = osp.splitext(osp.basename(config))[0]
        variants = [(name, model, False)]
        if args.deploy and has_deploy_mode(model):
            deployed = copy.deepcopy(model)
            deployed.eval()  # some backbones' train() returns None
            switch_to_deploy(deployed)
            variants.append((name + ' [deploy]', deployed, True))
        for label, variant, deploy in variants:
            macs, params = complexity(variant, shape)
            case = Case(
                label,
                config,
                variant.to(args.device),
                scope,
                shape,
                args,
                deploy=deploy)
            case.index, case.macs, case.params = index, macs, params
            cases.append(case)
    return cases


def median_ms(times):
    return statistics.median(times) * 1e3 if times else None


def summarize(cases, peak, args, load_start, memory):
    """The JSON record: settings and one entry per case."""
    base = cases[0]
    base_infer = median_ms(base.times['inference'])
    base_train = median_ms(base.times['train'])
    peak_gflops = peak.gflops()
    records = []
    for case in cases:
        macs = case.macs
        infer = median_ms(case.times['inference'])
        img_s = args.batch_size / infer * 1e3
        record = dict(
            name=case.name,
            config=case.config,
            scope=case.scope,
            deploy=case.deploy,
            shape=list(case.shape),
            batch_size=args.batch_size,
            params=case.params,
            macs_per_image=macs,
            inference_latency_ms=infer,
            inference_img_per_s=img_s,
            inference_ratio=base_infer / infer,
            achieved_gflops=2 * macs * img_s / 1e9,
            fraction_of_matmul_peak=2 * macs * img_s / 1e9 / peak_gflops,
            inference_times_ms=[t * 1e3 for t in case.times['inference']])
        if case.times['train']:
            train = median_ms(case.times['train'])
            record.update(
                train_step_ms=train,
                train_img_per_s=args.batch_size / train * 1e3,
                train_ratio=base_train / train,
                train_times_ms=[t * 1e3 for t in case.times['train']])
        if not case.deploy and case.index in memory:
            mem = memory[case.index]
            base_mem = memory[base.index]
            record.update(
                peak_train_memory_mb=mem['peak_bytes'] / 2**20,
                peak_train_memory_ratio=mem['peak_bytes'] /
                base_mem['peak_bytes'],
                saved_activations_mb=mem['saved_bytes'] / 2**20,
                saved_activations_ratio=mem['saved_bytes'] /
                base_mem['saved_bytes'],
                memory_method=mem['method'])
        records.append(record)
    settings = dict(
        batch_size=args.batch_size,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        amp=args.amp,
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        interleaved=True,
        statistic='median',
        cpu_count=os.cpu_count(),
        load_average_start=load_start,
        environment={
            k: v
            for k, v in os.environ.items()
            if k in ENV_KEYS or k.startswith('MALLOC_')
        },
        load_average_end=list(os.getloadavg()),
        matmul_peak=dict(
            size=peak.n,
            dtype=str(peak.dtype).split('.')[-1],
            gflops=peak_gflops,
            times_ms=[t * 1e3 for t in peak.times]))
    return dict(settings=settings, models=records)


def format_table(result) -> str:
    """A Markdown table of the JSON record."""
    models = result['models']
    train = any('train_step_ms' in m for m in models)
    memory = any('peak_train_memory_mb' in m for m in models)
    head = [
        'model', 'shape', 'img/s', 'latency ms', 'ratio', 'GFLOP/s', '% peak'
    ]
    if train:
        head += ['train step ms', 'train ratio']
    if memory:
        head += ['peak mem MB', 'mem ratio', 'saved act. MB', 'act. ratio']
    rows = []
    for m in models:
        row = [
            m['name'], 'x'.join(map(str, m['shape'])),
            f"{m['inference_img_per_s']:.1f}",
            f"{m['inference_latency_ms']:.0f}", f"{m['inference_ratio']:.2f}",
            f"{m['achieved_gflops']:.1f}",
            f"{100 * m['fraction_of_matmul_peak']:.0f}%"
        ]
        if train:
            row += ([f"{m['train_step_ms']:.0f}", f"{m['train_ratio']:.2f}"]
                    if 'train_step_ms' in m else ['-', '-'])
        if memory:
            row += ([
                f"{m['peak_train_memory_mb']:.0f}",
                f"{m['peak_train_memory_ratio']:.2f}",
                f"{m['saved_activations_mb']:.0f}",
                f"{m['saved_activations_ratio']:.2f}"
            ] if 'peak_train_memory_mb' in m else ['-'] * 4)
        rows.append(row)
    lines = [
        '| ' + ' | '.join(head) + ' |',
        '|' + '|'.join('---' for _ in head) + '|'
    ]
    lines += ['| ' + ' | '.join(row) + ' |' for row in rows]
    s = result['settings']
    peak = s['matmul_peak']
    lines.append(
        f"\nbatch {s['batch_size']}, {s['device']}, {s['amp'] or 'fp32'}, "
        f"{s['threads']} threads, {s['repeats']} interleaved repeats "
        f"(median); {peak['dtype']} matmul peak {peak['gflops']:.1f} "
        f"GFLOP/s (n={peak['size']}); load average "
        f"{s['load_average_start'][0]:.2f} -> "
        f"{s['load_average_end'][0]:.2f} on {s['cpu_count']} cores")
    return '\n'.join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_probe:
        return memory_probe(args)
    load_start = list(os.getloadavg())
    memory = {}
    if args.train:  # fresh processes first, before this one grows
        for index, config in enumerate(args.configs):
            memory[index] = probe_memory(config, args)
    cases = build_cases(args)
    if args.train:
        for case in cases:
            if not case.deploy:
                memory[case.index]['saved_bytes'] = \
                    saved_activation_bytes(case)
    peak = MatmulPeak(args)
    round_robin(cases, 'inference', args, peak)
    if args.train:
        round_robin([c for c in cases if not c.deploy], 'train', args)
    result = summarize(cases, peak, args, load_start, memory)
    print(format_table(result))
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == '__main__':
    main()

"""The small-data study: does locality help most when images are few?

    python tools/experiments/small_data.py [--sizes 1000 5000 60000] \
        [--seeds 0 1] [--iters 100] [--test-images N] [--jobs 1] \
        [--work-dir DIR]

Trains DeiT-T, LocalViT-T without its depth-wise convolution, LocalViT-T,
DeiT-T + LIFE and LocalViT-T + LIFE (configs/small_data/, patch 4 on 28 px)
on the first N real Fashion-MNIST training images, with the same schedule
and seeds, through tools/train.py, and evaluates each on the full 10,000-image
test split. Writes ``results.md`` (mean ± std over seeds), ``results.png``
and ``results.json`` into the work dir. Finished runs are kept: rerunning the
command (after a stop, or with more seeds) trains only the missing ones.
On a GPU (tools/train.py uses it by itself) give it a longer schedule, e.g.
``--iters 3000``.
"""
import argparse
import json
import os
import os.path as osp
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed

warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from localvit_mm.analysis.curves import curve_of, load_scalars, scalars_files
from localvit_mm.analysis.study import group_results, markdown_table, plot_grid
from localvit_mm.utils import UserInputError, load_config, run_main

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
CONFIG_DIR = osp.join(ROOT, 'configs', 'small_data')
TRAIN = osp.join(ROOT, 'tools', 'train.py')
MODELS = {
    'DeiT-T': 'deit-tiny',
    'LocalViT-T w/o DW': 'localvit-tiny-nodw',
    'LocalViT-T': 'localvit-tiny',
    'DeiT-T + LIFE': 'deit-tiny-life',
    'LocalViT-T + LIFE': 'localvit-tiny-life',
}
TRAIN_IMAGES = 60000


def config_of(model: str) -> str:
    return osp.join(CONFIG_DIR, f'{MODELS[model]}_1xb64_fashion-mnist-1k.py')


def run_config(model, size, seed, iters, work_dir, test_images=None):
    """Write the config of one run: the model's study config with the
    subset size, the seed, a schedule of ``iters`` iterations (warm-up for
    the first tenth, then cosine) and the first ``test_images`` test images
    (None: all)."""
    cfg = load_config(config_of(model))
    cfg.train_dataloader.dataset.indices = size
    cfg.val_dataloader.dataset.indices = test_images
    cfg.randomness = dict(seed=seed)
    warmup = max(1, iters // 10)
    warmup_lr, cosine = cfg.param_scheduler
    warmup_lr.end = warmup
    cosine.begin, cosine.end = warmup, iters
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = iters
    cfg.default_hooks.checkpoint.interval = iters
    os.makedirs(work_dir, exist_ok=True)
    path = osp.join(work_dir, 'config.py')
    cfg.dump(path)
    return path


def train_one(model, size, seed, iters, work_dir, threads, test_images=None):
    """Train and evaluate one run through tools/train.py; its record."""
    result_file = osp.join(work_dir, 'result.json')
    config = run_config(model, size, seed, iters, work_dir, test_images)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED='1')
    start = time.perf_counter()
    with open(osp.join(work_dir, 'train.log'), 'w') as log:
        command = [sys.executable, TRAIN, config, '--work-dir', work_dir]
        status = subprocess.run(
            command, cwd=ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT).returncode
    if status != 0:
        raise UserInputError(
            f'the run {model} on {size} images, seed {seed} failed (status '
            f'{status}): see {osp.join(work_dir, "train.log")}')
    curve = []
    for path in scalars_files(work_dir):
        curve += curve_of(load_scalars(path), 'accuracy/top1')
    result = dict(
        model=model,
        size=size,
        seed=seed,
        iters=iters,
        test_images=test_images,
        top1=curve[-1][1],
        wall_s=round(time.perf_counter() - start, 1))
    with open(result_file, 'w') as f:
        json.dump(result, f)
    return result


def finished(work_dir, iters, test_images=None):
    """The record of a finished run with these settings, or None."""
    path = osp.join(work_dir, 'result.json')
    if not osp.exists(path):
        return None
    with open(path) as f:
        result = json.load(f)
    same = (result['iters'], result.get('test_images')) == (iters, test_images)
    return result if same else None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument(
        '--sizes',
        type=int,
        nargs='+',
        default=[1000, 5000, 60000],
        help='training-set sizes (first N images; default 1000 5000 60000)')
    parser.add_argument(
        '--seeds', type=int, nargs='+', default=[0, 1], help='default 0 1')
    parser.add_argument(
        '--models',
        nargs='+',
        choices=list(MODELS),
        default=list(MODELS),
        help='default: all five')
    parser.add_argument(
        '--iters',
        type=int,
        default=100,
        help='iterations of batch 64 per run, the same for every size '
        '(default 100: a CPU budget; use thousands on a GPU)')
    parser.add_argument(
        '--test-images',
        type=int,
        help='evaluate on the first N test images only (quick checks; '
        'default: all 10,000)')
    parser.add_argument(
        '--jobs', type=int, default=1, help='runs at a time (default 1)')
    parser.add_argument(
        '--threads',
        type=int,
        help='threads per run (default: CPU cores / jobs)')
    parser.add_argument(
        '--work-dir', default=osp.join('work_dirs', 'small_data'))
    return parser.parse_args()


def main():
    args = parse_args()
    bad = [size for size in args.sizes if not 0 < size <= TRAIN_IMAGES]
    if bad:
        raise UserInputError(f'--sizes {bad}: Fashion-MNIST has '
                             f'{TRAIN_IMAGES:,} training images, pick sizes '
                             f'from 1 to {TRAIN_IMAGES}')
    if args.iters < 1 or args.jobs < 1 or (args.test_images or 1) < 1:
        raise UserInputError(
            '--iters, --jobs and --test-images must be 1 or more')
    threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    runs = [(model, size, seed) for size in args.sizes for model in args.models
            for seed in args.seeds]

    def work_dir_of(model, size, seed):
        return osp.join(args.work_dir, MODELS[model], f'n{size}',
                        f'seed{seed}')

    results, todo = [], []
    for run in runs:
        done = finished(work_dir_of(*run), args.iters, args.test_images)
        if done:
            results.append(done)
        else:
            todo.append(run)
    print(
        f'{len(runs)} runs ({len(results)} already finished), {args.iters} '
        f'iterations of batch 64 each, {args.jobs} at a time with '
        f'{threads} thread(s)',
        flush=True)
    start = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = [
            pool.submit(train_one, *run, args.iters, work_dir_of(*run),
                        threads, args.test_images) for run in todo
        ]
        for count, future in enumerate(as_completed(futures), 1):
            result = future.result()
            results.append(result)
            elapsed = time.perf_counter() - start
            eta = elapsed / count * (len(todo) - count)
            print(
                f"[{count}/{len(todo)}] {result['model']}, "
                f"{result['size']:,} images, seed {result['seed']}: top-1 "
                f"{result['top1']:.2f}% in {result['wall_s']:.0f} s; "
                f'elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min',
                flush=True)

    grid = group_results(results)
    table = markdown_table(grid, args.models, args.sizes)
    wall = sum(result['wall_s'] for result in results)
    seeds = ', '.join(map(str, args.seeds))
    tested = f'first {args.test_images:,}' if args.test_images else '10,000'
    note = (f'Top-1 (%) on the {tested} Fashion-MNIST test images, mean ± std '
            f'over seeds {seeds}; {args.iters} iterations of batch 64 '
            f'for every size; {wall / 60:.0f} min of training and '
            'evaluation in all.')
    os.makedirs(args.work_dir, exist_ok=True)
    with open(osp.join(args.work_dir, 'results.md'), 'w') as f:
        f.write(table + '\n\n' + note + '\n')
    with open(osp.join(args.work_dir, 'results.json'), 'w') as f:
        json.dump(results, f, indent=1)
    plot_grid(
        grid,
        args.models,
        args.sizes,
        osp.join(args.work_dir, 'results.png'),
        title=f'Fashion-MNIST, {args.iters} iterations of batch 64')
    print(table + '\n\n' + note)


if __name__ == '__main__':
    run_main(main)

"""Draw the training curves of several runs in one PNG (paper Fig. 4 style).

    python tools/analysis_tools/compare_curves.py WORK_DIR [WORK_DIR ...] \
        [--out curves.png] [--keys loss accuracy/top1] [--names A B ...] \
        [--title TITLE] [--json curves.json]

Each WORK_DIR is a ``tools/train.py`` work dir; the newest run in it (its
timestamped folder) is read from ``vis_data/scalars.json``. One panel per
key, one line per run, the legend names the runs (the work dir names unless
``--names`` is given). ``--json`` writes the curves that were drawn.
"""
import argparse
import json
import os.path as osp
from typing import List, Optional

from localvit_mm.analysis.curves import (curve_of, load_scalars, plot_curves,
                                         scalars_files, step_unit)
from localvit_mm.utils import UserInputError, run_main


def newest_run(work_dir: str) -> str:
    """The ``scalars.json`` of the newest run in ``work_dir``."""
    if not osp.isdir(work_dir):
        raise UserInputError(f'work dir {work_dir!r} not found: check the '
                             'path')
    files = scalars_files(work_dir)
    if not files:
        raise UserInputError(
            f'{work_dir!r} holds no run with vis_data/scalars.json: pass the '
            'work dir of a tools/train.py run')
    return files[-1]


def read_curves(work_dirs: List[str], names: List[str],
                keys: List[str]) -> tuple:
    """``{name: {key: [(step, value), ...]}}`` from the newest run of each
    work dir, and the label of each key's step axis; a key that no run
    logged is an error."""
    curves, units = {}, {key: set() for key in keys}
    for work_dir, name in zip(work_dirs, names):
        records = load_scalars(newest_run(work_dir))
        curves[name] = {key: curve_of(records, key) for key in keys}
        for key in keys:
            if curves[name][key]:
                units[key].add(step_unit(records, key))
    for key in keys:
        if not any(run[key] for run in curves.values()):
            raise UserInputError(f'no run logged {key!r}: choose --keys among '
                                 f'{sorted(logged_keys(work_dirs))}')
    # Runs that count a metric's steps differently share a 'step' axis.
    xlabels = {
        key: unit.pop() if len(unit) == 1 else 'step'
        for key, unit in units.items()
    }
    return curves, xlabels


def logged_keys(work_dirs: List[str]) -> set:
    """Every scalar name the newest runs of ``work_dirs`` logged."""
    keys = set()
    for work_dir in work_dirs:
        for record in load_scalars(newest_run(work_dir)):
            keys.update(record)
    return keys - {'step', 'epoch', 'iter'}


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Draw the curves of several runs in one PNG.')
    parser.add_argument('work_dirs', nargs='+', help='tools/train.py runs')
    parser.add_argument(
        '--out', default='curves.png', help='output PNG (default curves.png)')
    parser.add_argument(
        '--keys',
        nargs='+',
        default=['loss', 'accuracy/top1'],
        help='scalars to draw, one panel each (default loss accuracy/top1)')
    parser.add_argument(
        '--names', nargs='+', help='legend names (default: work dir names)')
    parser.add_argument('--title', help='figure title')
    parser.add_argument('--json', help='also write the curves drawn here')
    args = parser.parse_args(argv)

    names = args.names or [
        osp.basename(osp.normpath(d)) for d in args.work_dirs
    ]
    if len(names) != len(args.work_dirs):
        raise UserInputError(f'{len(names)} --names for '
                             f'{len(args.work_dirs)} work dirs: give one '
                             'name per work dir')
    if len(set(names)) != len(names):
        raise UserInputError(f'run names {names} repeat: give distinct '
                             '--names')
    curves, xlabels = read_curves(args.work_dirs, names, args.keys)
    width, height = plot_curves(curves, args.keys, args.out, args.title,
                                xlabels)
    for name, run in curves.items():
        points = ', '.join(f'{key}: {len(run[key])} points'
                           for key in args.keys)
        print(f'{name}: {points}')
    print(f'curves: {args.out} ({width}x{height})')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(curves, f, indent=2)


if __name__ == '__main__':
    run_main(main)

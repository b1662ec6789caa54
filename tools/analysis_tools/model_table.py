"""Parameters and MACs of every config beside the LocalViT paper's numbers,
checked against the metafiles, and the README model-zoo tables.

    python tools/analysis_tools/model_table.py [CONFIG ...] [--device cpu]
        [--update-metafiles] [--write-readme] [--check]

Prints the paper's Tables 1-5 with our counts beside the paper's (a '!'
marks a count that differs at the paper's precision), then every other
config at its test size, and the metafile numbers that differ from the
counts. ``--update-metafiles`` writes the counts into
``configs/*/metafile.yml``; ``--write-readme`` rewrites the README tables
between ``<!-- model-zoo:start -->`` and ``<!-- model-zoo:end -->`` from the
metafiles; ``--check`` exits with 1 when a metafile or the README is out of
date. Counting runs on the meta device (shapes only): all configs in
seconds. Details: :mod:`localvit_mm.analysis.model_table`.
"""
import argparse
import logging
import os.path as osp
import sys
import time
import warnings
from typing import List, Optional

warnings.filterwarnings('ignore')

from mmengine.logging import MMLogger

from localvit_mm.analysis import model_table as zoo


def parse_args(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Params and MACs of every config beside the paper.')
    parser.add_argument(
        'configs', nargs='*', help='configs to count (default: all)')
    parser.add_argument('--device', default='meta', choices=['meta', 'cpu'])
    parser.add_argument(
        '--update-metafiles',
        action='store_true',
        help='write the counted Parameters / FLOPs into the metafiles')
    parser.add_argument(
        '--write-readme',
        action='store_true',
        help='rewrite the README model-zoo tables from the metafiles')
    parser.add_argument(
        '--check',
        action='store_true',
        help='exit with 1 if a metafile or the README is out of date')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    MMLogger.get_current_instance().setLevel(logging.ERROR)
    configs = [
        osp.relpath(osp.abspath(c), zoo.REPO_ROOT) for c in args.configs
    ] or zoo.find_configs()
    start = time.perf_counter()
    measured = zoo.measure(configs, device=args.device)
    seconds = time.perf_counter() - start
    print(zoo.paper_report(measured))
    print(f'\n{len(configs)} configs counted in {seconds:.1f} s '
          f'on {args.device}')

    if args.update_metafiles:
        for metafile in sorted({e.metafile for e in zoo.load_zoo()}):
            if zoo.update_metafile(
                    osp.join(zoo.REPO_ROOT, metafile), measured):
                print(f'updated {metafile}')
    entries = zoo.load_zoo()
    stale = zoo.metafile_mismatches(entries, measured)
    for line in stale:
        print(f'metafile out of date: {line}')

    readme = osp.join(zoo.REPO_ROOT, 'README.md')
    with open(readme, encoding='utf-8') as f:
        text = f.read()
    tables = zoo.readme_tables(entries)
    if args.write_readme and zoo.readme_block(text) != tables:
        with open(readme, 'w', encoding='utf-8') as f:
            f.write(zoo.replace_readme_block(text, tables))
        print('rewrote the README model-zoo tables')
    elif zoo.readme_block(text) != tables:
        stale.append('README')
        print('README model-zoo tables out of date: run with --write-readme')
    return int(args.check and bool(stale))


if __name__ == '__main__':
    sys.exit(main())

"""Summaries of a grid of runs (model x training-set size x seed): the
markdown table with the mean and spread over seeds, and its PNG."""
import statistics
from typing import Dict, List, Sequence, Tuple

# (model, training images) -> top-1 of every seed
Grid = Dict[Tuple[str, int], List[float]]


def group_results(results: Sequence[dict]) -> Grid:
    """Top-1 of each (model, size) over its seeds, from run records with
    keys ``model``, ``size``, ``seed`` and ``top1``."""
    grid: Grid = {}
    for result in sorted(results, key=lambda r: r['seed']):
        grid.setdefault((result['model'], result['size']),
                        []).append(result['top1'])
    return grid


def mean_and_spread(values: Sequence[float]) -> Tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    spread = statistics.stdev(values) if len(values) > 1 else 0.
    return statistics.fmean(values), spread


def markdown_table(grid: Grid, models: Sequence[str],
                   sizes: Sequence[int]) -> str:
    """One row per model, one column per training-set size; each cell is
    ``mean ± std`` top-1 (%) over the seeds; a missing run is ``-``."""
    columns = ' | '.join(f'{size:,} images' for size in sizes)
    header = f'| model | {columns} |'
    lines = [header, '|---' * (len(sizes) + 1) + '|']
    for model in models:
        cells = []
        for size in sizes:
            values = grid.get((model, size))
            if values:
                mean, spread = mean_and_spread(values)
                cells.append(f'{mean:.2f} ± {spread:.2f}')
            else:
                cells.append('-')
        lines.append(f'| {model} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def plot_grid(grid: Grid,
              models: Sequence[str],
              sizes: Sequence[int],
              out: str,
              title: str = '',
              dpi: int = 120) -> None:
    """Top-1 against the number of training images (log scale), one line
    per model through the means, error bars from the lowest to the highest
    seed."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for model in models:
        points = [(size, grid[(model, size)]) for size in sizes
                  if (model, size) in grid]
        if not points:
            continue
        xs = [size for size, _ in points]
        means = [statistics.fmean(values) for _, values in points]
        low = [m - min(values) for m, (_, values) in zip(means, points)]
        high = [max(values) - m for m, (_, values) in zip(means, points)]
        ax.errorbar(
            xs, means, yerr=[low, high], marker='o', capsize=3, label=model)
    ax.set_xscale('log')
    ax.set_xticks(list(sizes), [f'{size:,}' for size in sizes])
    ax.set_xlabel('training images')
    ax.set_ylabel('top-1 on the 10,000 test images (%)')
    ax.grid(alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    plt.close(fig)

"""Training curves of mmengine runs: read ``vis_data/scalars.json`` and draw
several runs in one figure (LocalViT paper, Fig. 4: one panel per metric,
one line per run).

mmengine's ``LocalVisBackend`` writes one JSON record per line to
``WORK_DIR/TIMESTAMP/vis_data/scalars.json``: training records (``loss``,
``lr``...) at ``step`` = iteration, validation records (``accuracy/top1``,
``coco/bbox_mAP``, ``mIoU``...) at ``step`` = epoch or iteration, as the
run logs them.
"""
import glob
import json
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

Curve = List[Tuple[int, float]]

# Axis labels of the metrics the LocalViT runs log.
YLABELS = {
    'loss': 'training loss',
    'accuracy/top1': 'validation top-1 (%)',
    'accuracy/top5': 'validation top-5 (%)',
    'coco/bbox_mAP': 'validation box mAP',
    'coco/segm_mAP': 'validation mask mAP',
    'mIoU': 'validation mIoU (%)',
}


def scalars_files(work_dir: str) -> List[str]:
    """The ``scalars.json`` of every run in ``work_dir``, oldest first (the
    run folders are named by their start time)."""
    return sorted(
        glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))


def load_scalars(path: str) -> List[dict]:
    """The records of one ``scalars.json``, in the order they were
    logged."""
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def curve_of(records: Sequence[dict], key: str) -> Curve:
    """``(step, value)`` of every record that holds ``key``."""
    return [(record['step'], record[key]) for record in records
            if key in record]


def step_unit(records: Sequence[dict], key: str) -> str:
    """What the steps of ``key`` count: 'epoch' for a validation metric
    (its records carry no ``lr``) of a run trained by epochs (its training
    records carry ``epoch``), as mmengine's LoggerHook logs it by default;
    'iteration' otherwise."""
    logged = [record for record in records if key in record]
    validation = logged and all('lr' not in record for record in logged)
    by_epoch = any('epoch' in record for record in records if 'lr' in record)
    return 'epoch' if validation and by_epoch else 'iteration'


def plot_curves(curves: Dict[str, Dict[str, Curve]],
                keys: Sequence[str],
                out: str,
                title: Optional[str] = None,
                xlabels: Optional[Dict[str, str]] = None,
                panel_size: Tuple[float, float] = (6, 4),
                dpi: int = 120) -> Tuple[int, int]:
    """Draw one panel per metric in ``keys`` side by side, one line per run,
    and save the figure as a PNG.

    Args:
        curves (dict): ``{run name: {metric: [(step, value), ...]}}``; the
            run names make the legend, in this order.
        keys (Sequence[str]): Metrics to draw, one panel each.
        out (str): Output file (PNG).
        title (str, optional): Title of the figure (of the panel, when
            there is one). Defaults to None.
        xlabels (dict, optional): Label of the step axis of each metric
            (:func:`step_unit`); 'iteration' where missing.
            Defaults to None.
        panel_size (tuple[float, float]): Inches of one panel.
            Defaults to (6, 4).
        dpi (int): Resolution. Defaults to 120.

    Returns:
        tuple[int, int]: The image size in pixels, (width, height).
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    width, height = panel_size
    fig, axes = plt.subplots(
        1, len(keys), figsize=(width * len(keys), height), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, run in curves.items():
            points = run.get(key, [])
            steps, values = zip(*points) if points else ((), ())
            ax.plot(
                steps,
                values,
                marker='o' if len(points) <= 30 else None,
                markersize=4,
                label=name)
        ax.set_xlabel((xlabels or {}).get(key, 'iteration'))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(YLABELS.get(key, key))
        ax.grid(alpha=0.3)
        ax.legend()
    if title and len(keys) == 1:
        axes[0][0].set_title(title)
    elif title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=dpi)
    size = tuple(int(round(s)) for s in fig.get_size_inches() * dpi)
    plt.close(fig)
    return size

"""TensorBoard scalars beside mmengine's own logs, where it is installed."""
import importlib.util

from mmengine.config import Config, ConfigDict

TENSORBOARD_BACKEND = 'TensorboardVisBackend'


def tensorboard_installed() -> bool:
    return importlib.util.find_spec('tensorboard') is not None


def use_tensorboard_if_installed(cfg: Config) -> Config:
    """Add mmengine's TensorBoard backend to the config's visualizer when
    the ``tensorboard`` package is importable: the logged scalars (losses,
    learning rate, metrics) then also go to ``WORK_DIR/TIMESTAMP/vis_data``
    as event files for ``tensorboard --logdir``.

    A config opts out with ``log_to_tensorboard = False``; one whose
    visualizer already has the backend, or has no visualizer, is unchanged.
    """
    visualizer = cfg.get('visualizer')
    if not cfg.get('log_to_tensorboard', True) or not visualizer or \
            not tensorboard_installed():
        return cfg
    backends = list(visualizer.get('vis_backends') or [])
    if all(b.get('type') != TENSORBOARD_BACKEND for b in backends):
        backends.append(ConfigDict(type=TENSORBOARD_BACKEND))
    visualizer.vis_backends = backends
    return cfg

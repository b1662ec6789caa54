"""Image loading that names the file it cannot read, or skips it.

mmcv's ``LoadImageFromFile`` fails on a corrupt or empty image with an
assertion or an OpenCV error, deep in a DataLoader worker, sometimes without
the file's name. :class:`CheckedLoadImageFromFile` replaces it under the
same registry name, in mmengine's registry and in those of the codebases
that register mmcv's class again (mmpretrain), so configs, dumped configs and
the codebases' inferencers keep working unchanged. It raises one line that
names the file, or, with ``skip_bad=True`` in a training pipeline, skips the
image and counts it.
"""
import importlib
import logging

from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmengine.registry import TRANSFORMS

from .errors import UserInputError


class CorruptImageError(UserInputError):
    """An image of a dataset cannot be read."""


class CheckedLoadImageFromFile(LoadImageFromFile):
    """mmcv's ``LoadImageFromFile`` with a clear error for a bad image.

    Args:
        skip_bad (bool): Skip an image that cannot be read instead of
            stopping: the transform returns None, so mmengine's dataset
            draws another sample (training pipelines only; a test-mode
            dataset refuses a skipped sample). Each skip is logged with the
            file and the count so far. Defaults to False.
        **kwargs: The arguments of mmcv's ``LoadImageFromFile``.
    """

    def __init__(self, skip_bad: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.skip_bad = skip_bad
        self.skipped = 0

    def transform(self, results: dict):
        try:
            return super().transform(results)
        except OSError as error:
            reason = error.strerror or str(error)
        except Exception:  # mmcv: an assertion or an OpenCV/PIL error
            reason = 'not a readable image'
        path = results['img_path']
        if not self.skip_bad:
            raise CorruptImageError(
                f'image {path!r} cannot be read ({reason}): replace or '
                'delete it, or skip such images in training with '
                "dict(type='LoadImageFromFile', skip_bad=True) in the train "
                'pipeline') from None
        self.skipped += 1
        print_log(
            f'skipped image {path!r} ({reason}); {self.skipped} skipped so '
            'far by this data process',
            logger='current',
            level=logging.WARNING)
        return None


# The codebases that register mmcv's LoadImageFromFile in their own registry,
# and the module that does it (imported first: a later registration of
# mmcv's class under a taken name would fail).
REGISTERING_MMCV_LOADER = {'mmpretrain': 'mmpretrain.datasets.transforms'}


def register_checked_image_loading():
    """Put :class:`CheckedLoadImageFromFile` under the name
    ``LoadImageFromFile`` in mmengine's registry and in every installed
    codebase's that holds mmcv's class."""
    registries = [TRANSFORMS]
    for codebase, module in REGISTERING_MMCV_LOADER.items():
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        registries.append(
            importlib.import_module(f'{codebase}.registry').TRANSFORMS)
    for registry in registries:
        registry.register_module(
            'LoadImageFromFile', force=True, module=CheckedLoadImageFromFile)


register_checked_image_loading()

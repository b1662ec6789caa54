"""The model zoo, known to the OpenMMLab entry points by name.

``model-index.yml`` imports one metafile per family (``configs/*/
metafile.yml``). Importing :mod:`localvit_mm` registers the image
classification metafiles with mmpretrain's ``ModelHub``, so::

    import localvit_mm  # noqa: F401
    from mmpretrain import get_model, list_models
    list_models('*localvit*')
    model = get_model('localvit-tiny_8xb128_in1k', pretrained='ckpt.pth')

The detection and segmentation metafiles stay out: ``ModelHub`` builds every
model in mmpretrain's scope. ``mim search localvit_mm`` reads the whole index
from an installed package (``localvit_mm/.mim``, see setup.py).
"""
import os.path as osp
from typing import List, Optional

import yaml

PACKAGE_DIR = osp.dirname(osp.abspath(__file__))
CLASSIFICATION = 'Image Classification'


def model_index_path() -> Optional[str]:
    """``model-index.yml`` of an installed package (``.mim``) or of the
    source tree (an editable install); None if neither is there."""
    for root in (osp.join(PACKAGE_DIR, '.mim'), osp.dirname(PACKAGE_DIR)):
        path = osp.join(root, 'model-index.yml')
        if osp.isfile(path):
            return path
    return None


def read_metafiles(index_path: str) -> dict:
    """{metafile path relative to the index: its parsed content}."""
    root = osp.dirname(index_path)
    with open(index_path, encoding='utf-8') as f:
        imports = yaml.safe_load(f)['Import']
    metafiles = {}
    for metafile in imports:
        with open(osp.join(root, metafile), encoding='utf-8') as f:
            metafiles[metafile] = yaml.safe_load(f)
    return metafiles


def model_tasks(model: dict) -> set:
    """The tasks a metafile model entry reports results for."""
    return {result['Task'] for result in model.get('Results') or []}


def is_classification(metafile: dict) -> bool:
    """A metafile whose models report image classification results only."""
    tasks = set().union(*map(model_tasks, metafile['Models']))
    return tasks == {CLASSIFICATION}


def register_model_index(index_path: Optional[str] = None) -> List[str]:
    """Register the classification metafiles of the index with mmpretrain's
    ``ModelHub`` (once; nothing without mmpretrain or an index).

    Returns:
        list[str]: The names of the models registered by this call.
    """
    index_path = index_path or model_index_path()
    try:
        from mmpretrain.apis import ModelHub
    except ImportError:
        return []
    if index_path is None:
        return []
    root = osp.dirname(index_path)
    registered = []
    for path, metafile in read_metafiles(index_path).items():
        names = [model['Name'].lower() for model in metafile['Models']]
        if not is_classification(metafile) or all(map(ModelHub.has, names)):
            continue
        ModelHub.register_model_index(osp.join(root, path), config_prefix=root)
        registered += names
    return registered


register_model_index()

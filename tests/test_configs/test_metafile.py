"""The model zoo (model-index.yml) points at real configs with exact sizes."""
import glob
import os.path as osp

import pytest
import yaml
from conftest import REPO

from localvit_mm.utils import load_config


def zoo_models():
    with open(osp.join(REPO, 'model-index.yml')) as f:
        metafiles = yaml.safe_load(f)['Import']
    models = []
    for metafile in metafiles:
        with open(osp.join(REPO, metafile)) as f:
            models += yaml.safe_load(f)['Models']
    return models


MODELS = zoo_models()


def test_zoo_imports_every_metafile():
    """Each configs/*/metafile.yml is imported once; names are unique."""
    with open(osp.join(REPO, 'model-index.yml')) as f:
        imports = yaml.safe_load(f)['Import']
    assert sorted(imports) == sorted(
        osp.relpath(path, REPO)
        for path in glob.glob(osp.join(REPO, 'configs/*/metafile.yml')))
    names = [m['Name'] for m in MODELS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize('entry', MODELS, ids=[m['Name'] for m in MODELS])
def test_entry_matches_its_config(entry):
    from mmpretrain.apis import get_model
    config = osp.join(REPO, entry['Config'])
    assert osp.isfile(config), config
    model = get_model(load_config(config), device='meta')
    params = sum(p.numel() for p in model.parameters())
    assert params == entry['Metadata']['Parameters']

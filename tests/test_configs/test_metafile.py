"""The model zoo: model-index.yml imports a metafile per family, every entry
holds what the tools count for its config, every config builds, and the
README tables are the generated ones."""
import glob
import os.path as osp

import pytest
import yaml
from conftest import REPO

from localvit_mm.analysis.complexity import (build_for_counting,
                                             config_complexity)
from localvit_mm.analysis.model_table import (cached_package_metafiles,
                                              find_configs, input_size,
                                              load_zoo, paper_rows,
                                              readme_block, readme_tables,
                                              same_as_paper)
from localvit_mm.utils import load_config

pytestmark = pytest.mark.usefixtures('restore_default_scope')

ZOO = load_zoo(REPO)
BY_CONFIG = {entry.config: entry for entry in ZOO}
CONFIGS = find_configs(REPO)
PAPER = paper_rows()
RELEASE = 'https://github.com/ofsoundof/LocalViT/releases/download/v1.0.0/'
CONVERTER = 'python tools/model_converters/localvit_to_mmpretrain.py '
FOREST = 'DeepForest tree crowns'


def read_yaml(path):
    with open(osp.join(REPO, path)) as f:
        return yaml.safe_load(f)


def test_zoo_imports_every_metafile():
    """Each configs/*/metafile.yml is imported once; names are unique and
    are their configs' names."""
    imports = read_yaml('model-index.yml')['Import']
    assert sorted(imports) == sorted(
        osp.relpath(path, REPO)
        for path in glob.glob(osp.join(REPO, 'configs/*/metafile.yml')))
    assert {osp.basename(osp.dirname(m))
            for m in imports} == {
                'localvit', 'localvit_pvt', 'localvit_tnt', 'localvit_t2t',
                'localvit_swin', 'quickstart', 'detection', 'segmentation'
            }
    names = [entry.name for entry in ZOO]
    assert len(names) == len(set(names)) == len(BY_CONFIG)
    for entry in ZOO:
        if entry.config != 'configs/localvit_pvt_t.py':  # one out of place
            assert entry.name == osp.splitext(osp.basename(entry.config))[0]


def test_collections_cite_the_paper_and_the_code():
    for metafile in read_yaml('model-index.yml')['Import']:
        for collection in read_yaml(metafile)['Collections']:
            assert collection['Paper'] == dict(
                Title='LocalViT: Bringing Locality to Vision Transformers',
                URL='https://arxiv.org/abs/2104.05707')
            assert collection['Code'] == dict(
                URL='https://github.com/ofsoundof/LocalViT', Version='v1.0.0')


@pytest.mark.parametrize('entry', ZOO, ids=[e.name for e in ZOO])
def test_entry_is_complete(entry):
    collections = [c['Name'] for c in read_yaml(entry.metafile)['Collections']]
    assert entry.model['In Collection'] in collections
    assert osp.isfile(osp.join(REPO, entry.config))
    assert entry.training_data
    for result in entry.results:
        assert set(result) == {'Task', 'Dataset', 'Metrics'}
        assert result['Dataset'] == entry.training_data
    official = entry.model.get('Converted From')
    if official:
        release_file = official['Weights'][len(RELEASE):]
        assert official['Weights'] == RELEASE + release_file
        assert official['Code'] == 'https://github.com/ofsoundof/LocalViT'
        assert official['Command'] == \
            f"{CONVERTER}{release_file} {entry.model['Weights']}"


def test_official_checkpoints_and_our_runs():
    """The released files are in the zoo, and our own measured runs with
    the numbers the README states, marked by their dataset."""
    official = {
        e.name: e.model['Converted From']['Weights'].rpartition('/')[2]
        for e in ZOO if 'Converted From' in e.model
    }
    assert official == {
        'localvit-tiny_8xb128_in1k': 'localvit_t.pth',
        'localvit-tiny-se4_8xb128_in1k': 'localvit_t_se4.pth',
        'localvit-small_8xb128_in1k': 'localvit_s.pth',
        'localvit-pvt-t_8xb128_in1k': 'localvit_pvt.pth',
        'localvit-tnt-t_8xb128_in1k': 'localvit_tnt.pth',
        'localvit-swin-t_8xb128_in1k': 'localvit_swin.pth',
    }
    ours = {
        (e.name, r['Dataset']): r['Metrics']
        for e in ZOO
        for r in e.results if r['Metrics'] and r['Dataset'] != 'ImageNet-1k'
    }
    assert ours == {
        ('localvit-tiny_2xb32_fashion-mnist', 'Fashion-MNIST'): {
            'Top 1 Accuracy': 80.95
        },
        ('deit-tiny_2xb32_fashion-mnist', 'Fashion-MNIST'): {
            'Top 1 Accuracy': 46.8
        },
        ('retinanet_localvit-pvt-t_fpn_deepforest', FOREST): {
            'box AP': 3.1,
            'box AP50': 13.2
        },
        ('fpn_localvit-pvt-t_labelme', 'labelme masks'): {
            'mIoU': 50.4
        },
        ('dpt_localvit-tiny_labelme', 'labelme masks'): {
            'mIoU': 55.2
        },
        ('retinanet_localvit-tiny_simple-pyramid_deepforest', FOREST): {
            'box AP': 0.8,
            'box AP50': 4.4
        },
    }


def test_imagenet_top1_is_the_papers():
    """Where the paper tables give a top-1, the metafile holds the same."""
    checked = 0
    for entry in ZOO:
        row = PAPER.get(entry.config)
        for result in entry.results:
            if row and 'Top 1 Accuracy' in result['Metrics']:
                assert result['Metrics']['Top 1 Accuracy'] == row.top1
                checked += 1
    assert checked == 12


def test_readme_tables_are_generated():
    with open(osp.join(REPO, 'README.md'), encoding='utf-8') as f:
        readme = f.read()
    assert readme_block(readme) == readme_tables(ZOO)


@pytest.fixture(scope='module')
def package_metafiles():
    with cached_package_metafiles():
        yield


@pytest.mark.parametrize('config', CONFIGS)
def test_config_builds_and_counts(config, package_metafiles):
    """Every config builds its model; a zoo entry's numbers are what the
    tools count for its config at its test size, and they are the paper's
    where the paper gives them (at its precision)."""
    cfg = load_config(osp.join(REPO, config))
    entry, row = BY_CONFIG.get(config), PAPER.get(config)
    if entry or (row and row.macs):
        info = config_complexity(cfg)
        model, params = info['model'], info['params']
    else:  # nothing to compare MACs with: building is the check
        model = build_for_counting(cfg)
        params = sum(p.numel() for p in model.parameters())
    assert type(model).__name__ == cfg.model.type
    if entry:
        metadata = entry.model['Metadata']
        assert (metadata['Parameters'], metadata['FLOPs']) == \
            (params, info['flops'])
        if 'Input Size' in metadata:
            assert metadata['Input Size'] == input_size(info['input_shape'])
        else:
            assert info['input_shape'] == (3, 224, 224)
    if row and row.params is not None:
        if row.model == 'LocalViT-T2T':  # two unused official LayerNorms
            assert row.params - params == 2 * 128
        else:
            assert same_as_paper(params, row.params, 1e6)
    if row and row.macs is not None:
        assert same_as_paper(info['flops'], row.macs, 1e9)

"""The model zoo in numbers: every config's parameters and MACs beside the
LocalViT paper's, and the README tables generated from the metafiles.

The metafiles (``configs/*/metafile.yml``, imported by ``model-index.yml``)
are the single source of the zoo: parameters and MACs as
:func:`~localvit_mm.analysis.complexity.config_complexity` counts them,
results, weights and conversion. :data:`PAPER_TABLES` holds the paper's own
numbers (Tables 1-5 of LocalViT, arXiv 2104.05707) to print ours beside.
``tools/analysis_tools/model_table.py`` is the command line.
"""
import contextlib
import glob
import os.path as osp
import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Union

REPO_ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
README_START = '<!-- model-zoo:start -->'
README_END = '<!-- model-zoo:end -->'
IMAGENET = 'ImageNet-1k'


class PaperRow(NamedTuple):
    """One row of a paper table: its model, our config, its numbers.

    ``params`` is an exact count (int) or the paper's rounded text ('5.78M');
    ``macs`` the paper's text ('1.266G'); None where the paper gives none.
    """
    model: str
    config: Optional[str]
    params: Union[int, str, None] = None
    macs: Optional[str] = None
    top1: Optional[float] = None


def _cfg(name: str, family: str = 'localvit') -> str:
    return f'configs/{family}/{name}_8xb128_in1k.py'


def _ablation(name: str) -> str:
    return f'configs/localvit/ablations/{name}_8xb128_in1k.py'


TINY = _cfg('localvit-tiny')
PAPER_TABLES = (
    ('Table 1: conv FFN with ReLU6, expansion ratio 4 / 6 (DeiT-T based)', (
        PaperRow('DeiT-T, ratio 4', _cfg('deit-tiny'), 5_717_416, '1.254G',
                 72.2),
        PaperRow('DeiT-T, ratio 6', _ablation('deit-tiny-mlp6'), None, None,
                 73.1),
        PaperRow('conv FFN without DW, ratio 4',
                 _ablation('localvit-tiny-relu6-nodw'), None, None, 72.5),
        PaperRow('conv FFN without DW, ratio 6',
                 _ablation('localvit-tiny-relu6-mlp6-nodw'), None, None, 74.3),
        PaperRow('LocalViT-T ReLU6, ratio 4', _ablation('localvit-tiny-relu6'),
                 None, None, 73.7),
        PaperRow('LocalViT-T ReLU6, ratio 6',
                 _ablation('localvit-tiny-relu6-mlp6'), 7_655_080, '1.621G',
                 76.1),
    )),
    ('Table 2: activation and channel attention (LocalViT-T)', (
        PaperRow('h-swish', _ablation('localvit-tiny-hs'), 5_825_704, None,
                 74.4),
        PaperRow('h-swish + ECA', _ablation('localvit-tiny-hs-eca'), 5_825_764,
                 None, 74.5),
        PaperRow('h-swish + ECA, h-sigmoid gate',
                 _ablation('localvit-tiny-hs-ecah'), 5_825_764),
        PaperRow('h-swish + SE, reduction 192', TINY, 5_908_696, '1.266G',
                 74.8),
        PaperRow('h-swish + SE, reduction 96', _ablation('localvit-tiny-se96'),
                 '5.982M', None, 74.8),
        PaperRow('h-swish + SE, reduction 48', _ablation('localvit-tiny-se48'),
                 '6.130M', None, 75.0),
        PaperRow('h-swish + SE, reduction 4 (LocalViT-T-SE4)',
                 _cfg('localvit-tiny-se4'), 9_376_168, '1.270G', 75.8),
    )),
    ('Table 3: placement of the locality (LocalViT-T)', (
        PaperRow('layers 1-4', _ablation('localvit-tiny-layers1-4'), '5.78M',
                 None, 73.1),
        PaperRow('layers 5-8', _ablation('localvit-tiny-layers5-8'), '5.78M',
                 None, 72.1),
        PaperRow('layers 9-12', _ablation('localvit-tiny-layers9-12'), '5.78M',
                 None, 69.1),
        PaperRow('layers 1-8', _ablation('localvit-tiny-layers1-8'), '5.84M',
                 None, 74.0),
        PaperRow('layers 1-12', TINY, '5.91M', None, 74.8),
    )),
    ('Table 4: expansion ratio (LocalViT-T, SE keeping 4 channels)', (
        PaperRow('ratio 1', _ablation('localvit-tiny-mlp1'), '3.102M'),
        PaperRow('ratio 2', _ablation('localvit-tiny-mlp2'), '4.038M'),
        PaperRow('ratio 3', _ablation('localvit-tiny-mlp3'), '4.973M'),
        PaperRow('ratio 4', TINY, 5_908_696, '1.266G', 74.8),
        PaperRow('ratio 6', _ablation('localvit-tiny-mlp6')),
    )),
    ('Table 5: LocalViT against its baselines (ImageNet-1k, 224x224)', (
        PaperRow('DeiT-T', _cfg('deit-tiny'), 5_717_416, '1.254G', 72.2),
        PaperRow('LocalViT-T', TINY, 5_908_696, '1.266G', 74.8),
        PaperRow('LocalViT-T-SE4', _cfg('localvit-tiny-se4'), 9_376_168,
                 '1.270G', 75.8),
        PaperRow('DeiT-S', None, 22_050_664, '4.599G', 79.8),
        PaperRow('LocalViT-S', _cfg('localvit-small'), 22_433_176, '4.617G',
                 80.8),
        PaperRow('PVT-T', _cfg('pvt-t', 'localvit_pvt'), 13_229_288, '1.933G',
                 75.1),
        PaperRow('LocalViT-PVT', 'configs/localvit_pvt_t.py', 13_456_152,
                 '1.978G', 78.2),
        PaperRow('TNT-T', _cfg('tnt-t', 'localvit_tnt'), 6_069_784, None,
                 73.6),
        PaperRow('LocalViT-TNT', _cfg('localvit-tnt-t', 'localvit_tnt'),
                 6_261_064, '1.42G', 75.9),
        PaperRow('T2T-ViT-7', _cfg('t2t-vit-7', 'localvit_t2t'), '4.3M', None,
                 71.7),
        PaperRow('LocalViT-T2T', _cfg('localvit-t2t-vit-7', 'localvit_t2t'),
                 4_330_858, '1.2G', 72.5),
        PaperRow('Swin-T (Swin recipe: 81.3)', _cfg('swin-t', 'localvit_swin'),
                 28_288_354),
        PaperRow('LocalViT-Swin-T (official release, not in the paper)',
                 _cfg('localvit-swin-t', 'localvit_swin'), 29_079_010, '4.54G',
                 81.86),
    )),
)


def paper_rows() -> Dict[str, PaperRow]:
    """{config: its first paper row} over all tables."""
    rows = {}
    for _, table in PAPER_TABLES:
        for row in table:
            if row.config:
                rows.setdefault(row.config, row)
    return rows


def same_as_paper(ours: int, paper: Union[int, str, None],
                  unit: float) -> Optional[bool]:
    """Whether a count equals the paper's, at the precision the paper gives
    ('5.78M': two decimals of millions); None where it gives none."""
    if paper is None:
        return None
    if isinstance(paper, int):
        return ours == paper
    digits = paper.lstrip('~')[:-1]
    decimals = len(digits.partition('.')[2])
    return round(ours / unit, decimals) == float(digits)


def find_configs(root: str = REPO_ROOT) -> List[str]:
    """Every config under configs/ except the ``_base_`` parts, relative to
    ``root``."""
    paths = glob.glob(osp.join(root, 'configs', '**', '*.py'), recursive=True)
    return sorted(
        osp.relpath(p, root) for p in paths
        if '_base_' not in osp.relpath(p, root).split(osp.sep))


@contextlib.contextmanager
def cached_package_metafiles():
    """Read each metafile of an installed codebase once.

    For every ``mmdet::`` / ``mmseg::`` base config, mmengine reads all of
    that codebase's metafiles (about 200 files, 0.8 s) to look for a model
    of that name first; over all our configs that is most of the time.
    """
    from mmengine.config import utils as config_utils
    load = config_utils.load
    cache = {}

    def cached_load(path, *args, **kwargs):
        key = (str(path), args, tuple(sorted(kwargs.items())))
        if key not in cache:
            cache[key] = load(path, *args, **kwargs)
        return cache[key]

    config_utils.load = cached_load
    try:
        yield
    finally:
        config_utils.load = load


def measure(configs: Sequence[str],
            root: str = REPO_ROOT,
            device: str = 'meta') -> Dict[str, dict]:
    """{config: ``config_complexity`` of it} (params, flops, input_shape)."""
    from localvit_mm.utils import load_config
    from .complexity import config_complexity
    results = {}
    with cached_package_metafiles():
        for config in configs:
            cfg = load_config(osp.join(root, config))
            results[config] = config_complexity(cfg, device=device)
    return results


class ZooEntry(NamedTuple):
    """A model of the metafiles, with its training data (its own or its
    collection's) and task (its results', or its metafile's)."""
    metafile: str
    model: dict
    training_data: str
    task: str

    @property
    def name(self) -> str:
        return self.model['Name']

    @property
    def config(self) -> str:
        return self.model['Config']

    @property
    def params(self) -> int:
        return self.model['Metadata']['Parameters']

    @property
    def flops(self) -> int:
        return self.model['Metadata']['FLOPs']

    @property
    def results(self) -> list:
        return self.model.get('Results') or []

    @property
    def tasks(self) -> str:
        return ', '.join(dict.fromkeys(r['Task'] for r in self.results))


def load_zoo(root: str = REPO_ROOT) -> List[ZooEntry]:
    """Every model of the metafiles ``model-index.yml`` imports, in order."""
    from localvit_mm.zoo import model_tasks, read_metafiles
    entries = []
    metafiles = read_metafiles(osp.join(root, 'model-index.yml'))
    for path, metafile in metafiles.items():
        data = {
            c['Name']: c.get('Metadata', {}).get('Training Data')
            for c in metafile.get('Collections', [])
        }
        tasks = set().union(*map(model_tasks, metafile['Models']))
        for model in metafile['Models']:
            training = model.get('Metadata', {}).get('Training Data') or \
                data.get(model.get('In Collection'))
            task = next(iter(model_tasks(model) or tasks))
            entries.append(ZooEntry(path, model, training, task))
    return entries


def _millions(count: int) -> str:
    return f'{count / 1e6:.2f}M'


def _giga(count: int) -> str:
    return f'{count / 1e9:.3f}G'


def _value(value, fmt) -> str:
    return '-' if value is None else fmt(value)


def paper_report(measured: Dict[str, dict]) -> str:
    """The paper's Tables 1-5 with our params and MACs beside, then every
    other measured config. A '!' marks a count that differs from the
    paper's at the paper's precision."""
    lines = []
    header = (f"{'model':<46}{'params':>12}{'paper':>12}{'MACs':>10}"
              f"{'paper':>9}{'top-1':>7}  config")
    listed = set()
    for title, rows in PAPER_TABLES:
        lines += ['', title, header, '-' * len(header)]
        for row in rows:
            info = measured.get(row.config)
            listed.add(row.config)
            params = flops = '-'
            if info:
                mark = same_as_paper(info['params'], row.params, 1e6)
                params = f"{info['params']:,}" + ('!' if mark is False else '')
                mark = same_as_paper(info['flops'], row.macs, 1e9)
                flops = _giga(info['flops']) + ('!' if mark is False else '')
            paper_params = _value(
                row.params, lambda p: p if isinstance(p, str) else f'{p:,}')
            lines.append(f'{row.model:<46}{params:>12}{paper_params:>12}'
                         f"{flops:>10}{row.macs or '-':>9}"
                         f"{_value(row.top1, str):>7}  "
                         f"{row.config or '(no config)'}")
    others = [c for c in measured if c not in listed]
    if others:
        header = f"{'config':<74}{'params':>12}{'MACs':>12}  input"
        lines += [
            '', 'Other configs (no paper numbers)', header, '-' * len(header)
        ]
        for config in others:
            info = measured[config]
            lines.append(f"{config:<74}{info['params']:>12,}"
                         f"{_giga(info['flops']):>12}  "
                         f"{'x'.join(map(str, info['input_shape']))}")
    return '\n'.join(lines[1:])


def metafile_mismatches(entries: Sequence[ZooEntry],
                        measured: Dict[str, dict]) -> List[str]:
    """One line per metafile number that differs from the count."""
    lines = []
    for entry in entries:
        info = measured.get(entry.config)
        if info is None:
            continue
        for key, value in (('Parameters', info['params']), ('FLOPs',
                                                            info['flops']),
                           ('Input Size', input_size(info['input_shape']))):
            stated = entry.model['Metadata'].get(key)
            if key == 'Input Size' and stated is None:
                continue
            if stated != value:
                lines.append(f'{entry.metafile}: {entry.name} {key} '
                             f'{stated} != {value} counted')
    return lines


def input_size(shape: Sequence[int]) -> str:
    """'HxW' of a (C, H, W) shape; 'HxW, C channel(s)' unless C is 3."""
    size = f'{shape[1]}x{shape[2]}'
    if shape[0] == 3:
        return size
    return f"{size}, {shape[0]} channel{'s' if shape[0] > 1 else ''}"


def update_metafile(path: str, measured: Dict[str, dict]) -> bool:
    """Write the counted Parameters / FLOPs (and Input Size, where the entry
    states one) into a metafile, keeping its layout and comments."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().split('\n')
    config = None
    changed = False
    for i, line in enumerate(lines):
        match = re.match(r'\s*Config: (\S+)', line)
        if match:
            config = match.group(1)
        match = re.match(r'(\s*)(Parameters|FLOPs|Input Size): (.+)$', line)
        if match and config in measured:
            info = measured[config]
            value = dict(
                Parameters=info['params'],
                FLOPs=info['flops'],
                **{'Input Size':
                   input_size(info['input_shape'])})[match.group(2)]
            new = f'{match.group(1)}{match.group(2)}: {value}'
            changed |= new != line
            lines[i] = new
        if re.match(r'\s*- Name: ', line):
            config = None
    if changed:
        with open(path, 'w', encoding='utf-8') as f:
            f.write('\n'.join(lines))
    return changed


def _metrics(result: dict) -> str:
    return ', '.join(f'{k} {v}' for k, v in result['Metrics'].items())


def _official(entry: ZooEntry) -> str:
    source = entry.model.get('Converted From', {}).get('Weights')
    if not source:
        return '-'
    return f'[`{source.rpartition("/")[2]}`]({source})'


def _top1(entry: ZooEntry) -> str:
    values = [
        r['Metrics']['Top 1 Accuracy'] for r in entry.results
        if 'Top 1 Accuracy' in r['Metrics']
    ]
    return str(values[0]) if values else '-'


def readme_tables(entries: Sequence[ZooEntry]) -> str:
    """The README model-zoo tables, from the metafiles only."""
    paper = paper_rows()
    imagenet, others, dense = [], [], []
    for entry in entries:
        if entry.task != 'Image Classification':
            dense.append(entry)
        elif entry.training_data == IMAGENET:
            imagenet.append(entry)
        else:
            others.append(entry)
    lines = [
        README_START,
        '<!-- Generated from the metafiles by '
        'tools/analysis_tools/model_table.py --write-readme: edit those. -->',
        '',
        '| model | config | params | MACs | top-1 | official weights |',
        '|---|---|---|---|---|---|',
    ]
    for entry in imagenet:
        row = paper.get(entry.config)
        star = ' *' if row and same_as_paper(entry.params, row.params,
                                             1e6) is False else ''
        top1 = _top1(entry)
        if top1 != '-' and (row is None or row.top1 is None
                            or 'official release' in row.model):
            top1 += ' (official release)'
        lines.append(f'| {entry.name} | `{entry.config}` | '
                     f'{entry.params:,}{star} | {_giga(entry.flops)} | '
                     f'{top1} | {_official(entry)} |')
    if others:
        lines += [
            '', 'Trained here (`bash tools/quickstart.sh`), top-1 on the '
            'test split:', '',
            '| model | config | data | params | MACs (input) | top-1 |',
            '|---|---|---|---|---|---|'
        ]
        for entry in others:
            lines.append(
                f'| {entry.name} | `{entry.config}` | {entry.training_data} '
                f'| {entry.params:,} | {_giga(entry.flops)} '
                f"({entry.model['Metadata']['Input Size']}) | {_top1(entry)} |"
            )
    if dense:
        lines += [
            '', 'Detection and segmentation (MACs of the network at the '
            "config's test size; results of the runs on real data below):", '',
            '| config | task | data | params | MACs (input) | result |',
            '|---|---|---|---|---|---|'
        ]
        for entry in dense:
            result = '; '.join(
                _metrics(r) for r in entry.results if r.get('Metrics')) or '-'
            size = entry.model['Metadata']['Input Size']
            lines.append(f'| `{entry.config}` | {entry.tasks} | '
                         f'{entry.training_data} | {entry.params:,} | '
                         f'{_giga(entry.flops)} ({size}) | {result} |')
    lines.append(README_END)
    return '\n'.join(lines)


def readme_block(text: str) -> str:
    """The model-zoo block of a README, markers included."""
    start, end = text.index(README_START), text.index(README_END)
    return text[start:end + len(README_END)]


def replace_readme_block(text: str, block: str) -> str:
    return text.replace(readme_block(text), block)

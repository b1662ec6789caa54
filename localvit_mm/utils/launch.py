"""What ``tools/train.py`` and ``tools/test.py`` share: the config's scope,
input checks, and running on GPUs (nccl) or CPUs (gloo) alike."""
import importlib
import os
import os.path as osp
import subprocess
from datetime import timedelta
from typing import Optional, Sequence

import torch
import torch.distributed as dist
from mmengine.config import Config, ConfigDict, DictAction

from .checks import (build_model, check_checkpoint_fits, check_first_samples,
                     check_pretrained)
from .errors import UserInputError
from .safe_checkpoint import register_safe_checkpoint_loader, safe_load

SCOPES = ('mmpretrain', 'mmdet', 'mmseg')
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')


def add_launch_args(parser):
    """The arguments train.py and test.py share: overrides and launcher."""
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, e.g. train_cfg.max_iters=100')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_launch_args(parser):
    """Parse the arguments; export LOCAL_RANK for the older launchers."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def set_work_dir(cfg: Config, work_dir: str, config_path: str):
    """``--work-dir``, else the config's, else work_dirs/CONFIG_NAME."""
    if work_dir is not None:
        cfg.work_dir = work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(config_path))[0])


def _config_error(path: str, error: Exception) -> UserInputError:
    """The one-line error for a config (or one of its bases) that cannot be
    read: the file and line of a syntax error or of the failing statement,
    else the exception."""
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    if isinstance(error, SyntaxError):
        # mmengine parses each file of the _base_ chain in a function that
        # holds its name.
        files = [
            f.f_locals['filename'] for f in frames
            if f.f_globals.get('__name__', '').startswith('mmengine.config')
            and isinstance(f.f_locals.get('filename'), str)
        ]
        if error.lineno is None and isinstance(error.__context__, SyntaxError):
            error = error.__context__
        where = osp.normpath(files[-1]) if files else path
        return UserInputError(f'config {where!r} line {error.lineno}: '
                              f'{error.msg}: fix the syntax there')
    while isinstance(error, ImportError) and isinstance(
            error.__cause__ or error.__context__, ImportError):
        error = error.__cause__ or error.__context__  # the module missing
    statements = [(f.f_code.co_filename, f.f_lineno) for f in frames
                  if f.f_code.co_name == '<module>']
    where = f'config {statements[-1][0]!r} line {statements[-1][1]}' \
        if statements else f'config {path!r}'
    return UserInputError(
        f'{where} cannot be read: {type(error).__name__}: '
        f"{' '.join(str(error).split())}: fix it (and its _base_ files and "
        'custom_imports)')


def load_config(path: str, cfg_options: dict = None) -> Config:
    """Read a config, check its ``default_scope`` and register that
    codebase's modules."""
    if not osp.isfile(path):
        raise UserInputError(f'config {path!r} not found: check the path '
                             '(the configs live under configs/)')
    try:
        cfg = Config.fromfile(path)
    except Exception as error:  # every failure to read it is the config's
        raise _config_error(path, error) from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except (TypeError, KeyError, ValueError) as error:
            raise UserInputError(f'--cfg-options do not apply to {path!r}: '
                                 f"{' '.join(str(error).split())}") from None
    scope = cfg.get('default_scope')
    if scope is None:
        raise UserInputError(
            f'config {path!r} sets no default_scope: add one of '
            f"default_scope = {' / '.join(map(repr, SCOPES))}, or inherit a "
            '_base_ runtime config that sets it')
    if scope not in SCOPES:
        raise UserInputError(
            f'config {path!r} has default_scope={scope!r}, which these tools '
            f"do not run: use one of {', '.join(map(repr, SCOPES))}")
    importlib.import_module(f'{scope}.utils').register_all_modules(True)
    # Also cover checkpoint schemes registered by the custom_imports.
    register_safe_checkpoint_loader()
    return cfg


def _datasets(cfg: dict):
    """Yield a dataset config and every dataset it wraps."""
    if not isinstance(cfg, dict):
        return
    yield cfg
    yield from _datasets(cfg.get('dataset'))
    for inner in cfg.get('datasets', []):
        yield from _datasets(inner)


def check_data_roots(cfg: Config, loaders=DATALOADERS):
    """Fail early, before a work dir is touched, on a missing data folder or
    annotation file."""
    for key in loaders:
        for dataset in _datasets((cfg.get(key) or {}).get('dataset')):
            root = dataset.get('data_root')
            if root and not osp.isdir(root):
                raise UserInputError(
                    f'data folder {root!r} of {key} not found: prepare it '
                    'with the matching script in tools/data/ (e.g. '
                    'tools/data/prepare_fashion_mnist.sh) or point to it '
                    f'with --cfg-options {key}.dataset.data_root=PATH')
            ann_file = dataset.get('ann_file')
            if isinstance(ann_file, str) and ann_file and \
                    '://' not in ann_file:
                full = osp.join(root or '', ann_file)
                if not osp.isfile(full):
                    raise UserInputError(
                        f'annotation file {full!r} of {key} not found: '
                        'check the data preparation, or set '
                        f'{key}.dataset.ann_file')


def check_eval_pipelines(cfg: Config):
    """Refuse ``skip_bad=True`` outside training: a skipped image would
    change the metrics, and a test-mode dataset cannot skip."""
    for key in ('val_dataloader', 'test_dataloader'):
        for dataset in _datasets((cfg.get(key) or {}).get('dataset')):
            for step in dataset.get('pipeline') or []:
                if isinstance(step, dict) and step.get('skip_bad'):
                    raise UserInputError(
                        f'{key} skips bad images ({step.get("type")} with '
                        'skip_bad=True), which only training can: remove '
                        'skip_bad from its pipeline')


def check_checkpoint(path: str):
    """Load a checkpoint safely once, so a bad one is reported before the
    runner writes anything."""
    if path:
        safe_load(path, map_location='cpu')


def check_run(cfg: Config,
              config: str,
              loaders: Sequence[str],
              checkpoint: Optional[str] = None):
    """Every check of a run before its work dir is touched: the data folders
    of ``loaders``, the model, the checkpoints it loads (safe, and fitting
    the model), and the first sample of the first of ``loaders`` (the one
    the run reads first).

    Raises:
        UserInputError: What is wrong and how to fix it.
    """
    check_data_roots(cfg, loaders)
    check_eval_pipelines(cfg)
    model = build_model(cfg, config)
    check_pretrained(cfg)
    if checkpoint:
        check_checkpoint_fits(model, checkpoint, config)
    check_first_samples(cfg, model, loaders[:1])


def latest_checkpoint(work_dir: str):
    """The checkpoint named in ``work_dir/last_checkpoint``, if any."""
    record = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(record):
        with open(record) as f:
            return f.read().strip() or None
    return None


def _without_sync_bn(cfg):
    """A copy of a (model) config with every SyncBN norm turned into BN."""
    if isinstance(cfg, dict):
        cfg = type(cfg)({k: _without_sync_bn(v) for k, v in cfg.items()})
        if cfg.get('type') in ('SyncBN', 'MMSyncBN'):
            cfg['type'] = 'BN'
        return cfg
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_without_sync_bn(v) for v in cfg)
    return cfg


def _slurm_env():
    """Export torchrun's variables from SLURM's for a CPU job."""
    os.environ.setdefault('RANK', os.environ['SLURM_PROCID'])
    os.environ.setdefault('WORLD_SIZE', os.environ['SLURM_NTASKS'])
    os.environ.setdefault('LOCAL_RANK', os.environ['SLURM_LOCALID'])
    if 'MASTER_ADDR' not in os.environ:
        hosts = subprocess.check_output(
            ['scontrol', 'show', 'hostnames', os.environ['SLURM_NODELIST']])
        os.environ['MASTER_ADDR'] = hosts.decode().split()[0]
    os.environ.setdefault('MASTER_PORT', '29500')


def setup_device(cfg: Config, launcher: str, amp: bool = False):
    """Fit the config to the machine.

    On GPUs nothing changes but ``--amp``. On a CPU-only machine: SyncBN
    becomes BN, AMP is refused with a warning, and a distributed launch uses
    gloo with DDP over CPU tensors (no device ids), the process group being
    created here because mmengine's ``init_dist`` assumes CUDA.
    """
    on_gpu = torch.cuda.is_available()
    if amp:
        if on_gpu:
            cfg.optim_wrapper.type = 'AmpOptimWrapper'
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
        else:
            print('warning: --amp needs a GPU; training in fp32 on the CPU')
    if on_gpu:
        return
    cfg.pop('sync_bn', None)
    cfg.model = _without_sync_bn(cfg.model)
    if launcher == 'none':
        return
    wrapper = ConfigDict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    wrapper.setdefault('broadcast_buffers', False)
    wrapper.setdefault('find_unused_parameters',
                       cfg.get('find_unused_parameters', False))
    wrapper.device_ids = None
    cfg.model_wrapper_cfg = wrapper
    if launcher == 'slurm':
        _slurm_env()
    elif launcher != 'pytorch':
        raise UserInputError(
            f'launcher {launcher!r} is not supported on a CPU-only machine: '
            "use --launcher pytorch (tools/dist_train.sh) or 'slurm'")
    if not dist.is_initialized():
        timeout = cfg.get('env_cfg', {}).get('dist_cfg',
                                             {}).get('timeout', 1800)
        dist.init_process_group('gloo', timeout=timedelta(seconds=timeout))
    if dist.get_rank() == 0:
        print(f'CPU-only machine: distributed over {dist.get_world_size()} '
              'processes with the gloo backend')

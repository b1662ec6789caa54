"""The checks the tools run on a config before anything is written.

Each turns a mistake that would otherwise end a run in a traceback, often
after the work dir was made, into a :class:`UserInputError` that names the
problem and its fix: a model the config cannot build (a misspelt type or
argument, a bad arch or index), a checkpoint that does not fit the model,
and data the model cannot take (channels, image size, unreadable images).

The model is built on the meta device where it can be (no memory, no
initialization); the first sample of each dataset goes through its pipeline,
the model's data preprocessor and the backbone.
"""
import contextlib
import copy
import difflib
import importlib
import inspect
import io
import logging
import re
import warnings
from typing import Iterator, Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.registry import DefaultScope, Registry

from .errors import UserInputError, launch_rank
from .safe_checkpoint import safe_load

# torch's messages for an input smaller than a kernel (conv, unfold, pool).
TOO_SMALL = re.compile(r"Kernel size can't be greater|sliding blocks|"
                       r'Output size is too small|smaller than the \d+x\d+ '
                       r'patch')


@contextlib.contextmanager
def quietly():
    """No log records, warnings or prints (pycocotools prints): what the
    checks build, the run builds again and reports then."""
    disabled = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter('ignore')
            yield
    finally:
        logging.disable(disabled)


def did_you_mean(name: str, candidates) -> Optional[str]:
    """The candidate closest to a misspelt ``name``, if one is close."""
    candidates = sorted(candidates)
    same = [c for c in candidates if c.lower() == name.lower()]
    close = same or difflib.get_close_matches(name, candidates, n=1)
    return close[0] if close else None


def _type_name(value) -> str:
    return value if isinstance(value, str) else getattr(
        value, '__name__', str(value))


def type_paths(node, path: str = 'model') -> Iterator[Tuple[str, str]]:
    """``(path, type)`` of every dict with a ``type`` in a config tree,
    outer ones first, e.g. ``('model.backbone', 'LocalViT')``."""
    if isinstance(node, dict):
        if 'type' in node:
            yield path, _type_name(node['type'])
        for key, value in node.items():
            yield from type_paths(value, f'{path}.{key}')
    elif isinstance(node, (list, tuple)):
        for index, value in enumerate(node):
            yield from type_paths(value, f'{path}[{index}]')


def _path_of(model_cfg, class_name: str) -> Optional[str]:
    """Where the config builds ``class_name`` (a type may carry a scope)."""
    for path, name in type_paths(model_cfg):
        if name.split('.')[-1] == class_name:
            return path
    return None


def _visible_names(registry: Registry) -> set:
    """The names ``registry`` resolves without a scope prefix: its own and
    its ancestors'."""
    names = set()
    while registry is not None:
        names.update(registry.module_dict)
        registry = registry.parent
    return names


def _registry_names(scope: str, registry_name: str) -> set:
    """The names the ``scope::registry_name`` registry resolves."""
    module = 'mmengine.registry' if scope == 'mmengine' else \
        f'{scope}.registry'
    try:
        registries = vars(importlib.import_module(module)).values()
    except ImportError:
        return set()
    for registry in registries:
        if isinstance(registry, Registry) and registry.scope == scope and \
                registry.name == registry_name:
            return _visible_names(registry)
    return set()


def _unknown_type(where: str, registry: str, name: str, config: str,
                  names: set) -> UserInputError:
    guess = did_you_mean(name.split('.')[-1], names)
    fix = f'did you mean {guess!r}?' if guess else \
        'check the spelling, or import the package that registers it with ' \
        'custom_imports'
    return UserInputError(
        f'{where}: unknown {registry} type {name!r} in {config}: {fix}')


def init_arguments(cls) -> list:
    """The keyword arguments ``cls(...)`` takes, following ``**kwargs`` to
    the base classes."""
    names = []
    for klass in cls.__mro__:
        if klass is object or '__init__' not in vars(klass):
            continue
        params = list(inspect.signature(klass.__init__).parameters.values())
        names += [
            p.name for p in params[1:]
            if p.kind not in (p.VAR_POSITIONAL,
                              p.VAR_KEYWORD) and p.name not in names
        ]
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    return names


def _frames(error: BaseException):
    """The traceback frames of ``error``, outermost first."""
    tb = error.__traceback__
    while tb is not None:
        yield tb.tb_frame
        tb = tb.tb_next


def explain_build_error(error: Exception, model_cfg,
                        config: str) -> Optional[UserInputError]:
    """The :class:`UserInputError` for an exception raised while building
    the model of ``config``; None when it is not a known config mistake."""
    message = str(error.args[0]) if error.args else ''
    unknown_type = re.match(r'(\S+) is not in the (\w+)::(.+?) registry',
                            message)
    if isinstance(error, KeyError) and unknown_type:
        name, scope, registry = unknown_type.groups()
        return _unknown_type(
            _path_of(model_cfg, name) or 'model', registry, name, config,
            _registry_names(scope, registry))
    if isinstance(error, KeyError) and message.startswith('Cannot find '):
        # mmcv's build_norm_layer & co. (their message names no type).
        for frame in reversed(list(_frames(error))):
            name = frame.f_locals.get('layer_type')
            registry = frame.f_locals.get('registry')
            if isinstance(name, str) and isinstance(registry, Registry):
                return _unknown_type(
                    _path_of(model_cfg, name) or 'model', registry.name, name,
                    config, _visible_names(registry))
    # The class the registry was constructing, when the call itself failed
    # (the class named in the message is it or one of its bases).
    built = [
        frame.f_locals['obj_cls'] for frame in _frames(error)
        if inspect.isclass(frame.f_locals.get('obj_cls'))
    ][-1:]
    refused_by = re.match(r'(\w+)\.__init__\(\)', message)
    if not refused_by or not any(
            refused_by.group(1) == klass.__name__ for cls in built
            for klass in cls.__mro__):
        built = []
    bad_argument = re.search(
        r"__init__\(\) got an unexpected keyword argument '(\w+)'", message)
    if isinstance(error, TypeError) and bad_argument and built:
        cls, argument = built[-1], bad_argument.group(1)
        where = _path_of(model_cfg, cls.__name__) or 'model'
        valid = init_arguments(cls)
        guess = did_you_mean(argument, valid)
        fix = f'did you mean {guess!r}?' if guess else \
            f'remove it (its arguments: {", ".join(valid)})'
        return UserInputError(f'{where}: {cls.__name__} has no argument '
                              f'{argument!r} ({config}): {fix}')
    missing = re.search(
        r'__init__\(\) missing \d+ required \S+ arguments?: '
        r'(.+)$', message)
    if isinstance(error, TypeError) and missing and built:
        cls = built[-1]
        where = _path_of(model_cfg, cls.__name__) or 'model'
        return UserInputError(f'{where}: {cls.__name__} needs the argument(s) '
                              f'{missing.group(1)} ({config}): add them')
    if isinstance(error, ValueError):
        # The innermost module under construction that the config names.
        for frame in reversed(list(_frames(error))):
            module = frame.f_locals.get('self')
            if frame.f_code.co_name == '__init__' and isinstance(
                    module, nn.Module):
                where = _path_of(model_cfg, type(module).__name__)
                if where:
                    return UserInputError(
                        f'{where} ({type(module).__name__}, {config}): '
                        f'{message}')
    return None


def build_model(cfg, config: str) -> nn.Module:
    """The model of ``cfg`` as the runner builds it, on the meta device when
    it builds there (no memory, no initialization), else on the CPU.

    Raises:
        UserInputError: The config names an unknown type or argument, or a
            module refuses its arguments (e.g. an unknown ``arch``).
    """
    scope = cfg.default_scope
    registry = importlib.import_module(f'{scope}.registry').MODELS
    model_cfg = copy.deepcopy(cfg.model)
    if isinstance(model_cfg, dict) and cfg.get('data_preprocessor'):
        model_cfg.setdefault('data_preprocessor',
                             copy.deepcopy(cfg.data_preprocessor))
    with DefaultScope.overwrite_default_scope(scope), quietly():
        try:
            with torch.device('meta'):
                return registry.build(copy.deepcopy(model_cfg))
        except Exception:
            # Some modules compute real values while being built; the CPU
            # build below tells a config mistake from that.
            pass
        try:
            return registry.build(model_cfg)
        except (KeyError, TypeError, ValueError) as error:
            explained = explain_build_error(error, model_cfg, config)
            if explained is None:
                raise
            raise explained from None


def state_dict_of(checkpoint, path: str) -> dict:
    """The weights of a loaded checkpoint (an mmengine one or a bare state
    dict), without the ``module.`` prefix of a wrapped model."""
    state = checkpoint.get('state_dict', checkpoint) if isinstance(
        checkpoint, dict) else None
    if not isinstance(state, dict) or not any(
            isinstance(v, torch.Tensor) for v in state.values()):
        raise UserInputError(
            f'checkpoint {path!r} holds no weights (no state dict): pass a '
            'checkpoint of tools/train.py, or convert an official release '
            'with tools/model_converters/localvit_to_mmpretrain.py')
    return {re.sub(r'^module\.', '', k): v for k, v in state.items()}


def _listed(keys: list, count: int = 3) -> str:
    return ', '.join(keys[:count]) + (', ...' if len(keys) > count else '')


def fit_report(model: nn.Module, state: dict) -> Tuple[Optional[str], bool]:
    """How a checkpoint's weights fit a model.

    Returns:
        tuple: A summary of the keys that do not fit (missing from the
        checkpoint, unexpected by the model, of another shape), None when
        all fit; and whether most model keys are missing. Shapes are not
        compared under a module that adapts weights on load (a load
        pre-hook, e.g. one that resizes position embeddings).
    """
    expected = model.state_dict()
    adapting = tuple(f'{name}.' if name else ''
                     for name, module in model.named_modules()
                     if module._load_state_dict_pre_hooks)
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [
        f'{k} {tuple(state[k].shape)} vs {tuple(v.shape)}'
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
        and not k.startswith(adapting)
    ]
    parts = [
        f'{len(missing)} of the model\'s {len(expected)} keys missing '
        f'({_listed(missing)})'
    ] if missing else []
    if unexpected:
        parts.append(f'{len(unexpected)} unexpected keys '
                     f'({_listed(unexpected)})')
    if reshaped:
        parts.append(f'{len(reshaped)} keys of another shape (checkpoint vs '
                     f'model: {_listed(reshaped, 2)})')
    return ('; '.join(parts) or None), len(missing) > len(expected) / 2


def load_weights_exactly(model: nn.Module, state: dict) -> Optional[str]:
    """Load ``state`` into ``model``; what did not fit (the first missing
    and unexpected keys, or the shape that differs), None when all did."""
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as error:  # a shape that differs
        return str(error).strip().splitlines()[-1].strip().rstrip('.')
    if missing or unexpected:
        return f'missing {sorted(missing)[:5]}, unexpected ' \
            f'{sorted(unexpected)[:5]}'
    return None


def check_checkpoint_fits(model: nn.Module,
                          path: str,
                          config: str,
                          exact: bool = False) -> dict:
    """Load a checkpoint safely and check that it fits ``model``.

    A checkpoint that misses most of the model's keys is refused; one that
    misses a few is reported in one ``warning:`` line (those weights keep
    their initial values), or refused too when ``exact``.

    Returns:
        dict: The checkpoint's state dict.
    """
    state = state_dict_of(safe_load(path, map_location='cpu'), path)
    summary, most_missing = fit_report(model, state)
    if summary and (most_missing or exact):
        raise UserInputError(
            f'checkpoint {path!r} does not fit the model of {config}: '
            f'{summary}: pass a checkpoint of this config (a run of '
            'tools/train.py), or convert an official release with '
            'tools/model_converters/localvit_to_mmpretrain.py')
    if summary and launch_rank() == 0:
        print(f'warning: checkpoint {path!r} fits the model of {config} only '
              f'in part: {summary}; those weights keep their initial values')
    return state


def pretrained_checkpoints(model_cfg) -> Iterator[Tuple[str, str]]:
    """``(config path, checkpoint)`` of every ``Pretrained`` init_cfg."""
    for path, name in type_paths(model_cfg):
        if name == 'Pretrained':
            node = model_cfg
            for part in re.findall(r'\.(\w+)|\[(\d+)\]', path):
                node = node[part[0]] if part[0] else node[int(part[1])]
            if node.get('checkpoint'):
                yield path, node['checkpoint']


def check_pretrained(cfg):
    """Load every local ``init_cfg`` Pretrained checkpoint safely once.

    Remote ones (``https://``, ``torchvision://``...) are read weights-only
    when the model is initialized.
    """
    for _, checkpoint in pretrained_checkpoints(cfg.model):
        if '://' not in checkpoint:
            safe_load(checkpoint, map_location='cpu')


def _first_kernel(backbone: nn.Module) -> Optional[str]:
    """The kernel of the backbone's first conv or unfold, e.g. '16x16'."""
    for module in backbone.modules():
        if isinstance(module, (nn.Conv2d, nn.Unfold)):
            size = module.kernel_size
            size = (size, size) if isinstance(size, int) else size
            return 'x'.join(map(str, size))
    return None


def _backbone_channels(backbone_cfg, backbone: nn.Module) -> Optional[int]:
    """The channels the backbone takes: its ``in_channels`` (set in the
    config or by default), else those of its first conv."""
    if 'in_channels' in (backbone_cfg or {}):
        return backbone_cfg['in_channels']
    default = inspect.signature(type(backbone)).parameters.get('in_channels')
    if default is not None and isinstance(default.default, int):
        return default.default
    for module in backbone.modules():
        if isinstance(module, nn.Conv2d):
            return module.in_channels
    return None


def check_backbone_takes(key: str, sample: dict, model: nn.Module, cfg):
    """Check that the first sample of the ``key`` dataloader fits the model:
    channels against the data preprocessor's mean and the backbone, image
    size against the backbone's first patch."""
    backbone = getattr(model, 'backbone', None)
    inputs = sample.get('inputs') if isinstance(sample, dict) else None
    if not isinstance(backbone, nn.Module) or not isinstance(
            inputs, torch.Tensor) or inputs.dim() != 3:
        return
    preprocessor = getattr(model, 'data_preprocessor', None)
    mean = getattr(preprocessor, 'mean', None)
    if isinstance(mean, torch.Tensor) and mean.numel() not in (
            1, inputs.shape[0]) and inputs.shape[0] != 1:
        raise UserInputError(
            f'{key}: its images have {inputs.shape[0]} channels but the data '
            f'preprocessor normalizes {mean.numel()}: give data_preprocessor '
            f'mean and std {inputs.shape[0]} values each')
    device = next(iter(model.state_dict().values()), torch.empty(0)).device
    data = dict(inputs=[inputs.to(device)])  # the images are what matters
    try:
        with torch.no_grad():
            if preprocessor is not None:
                preprocessor.to(device)
                batch = preprocessor(data, False)['inputs']
            else:
                batch = inputs[None].float().to(device)
    except Exception:
        return  # a preprocessor that needs real tensors: nothing to check
    channels, height, width = batch.shape[1:]
    expected = _backbone_channels(cfg.model.get('backbone'), backbone)
    name = type(backbone).__name__
    if expected is not None and expected != channels:
        raise UserInputError(
            f'{key}: its images have {channels} channel(s) after the data '
            f'preprocessor but model.backbone ({name}) takes {expected}: set '
            f'model.backbone.in_channels={channels}')
    try:
        with torch.no_grad():
            backbone.eval()(batch)
    except RuntimeError as error:
        if TOO_SMALL.search(str(error)):
            kernel = _first_kernel(backbone)
            raise UserInputError(
                f'{key}: its images are {height}x{width} after the pipeline, '
                f'too small for the {kernel} patch of model.backbone ({name})'
                f': resize them to at least {kernel} in the pipeline or use '
                'a smaller patch_size') from None
    except Exception:
        pass  # meta tensors cannot run everything; the run will tell


def _first_sample_only(dataset_cfg) -> dict:
    """A dataset config that keeps only its first sample and does not
    serialize its annotations (mmengine's ``BaseDataset`` options; a
    wrapper or one that sets ``indices`` is left as it is)."""
    dataset_cfg = copy.deepcopy(dataset_cfg)
    if not {'dataset', 'datasets', 'indices'} & set(dataset_cfg):
        dataset_cfg.update(indices=1, serialize_data=False)
    return dataset_cfg


def check_first_samples(cfg, model: nn.Module, loaders: Sequence[str]):
    """Read the first sample of each dataloader's dataset through its
    pipeline (an unreadable image there is named) and check the model
    takes it (:func:`check_backbone_takes`)."""
    scope = cfg.default_scope
    datasets = importlib.import_module(f'{scope}.registry').DATASETS
    for key in loaders:
        dataset_cfg = (cfg.get(key) or {}).get('dataset')
        if not dataset_cfg:
            continue
        with DefaultScope.overwrite_default_scope(scope), quietly():
            try:
                try:
                    dataset = datasets.build(_first_sample_only(dataset_cfg))
                except TypeError:  # a dataset without those options
                    dataset = datasets.build(copy.deepcopy(dataset_cfg))
                if len(dataset) == 0:
                    raise UserInputError(
                        f'{key}.dataset holds no samples: check its '
                        'data_root, ann_file, data_prefix and indices')
                # Without a replacement drawn for a skipped sample.
                sample = dataset.prepare_data(0) if hasattr(
                    dataset, 'prepare_data') else dataset[0]
            except OSError as error:
                raise UserInputError(
                    f'{key}.dataset cannot be read ({error}): check its '
                    'data_root, ann_file and data_prefix') from None
        check_backbone_takes(key, sample, model, cfg)

"""Convert an official LocalViT release file to an mmpretrain checkpoint.

    python tools/model_converters/localvit_to_mmpretrain.py SRC DST \
        [--config CFG] [--ema]

The official files keep their weights under ``'model'`` (and possibly
``'model_ema'``, ``'optimizer'`` and an ``argparse.Namespace`` under
``'args'``). They are read with ``weights_only=True``
(:func:`localvit_mm.utils.safe_load`): ``argparse.Namespace`` is allowed
besides tensors and containers.

Each model family is a :class:`Family`: a test on the keys, a key mapping and
an arch detector. The locality FFN, an ``nn.Sequential`` called
``conv.conv`` in the official code, is mapped by :func:`map_conv_ffn` for
every family (its indices shift when the depth-wise conv or the channel
attention is absent). A new family (e.g. LocalViT-PVT, ``block{s}.{j}``) is a
small ``convert`` function over :func:`map_conv_ffn` plus an entry in
:data:`FAMILIES`::

    official  conv.conv.{k}       ours  ffn.{name}
    1x1 conv [out, in, 1, 1]  ->  fc1 / fc2 (Linear [out, in])
    BatchNorm2d               ->  norm1 / norm2 / norm3
    k x k depth-wise conv     ->  dw_conv
    SELayer / ECALayer        ->  channel_attention

The classification head ``head.*`` becomes ``head.fc.*`` (mmpretrain's
``LinearClsHead``); everything else gets the ``backbone.`` prefix.

The arch is recognized by building every ``LocalViT.arch_zoo`` row on the
meta device and comparing keys and shapes. The number of heads and the
activation (h-swish or ReLU6) leave no trace in the weights, so a row is told
apart by its FFN keys and dims only: ``tiny`` (4 heads) holds locality FFNs,
``deit-tiny`` (3 heads) plain MLPs. Pass ``--config`` for anything else; a
config whose model does not hold exactly the converted keys and shapes is
refused.
"""
import argparse
import math
import re
import sys
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from localvit_mm.utils import (UserInputError, build_model, load_config,
                               run_main, safe_load)

Weights = Dict[str, torch.Tensor]


def load_official(path: str, ema: bool = False) -> Weights:
    """Read the weights of an official release file without unsafe pickles."""
    ckpt = safe_load(path, map_location='cpu')
    key = 'model_ema' if ema else 'model'
    if isinstance(ckpt, dict) and key in ckpt:
        return dict(ckpt[key])
    if ema:
        raise UserInputError(f'{path} holds no "model_ema" weights: convert '
                             'it without --ema')
    if isinstance(ckpt, dict) and all(
            isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise UserInputError(f'{path} is not a LocalViT release file: no "model" '
                         'entry (a checkpoint of tools/train.py needs no '
                         'conversion)')


def _module_kind(weights: Weights, prefix: str) -> str:
    """Tell what one entry of the official ``conv.conv`` Sequential is."""
    if prefix + 'running_mean' in weights:
        return 'bn'
    if prefix + 'fc.0.weight' in weights:
        return 'se'
    if prefix + 'conv.weight' in weights:
        return 'eca'
    weight = weights.get(prefix + 'weight')
    if weight is not None and weight.dim() == 4:
        if weight.shape[2:] == (1, 1):
            return 'pointwise'
        if weight.shape[1] == 1:
            return 'depthwise'
    raise ValueError(f'unknown module {prefix[:-1]} in the locality FFN')


# Our name of each official module kind, by position in the FFN.
FFN_LAYOUTS = {
    ('pointwise', 'bn', 'depthwise', 'bn', 'pointwise', 'bn'):
    ('fc1', 'norm1', 'dw_conv', 'norm2', 'fc2', 'norm3'),
    ('pointwise', 'bn', 'pointwise', 'bn'): ('fc1', 'norm1', 'fc2', 'norm3'),
}


def map_conv_ffn(weights: Weights, src: str, dst: str) -> Weights:
    """Map one official locality FFN ``{src}{k}.*`` onto ``{dst}{name}.*``.

    Args:
        weights (dict): All official weights.
        src (str): Prefix of the Sequential, e.g. ``'blocks.0.conv.conv.'``.
        dst (str): Our prefix, e.g. ``'backbone.blocks.0.ffn.'``.

    Returns:
        dict: The FFN's weights under our names, 1x1 conv kernels flattened
        to Linear weights.
    """
    pattern = re.compile(re.escape(src) + r'(\d+)\.')
    indices = sorted({
        int(m.group(1))
        for m in map(pattern.match, weights) if m is not None
    })
    kinds = [_module_kind(weights, f'{src}{i}.') for i in indices]
    attention = [k for k in kinds if k in ('se', 'eca')]
    plain = tuple(k for k in kinds if k not in ('se', 'eca'))
    if plain not in FFN_LAYOUTS or len(attention) > 1 or (
            attention and kinds[-3] not in ('se', 'eca')):
        raise ValueError(f'{src[:-1]} has an FFN layout {kinds} that '
                         'LocalityFeedForward cannot hold (depth-wise conv '
                         'first?)')
    names = iter(FFN_LAYOUTS[plain])
    out = {}
    for index, kind in zip(indices, kinds):
        name = 'channel_attention' if kind in ('se', 'eca') else next(names)
        prefix = f'{src}{index}.'
        for key, value in weights.items():
            if key.startswith(prefix):
                if kind == 'pointwise':
                    value = value.flatten(1)
                out[dst + name + '.' + key[len(prefix):]] = value
    return out


@dataclass
class Family:
    """How to convert one family of official checkpoints.

    Attributes:
        detect: True when the weights belong to the family.
        convert: Official weights -> our ``backbone.*`` / ``head.*`` weights.
        arch: Our weights -> the matching ``arch`` name, or None.
        describe: Official weights -> a one-line account of their shapes.
    """
    detect: Callable[[Weights], bool]
    convert: Callable[[Weights], Weights]
    arch: Callable[[Weights], Optional[str]]
    describe: Callable[[Weights], str]


def _convert_head(key: str, value: torch.Tensor, out: Weights):
    out['head.fc.' + key[len('head.'):]] = value


def convert_localvit(weights: Weights) -> Weights:
    """LocalViT-T/S/B and DeiT (``blocks.{i}``) -> :class:`LocalViT`."""
    out = {}
    ffn_prefixes = sorted({
        m.group(0)
        for m in map(re.compile(r'blocks\.\d+\.conv\.conv\.').match, weights)
        if m is not None
    })
    for src in ffn_prefixes:
        block = src[:-len('conv.conv.')]
        out.update(map_conv_ffn(weights, src, f'backbone.{block}ffn.'))
    known = re.compile(r'(cls_token|pos_embed|patch_embed\.proj\.|norm\.|'
                       r'blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|'
                       r'mlp\.fc1|mlp\.fc2)\.)')
    unknown = []
    for key, value in weights.items():
        if key.startswith('head.'):
            _convert_head(key, value, out)
        elif any(key.startswith(p) for p in ffn_prefixes):
            continue
        elif known.match(key):
            out['backbone.' + key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'keys LocalViT does not hold: {unknown[:5]}'
                         f'{" ..." if len(unknown) > 5 else ""}')
    return out


def describe_localvit(weights: Weights) -> str:
    """A short account of a DeiT-layout checkpoint's shapes, for messages."""
    dims = weights['cls_token'].shape[-1]
    depth = 1 + max(
        int(k.split('.')[1]) for k in weights if k.startswith('blocks.'))
    local = [
        i for i in range(depth) if f'blocks.{i}.conv.conv.0.weight' in weights
    ]
    text = f'embed dims {dims}, {depth} blocks, locality FFN in {local}'
    if local:
        ffn = map_conv_ffn(weights, f'blocks.{local[0]}.conv.conv.', '')
        parts = [f'hidden {ffn["fc1.weight"].shape[0]}']
        parts.append('dw conv' if 'dw_conv.weight' in ffn else 'no dw conv')
        if 'channel_attention.fc.0.weight' in ffn:
            squeezed = ffn['channel_attention.fc.0.weight'].shape[0]
            parts.append(f'SE squeeze {squeezed}')
        elif 'channel_attention.conv.weight' in ffn:
            parts.append('ECA')
        text += f' ({", ".join(parts)})'
    return text


def _shapes(state: Weights, prefix: str, size_dependent: str) -> dict:
    """Key -> shape of the ``prefix`` entries, without the prefix; keys that
    fully match the ``size_dependent`` pattern (position embeddings: their
    length follows the input size) by name only."""
    return {
        k[len(prefix):]:
        None if re.fullmatch(size_dependent, k[len(prefix):]) else v.shape
        for k, v in state.items() if k.startswith(prefix)
    }


def matching_arch(cls,
                  converted: Weights,
                  size_dependent: str = '',
                  **build_kwargs) -> Optional[str]:
    """The one ``cls.arch_zoo`` row whose model (built on the meta device
    with ``build_kwargs``) holds exactly the converted backbone keys and
    shapes; None when no row or several do."""
    shapes = _shapes(converted, 'backbone.', size_dependent)
    matches = []
    for name in cls.arch_zoo:
        with torch.device('meta'):
            model = cls(arch=name, **build_kwargs)
        if _shapes(model.state_dict(), '', size_dependent) == shapes:
            matches.append(name)
    return matches[0] if len(matches) == 1 else None


def localvit_arch(converted: Weights) -> Optional[str]:
    """The ``LocalViT.arch_zoo`` row of these weights (patch size and input
    channels read from the patch embedding)."""
    from localvit_mm.models.backbones.localvit import LocalViT
    proj = converted['backbone.patch_embed.proj.weight'].shape
    return matching_arch(
        LocalViT,
        converted,
        'pos_embed',
        patch_size=proj[-1],
        in_channels=proj[1])


def convert_localvit_pvt(weights: Weights) -> Weights:
    """LocalViT-PVT and PVT (``block{s}.{j}``) -> :class:`LocalViTPVT`.

    Our keys keep the official PVT layout, so only the locality FFNs are
    renamed and the head moved; PVT's GELU MLPs pass unchanged.
    """
    ffn = re.compile(r'block\d+\.\d+\.conv\.conv\.')
    ffn_prefixes = sorted({m.group(0) for m in map(ffn.match, weights) if m})
    out = {}
    for src in ffn_prefixes:
        block = src[:-len('conv.conv.')]
        out.update(map_conv_ffn(weights, src, f'backbone.{block}ffn.'))
    known = re.compile(r'(cls_token|pos_embed\d+|patch_embed\d+\.(proj|norm)'
                       r'\.|norm\.|block\d+\.\d+\.(norm1|norm2|attn\.(q|kv|'
                       r'proj|sr|norm)|mlp\.fc1|mlp\.fc2)\.)')
    unknown = []
    for key, value in weights.items():
        if key.startswith('head.'):
            _convert_head(key, value, out)
        elif ffn.match(key):
            continue
        elif known.match(key):
            out['backbone.' + key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'keys LocalViTPVT does not hold: {unknown[:5]}'
                         f'{" ..." if len(unknown) > 5 else ""}')
    return out


def describe_localvit_pvt(weights: Weights) -> str:
    """Stage channels, depths and FFN kind of a PVT-layout checkpoint."""
    dims = [weights[f'pos_embed{s}'].shape[-1] for s in range(1, 5)]
    depths = [
        len({k.split('.')[1]
             for k in weights if k.startswith(f'block{s}.')})
        for s in range(1, 5)
    ]
    local = 'block1.0.conv.conv.0.weight' in weights
    return (f'stage dims {dims}, depths {depths}, '
            f'{"locality FFN" if local else "GELU MLP"}')


def localvit_pvt_arch(converted: Weights) -> Optional[str]:
    """The ``LocalViTPVT.arch_zoo`` row of these weights."""
    from localvit_mm.models.backbones.localvit_pvt import LocalViTPVT
    return matching_arch(
        LocalViTPVT,
        converted,
        r'pos_embed\d+',
        with_cls_token='backbone.cls_token' in converted,
        final_norm='backbone.norm.weight' in converted)


def _swin_stages(weights: Weights) -> int:
    return 1 + max(
        int(k.split('.')[1]) for k in weights if k.startswith('layers.'))


def convert_localvit_swin(weights: Weights) -> Weights:
    """LocalViT-Swin and Swin (``layers.{i}.blocks.{j}``) ->
    :class:`LocalViTSwin`.

    Our keys keep the official layout, except that the final ``norm`` is the
    last stage's output norm ``norm{last}``. The relative position indices
    and shift masks, buffers the official model saves, are computed by ours
    and dropped.
    """
    ffn = re.compile(r'layers\.\d+\.blocks\.\d+\.conv\.conv\.')
    ffn_prefixes = sorted({m.group(0) for m in map(ffn.match, weights) if m})
    out = {}
    for src in ffn_prefixes:
        block = src[:-len('conv.conv.')]
        out.update(map_conv_ffn(weights, src, f'backbone.{block}ffn.'))
    known = re.compile(r'patch_embed\.(proj|norm)\.|layers\.\d+\.(downsample'
                       r'\.(norm|reduction)\.|blocks\.\d+\.(norm1\.|norm2\.|'
                       r'attn\.(qkv|proj)\.|attn\.relative_position_bias_'
                       r'table$|mlp\.fc1\.|mlp\.fc2\.))')
    computed = re.compile(r'layers\.\d+\.blocks\.\d+\.(attn_mask|attn\.'
                          r'relative_position_index)$')
    last = _swin_stages(weights) - 1
    unknown = []
    for key, value in weights.items():
        if key.startswith('head.'):
            _convert_head(key, value, out)
        elif key.startswith('norm.'):
            out[f'backbone.norm{last}.' + key[len('norm.'):]] = value
        elif ffn.match(key) or computed.match(key):
            continue
        elif known.match(key):
            out['backbone.' + key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'keys LocalViTSwin does not hold: {unknown[:5]}'
                         f'{" ..." if len(unknown) > 5 else ""}')
    return out


def describe_localvit_swin(weights: Weights) -> str:
    """Channels, depths, window and FFN kind of a Swin-layout checkpoint."""
    stages = _swin_stages(weights)
    dims = weights['patch_embed.proj.weight'].shape[0]
    depths = [
        len({
            k.split('.')[3]
            for k in weights if k.startswith(f'layers.{i}.blocks.')
        }) for i in range(stages)
    ]
    table = weights['layers.0.blocks.0.attn.relative_position_bias_table']
    window = (math.isqrt(table.shape[0]) + 1) // 2
    local = 'layers.0.blocks.0.conv.conv.0.weight' in weights
    return (f'embed dims {dims}, depths {depths}, window {window}, '
            f'{"locality FFN" if local else "GELU MLP"}')


def localvit_swin_arch(converted: Weights) -> Optional[str]:
    """The ``LocalViTSwin.arch_zoo`` row of these weights (window size,
    patch size and output norms read from the weights)."""
    from localvit_mm.models.backbones.localvit_swin import LocalViTSwin
    proj = converted['backbone.patch_embed.proj.weight'].shape
    table = converted[
        'backbone.layers.0.blocks.0.attn.relative_position_bias_table'].shape
    norms = [
        int(m.group(1)) for m in map(
            re.compile(r'backbone\.norm(\d+)\.weight').fullmatch, converted)
        if m
    ]
    return matching_arch(
        LocalViTSwin,
        converted,
        in_channels=proj[1],
        patch_size=proj[-1],
        window_size=(math.isqrt(table[0]) + 1) // 2,
        out_indices=norms)


# Official token-layer names that ours keep under ``attn.`` or rename.
_T2T_TOKEN_RENAMES = {
    'kqv.': 'attn.kqv.',
    'proj.': 'attn.proj.',
    'w': 'attn.random_features',
    'mlp.0.': 'mlp.fc1.',
    'mlp.2.': 'mlp.fc2.',
}


def convert_localvit_t2t(weights: Weights) -> Weights:
    """LocalViT-T2T and T2T-ViT (``tokens_to_token``) -> :class:`LocalViTT2T`.

    The performer's ``kqv``, ``proj`` and random features ``w`` of each
    token layer move under ``attn.`` (``w`` becomes ``random_features``) and
    the token layers' GELU MLP ``mlp.0`` / ``mlp.2`` becomes ``mlp.fc1`` /
    ``mlp.fc2``. With the locality FFN, the token layers' ``norm2`` (built,
    never used by the official forward) is dropped. ``pos_embed`` is the
    fixed sinusoid table our model computes at forward: it is checked
    against that table and dropped.

    Official T2T-ViT release checkpoints were trained with the attention
    scale ``embed_dims ** -0.5`` (their ``qk_scale`` for pretrained models);
    ours is ``head_dims ** -0.5``, as in LocalViT's T2T training.
    """
    from localvit_mm.models.backbones.localvit_t2t import sinusoid_encoding
    ffn = re.compile(r'(tokens_to_token\.attention\d|blocks\.\d+)\.'
                     r'conv\.conv\.')
    ffn_prefixes = sorted({m.group(0) for m in map(ffn.match, weights) if m})
    out = {}
    for src in ffn_prefixes:
        layer = src[:-len('conv.conv.')]
        out.update(map_conv_ffn(weights, src, f'backbone.{layer}ffn.'))
    token = re.compile(r'tokens_to_token\.attention\d\.')
    known = re.compile(r'(cls_token$|norm\.|tokens_to_token\.(project\.|'
                       r'attention\d\.(norm1|norm2)\.)|blocks\.\d+\.(norm1|'
                       r'norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.)')
    unknown = []
    for key, value in weights.items():
        layer = token.match(key)
        rest = key[layer.end():] if layer else ''
        renamed = [
            new + rest[len(old):] for old, new in _T2T_TOKEN_RENAMES.items()
            if rest == old or old.endswith('.') and rest.startswith(old)
        ]
        if key.startswith('head.'):
            _convert_head(key, value, out)
        elif ffn.match(key):
            continue
        elif key == 'pos_embed':
            table = sinusoid_encoding(*value.shape[1:])
            if not torch.allclose(value.float(), table, atol=1e-5):
                raise ValueError('pos_embed is not the fixed sinusoid table '
                                 'LocalViTT2T computes')
        elif layer and renamed:
            out[f'backbone.{layer.group(0)}{renamed[0]}'] = value
        elif layer and rest.startswith('norm2.') and \
                f'{layer.group(0)}conv.conv.0.weight' in weights:
            continue
        elif known.match(key):
            out['backbone.' + key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'keys LocalViTT2T does not hold: {unknown[:5]}'
                         f'{" ..." if len(unknown) > 5 else ""}')
    return out


def describe_localvit_t2t(weights: Weights) -> str:
    """Dims, depth and where the locality FFNs are, for messages."""
    dims = weights['cls_token'].shape[-1]
    depth = len({k.split('.')[1] for k in weights if k.startswith('blocks.')})
    tokens = weights['tokens_to_token.attention1.proj.weight'].shape[0]
    ffns = {
        'token layers': 'tokens_to_token.attention1.conv.conv.0.weight',
        'blocks': 'blocks.0.conv.conv.0.weight'
    }
    local = [name for name, key in ffns.items() if key in weights]
    return (f'embed dims {dims}, {depth} blocks, token dims {tokens}, '
            f'locality FFN in {" and ".join(local) or "no layer"}')


def localvit_t2t_arch(converted: Weights) -> Optional[str]:
    """The ``LocalViTT2T.arch_zoo`` row of these weights."""
    from localvit_mm.models.backbones.localvit_t2t import LocalViTT2T
    norm = converted['backbone.tokens_to_token.attention1.norm1.weight']
    return matching_arch(
        LocalViTT2T, converted, in_channels=norm.shape[0] // 49)


# Official TNT layer module -> ours (inner block, projection, outer block).
TNT_BLOCK_KEYS = {
    'norm_in': 'inner.norm1',
    'attn_in': 'inner.attn',
    'norm_mlp_in': 'inner.norm2',
    'mlp_in': 'inner.mlp',
    'norm1_proj': 'norm_proj',
    'proj': 'proj',
    'norm_out': 'outer.norm1',
    'attn_out': 'outer.attn',
    'norm_mlp': 'outer.norm2',
    'mlp': 'outer.mlp',
}


def convert_localvit_tnt(weights: Weights) -> Weights:
    """LocalViT-TNT and TNT (``pixel_embed``, ``blocks.{i}.attn_in``) ->
    :class:`LocalViTTNT`.

    Top-level keys keep their names; each layer's inner transformer becomes
    ``inner``, its outer one ``outer`` (:data:`TNT_BLOCK_KEYS`), the
    locality FFN ``outer.ffn``.
    """
    ffn = re.compile(r'blocks\.\d+\.conv\.conv\.')
    ffn_prefixes = sorted({m.group(0) for m in map(ffn.match, weights) if m})
    out = {}
    for src in ffn_prefixes:
        block = src[:-len('conv.conv.')]
        out.update(map_conv_ffn(weights, src, f'backbone.{block}outer.ffn.'))
    layer = re.compile(r'blocks\.(\d+)\.(' + '|'.join(TNT_BLOCK_KEYS) +
                       r')\.(.+)$')
    top = re.compile(r'(cls_token|patch_pos|pixel_pos|pixel_embed\.proj\.|'
                     r'norm1_proj\.|proj\.|norm2_proj\.|norm\.)')
    unknown = []
    for key, value in weights.items():
        match = layer.match(key)
        if key.startswith('head.'):
            _convert_head(key, value, out)
        elif ffn.match(key):
            continue
        elif match:
            index, module, leaf = match.groups()
            out[f'backbone.blocks.{index}.{TNT_BLOCK_KEYS[module]}.{leaf}'] \
                = value
        elif top.match(key):
            out['backbone.' + key] = value
        else:
            unknown.append(key)
    if unknown:
        raise ValueError(f'keys LocalViTTNT does not hold: {unknown[:5]}'
                         f'{" ..." if len(unknown) > 5 else ""}')
    return out


def describe_localvit_tnt(weights: Weights) -> str:
    """Outer and inner dims, depth and outer FFN kind of a TNT checkpoint."""
    depth = 1 + max(
        int(k.split('.')[1]) for k in weights if k.startswith('blocks.'))
    local = 'blocks.0.conv.conv.0.weight' in weights
    return (f'dims {weights["cls_token"].shape[-1]}, inner dims '
            f'{weights["pixel_pos"].shape[1]}, {depth} layers, '
            f'{"locality FFN" if local else "GELU MLP"}')


def localvit_tnt_arch(converted: Weights) -> Optional[str]:
    """The ``LocalViTTNT.arch_zoo`` row of these weights."""
    from localvit_mm.models.backbones.localvit_tnt import LocalViTTNT
    return matching_arch(LocalViTTNT, converted, 'patch_pos')


FAMILIES: Dict[str, Family] = {
    # Before 'LocalViT': these weights also hold blocks.0.norm1, cls_token.
    'LocalViTT2T':
    Family(
        detect=lambda w: 'tokens_to_token.attention1.kqv.weight' in w,
        convert=convert_localvit_t2t,
        arch=localvit_t2t_arch,
        describe=describe_localvit_t2t),
    'LocalViT':
    Family(
        detect=lambda w: 'blocks.0.norm1.weight' in w and 'cls_token' in w,
        convert=convert_localvit,
        arch=localvit_arch,
        describe=describe_localvit),
    'LocalViTPVT':
    Family(
        detect=lambda w: 'block1.0.norm1.weight' in w and 'pos_embed1' in w,
        convert=convert_localvit_pvt,
        arch=localvit_pvt_arch,
        describe=describe_localvit_pvt),
    'LocalViTSwin':
    Family(
        detect=lambda w: 'layers.0.blocks.0.attn.relative_position_bias_table'
        in w,
        convert=convert_localvit_swin,
        arch=localvit_swin_arch,
        describe=describe_localvit_swin),
    'LocalViTTNT':
    Family(
        detect=lambda w: 'pixel_embed.proj.weight' in w and
        'blocks.0.attn_in.qk.weight' in w,
        convert=convert_localvit_tnt,
        arch=localvit_tnt_arch,
        describe=describe_localvit_tnt),
}


def convert(weights: Weights) -> Tuple[str, Weights, Optional[str]]:
    """Official weights -> (family, our weights, arch name or None)."""
    for family, spec in FAMILIES.items():
        if spec.detect(weights):
            converted = spec.convert(weights)
            return family, converted, spec.arch(converted)
    raise ValueError('the weights match no known family '
                     f'({sorted(FAMILIES)}); first keys: {list(weights)[:3]}')


def check_config(config: str, state_dict: Weights) -> Optional[object]:
    """Refuse a config whose model does not hold exactly these weights.

    Returns:
        The config's backbone ``arch``.
    """
    cfg = load_config(config)
    model_dict = build_model(cfg, config).state_dict()
    missing = sorted(set(model_dict) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(model_dict))
    shapes = sorted(f'{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}'
                    for k, v in model_dict.items()
                    if k in state_dict and state_dict[k].shape != v.shape)
    problems = [
        f'{label}: {items[:3]}{" ..." if len(items) > 3 else ""}'
        for label, items in (('missing', missing), ('unexpected', unexpected),
                             ('shape (checkpoint vs config)', shapes)) if items
    ]
    if problems:
        raise ValueError('; '.join(problems))
    arch = cfg.model.get('backbone', {}).get('arch')
    return arch.to_dict() if hasattr(arch, 'to_dict') else arch


def main(argv: Optional[List[str]] = None):
    parser = argparse.ArgumentParser(
        description='Convert an official LocalViT checkpoint to mmpretrain.')
    parser.add_argument(
        'src', help='official release file, e.g. '
        'localvit_t.pth')
    parser.add_argument('dst', help='output checkpoint')
    parser.add_argument(
        '--config',
        help='config the checkpoint is meant for; refused when '
        'its model does not hold exactly the converted weights')
    parser.add_argument(
        '--ema', action='store_true', help='take "model_ema", not "model"')
    args = parser.parse_args(argv)

    weights = load_official(args.src, args.ema)
    try:
        family, state_dict, arch = convert(weights)
        if args.config:
            arch = check_config(args.config, state_dict)
        elif arch is None:
            raise ValueError(
                f'no {family} arch holds these weights '
                f'({FAMILIES[family].describe(weights)}); pass --config')
    except ValueError as e:
        where = f' with {args.config}' if args.config else ''
        raise UserInputError(f'cannot convert {args.src}{where}: {e}')
    torch.save(
        dict(
            state_dict=state_dict,
            meta=dict(source=args.src, family=family, arch=arch)), args.dst)
    print(f'{args.src} ({family}, arch {arch}) -> {args.dst}: '
          f'{len(state_dict)} tensors')


if __name__ == '__main__':
    run_main(main, sys.argv[1:])

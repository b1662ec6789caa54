"""LocalViT-PVT: the Pyramid Vision Transformer with the locality FFN.

Li et al., "LocalViT: Bringing Locality to Vision Transformers" (2021) put the
locality feed-forward into every block of PVT (Wang et al., 2021). State-dict
keys follow the official PVT / LocalViT-PVT layout (``patch_embed{s}``,
``pos_embed{s}``, ``block{s}.{j}``, ``norm``, ``cls_token``), so official PVT
checkpoints load into the ``pvt-*`` baselines unchanged; LocalViT-PVT files
need only their FFN keys renamed (``tools/model_converters``).
"""
import math
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.logging import print_log

from ...registry import MODELS
from ..layers import (LocalViTBlock, PatchEmbed, load_pos_embed,
                      resize_pos_embed, tokens_to_lattice)
from .base import LocalViTBackbone, se_ffn

_PVT = dict(
    embed_dims=[64, 128, 320, 512],
    num_heads=[1, 2, 5, 8],
    mlp_ratios=[8, 8, 4, 4],
    sr_ratios=[8, 4, 2, 1])
_DEPTHS = dict(
    tiny=[2, 2, 2, 2],
    small=[3, 4, 6, 3],
    medium=[3, 4, 18, 3],
    large=[3, 8, 27, 3])
# LocalViT-PVT's FFN: h-swish, SE with reduction = stage channels (the
# squeeze keeps mlp_ratio channels).
_SE = se_ffn('embed_dims')


@MODELS.register_module()
class LocalViTPVT(LocalViTBackbone):
    """LocalViT-PVT backbone and its PVT baselines (locality off).

    A four-stage pyramid (strides 4/8/16/32) for classification, detection
    and segmentation. The config keys follow mmdet's
    ``PyramidVisionTransformer``, so a PVT config switches ``type`` and keeps
    the rest. Position embeddings are resized bilinearly to any input size,
    both at forward time and when a checkpoint of another size is loaded.

    Args:
        arch (str | dict): ``'tiny'``, ``'small'``, ``'medium'``, ``'large'``
            (LocalViT-PVT) or ``'pvt-tiny'`` ... ``'pvt-large'`` (plain PVT),
            or a dict with ``embed_dims``, ``num_layers``, ``num_heads``,
            ``mlp_ratios``, ``sr_ratios`` and ``ffn_cfg`` (the locality FFN's
            options, None for plain MLPs; missing keys come from PVT-T and
            LocalViT-PVT's h-swish + SE FFN). Defaults to ``'tiny'``.
        pretrain_img_size (int | tuple[int]): Input size the stored position
            embeddings are laid out for. Defaults to 224.
        in_channels (int): Input channels. Defaults to 3.
        embed_dims (int | Sequence[int], optional): Per-stage channels; an int
            is multiplied by ``num_heads`` as in mmdet's PVT. Defaults to the
            arch.
        num_layers, num_heads, mlp_ratios, sr_ratios (Sequence[int],
            optional): Per-stage overrides of the arch. Defaults to None.
        patch_sizes (Sequence[int]): Patch size of each stage's embedding.
            Defaults to (4, 2, 2, 2).
        out_indices (Sequence[int] | int): Stages to output. Defaults to
            (0, 1, 2, 3).
        out_type (str): Output of the last stage: ``'featmap'`` (B, C, H, W)
            like the other stages, or ``'cls_token'`` (B, C) for
            classification. Defaults to ``'featmap'``.
        with_cls_token (bool): Prepend a class token to the last stage (the
            classification model). Dense models leave it off and drop it
            when loading a classification checkpoint. Defaults to False.
        final_norm (bool): LayerNorm after the last stage. Defaults to True.
        qkv_bias (bool): Bias of the q and kv projections. Defaults to True.
        drop_rate (float): Dropout after adding position embeddings.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth, linear over all blocks.
            Defaults to 0.1.
        ffn_cfg (dict, optional): Overrides of the arch's locality FFN
            options (``norm_cfg=dict(type='SyncBN')``, ``act_cfg``,
            ``channel_attention``...); ``deploy=True`` builds the
            BatchNorm-free form of :meth:`switch_to_deploy`. Ignored by the
            ``pvt-*`` archs, which have no locality FFN. Defaults to None.
        attn_cfg (dict, optional): Options of every block's attention:
            ``dict(qkv_proj='life')`` builds LIFE projections (``q`` on the
            stage lattice, ``kv`` on the reduced one), on a ``pvt-*`` arch
            too. Defaults to None.
        interpolate_mode (str): Mode of the position-embedding resize.
            Defaults to ``'bilinear'``.
        frozen_stages (int): Freeze (no grad, eval mode) the first
            ``frozen_stages`` stages; freezing all also freezes the class
            token and the final norm. -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode during training,
            which freezes its running statistics; with
            ``norm_cfg=dict(type='BN', requires_grad=False)`` in ``ffn_cfg``
            BN is fully frozen. Defaults to False.
        with_cp (bool): Activation checkpointing of the blocks (saves memory,
            costs a second forward, which also updates the FFN's BatchNorm
            statistics a second time). Defaults to False.
        init_cfg (dict | list[dict], optional): Initialization config, e.g.
            ``dict(type='Pretrained', checkpoint=..., prefix='backbone.')``.
            Defaults to None.
    """
    arch_zoo = {
        **{
            name: dict(_PVT, num_layers=depths, ffn_cfg=_SE)
            for name, depths in _DEPTHS.items()
        },
        **{
            f'pvt-{name}': dict(_PVT, num_layers=depths, ffn_cfg=None)
            for name, depths in _DEPTHS.items()
        },
    }
    OUT_TYPES = ('featmap', 'cls_token')

    def __init__(self,
                 arch: Union[str, dict] = 'tiny',
                 pretrain_img_size: Union[int, Sequence[int]] = 224,
                 in_channels: int = 3,
                 embed_dims: Union[int, Sequence[int], None] = None,
                 num_layers: Optional[Sequence[int]] = None,
                 num_heads: Optional[Sequence[int]] = None,
                 mlp_ratios: Optional[Sequence[float]] = None,
                 sr_ratios: Optional[Sequence[int]] = None,
                 patch_sizes: Sequence[int] = (4, 2, 2, 2),
                 out_indices: Union[int, Sequence[int]] = (0, 1, 2, 3),
                 out_type: str = 'featmap',
                 with_cls_token: bool = False,
                 final_norm: bool = True,
                 qkv_bias: bool = True,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.1,
                 ffn_cfg: Optional[dict] = None,
                 attn_cfg: Optional[dict] = None,
                 interpolate_mode: str = 'bilinear',
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[dict] = None):
        if isinstance(init_cfg, dict) and 'type' not in init_cfg:
            init_cfg = dict(init_cfg, type='Pretrained')  # mmdet PVT style
        super().__init__(
            frozen_stages, norm_eval, with_cp, init_cfg, attn_cfg=attn_cfg)
        cfg = self._arch_settings(arch, embed_dims, num_layers, num_heads,
                                  mlp_ratios, sr_ratios)
        self.embed_dims = cfg['embed_dims']
        self.num_layers = cfg['num_layers']
        self.num_stages = len(self.num_layers)
        if len(patch_sizes) != self.num_stages:
            raise ValueError(f'{len(patch_sizes)} patch sizes given for '
                             f'{self.num_stages} stages')
        if out_type == 'cls_token' and not with_cls_token:
            raise ValueError("out_type='cls_token' needs with_cls_token=True")
        self.set_outputs(out_indices, out_type, self.num_stages, 'stages')
        self.with_cls_token = with_cls_token
        self.final_norm = final_norm
        self.interpolate_mode = interpolate_mode
        with_locality = cfg['ffn_cfg'] is not None
        stage_ffn = self.merge_ffn_cfg(cfg['ffn_cfg'], ffn_cfg)
        if 'mlp_ratio' in stage_ffn:
            raise ValueError('LocalViTPVT takes per-stage expansion ratios '
                             'from mlp_ratios, not ffn_cfg["mlp_ratio"]')

        if isinstance(pretrain_img_size, int):
            pretrain_img_size = (pretrain_img_size, pretrain_img_size)
        total = sum(self.num_layers)  # linear 0 -> rate (works on meta)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.pos_shapes, stride, channels = [], 1, in_channels
        for i, (dims,
                depth) in enumerate(zip(self.embed_dims, self.num_layers)):
            s = i + 1
            stride *= patch_sizes[i]
            self.pos_shapes.append(
                tuple(math.ceil(x / stride) for x in pretrain_img_size))
            num_pos = math.prod(self.pos_shapes[i]) + (
                with_cls_token and s == self.num_stages)
            setattr(
                self, f'patch_embed{s}',
                PatchEmbed(
                    channels, dims, patch_sizes[i], norm_eps=1e-5, pad=True))
            setattr(self, f'pos_embed{s}',
                    nn.Parameter(torch.zeros(1, num_pos, dims)))
            start = sum(self.num_layers[:i])
            setattr(
                self, f'block{s}',
                nn.ModuleList([
                    LocalViTBlock(
                        dims,
                        cfg['num_heads'][i],
                        cfg['mlp_ratios'][i],
                        attn_cfg=self.block_attn_cfg(
                            'SpatialReductionAttention',
                            qkv_bias=qkv_bias,
                            sr_ratio=cfg['sr_ratios'][i]),
                        drop_path_rate=dpr[start + j],
                        with_locality=with_locality,
                        ffn_cfg=stage_ffn,
                        norm_eps=1e-6) for j in range(depth)
                ]))
            channels = dims
        self.pos_drop = nn.Dropout(drop_rate)
        if with_cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, channels))
        if final_norm:
            self.norm = nn.LayerNorm(channels, eps=1e-6)
        self._register_load_state_dict_pre_hook(self._prepare_state_dict)
        self._freeze_stages()

    def _arch_settings(self, arch, embed_dims, num_layers, num_heads,
                       mlp_ratios, sr_ratios) -> dict:
        """Merge the arch (name or dict) with the per-stage overrides."""
        if isinstance(arch, str):
            cfg = self.parse_arch(arch, ())
        else:
            cfg = dict(dict(_PVT, ffn_cfg=_SE), **arch)
        overrides = dict(
            num_layers=num_layers,
            num_heads=num_heads,
            mlp_ratios=mlp_ratios,
            sr_ratios=sr_ratios)
        cfg.update({k: v for k, v in overrides.items() if v is not None})
        if embed_dims is not None:
            cfg['embed_dims'] = embed_dims
        if isinstance(cfg['embed_dims'], int):  # mmdet: dims = base * heads
            cfg['embed_dims'] = [
                cfg['embed_dims'] * h for h in cfg['num_heads']
            ]
        keys = ('embed_dims', 'num_layers', 'num_heads', 'mlp_ratios',
                'sr_ratios')
        if len({len(cfg[k]) for k in keys}) != 1:
            settings = ', '.join(f'{k}={list(cfg[k])}' for k in keys)
            raise ValueError(f'per-stage settings differ in length: '
                             f'{settings}')
        return cfg

    def _pos_embed(self, stage: int, hw_shape: Sequence[int],
                   num_extra_tokens: int) -> torch.Tensor:
        return resize_pos_embed(
            getattr(self, f'pos_embed{stage + 1}'), self.pos_shapes[stage],
            hw_shape, self.interpolate_mode, num_extra_tokens)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        """Images (B, C, H, W) -> one output per ``out_indices`` stage."""
        outs = []
        last = self.num_stages - 1
        for i in range(self.num_stages):
            x, hw_shape = getattr(self, f'patch_embed{i + 1}')(x)
            num_extra = int(self.with_cls_token and i == last)
            if num_extra:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x],
                              dim=1)
            x = self.pos_drop(x + self._pos_embed(i, hw_shape, num_extra))
            for block in getattr(self, f'block{i + 1}'):
                x = self.run_block(block, x, hw_shape, num_extra)
            if i == last and self.final_norm:
                x = self.norm(x)
            if i == last and self.out_type == 'cls_token':
                if i in self.out_indices:
                    outs.append(x[:, 0])
                break
            x = tokens_to_lattice(x[:, num_extra:], hw_shape)
            if i in self.out_indices:
                outs.append(x.contiguous())
        return tuple(outs)

    def _prepare_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Load-time fixes: drop the class token entries when this model has
        none, resize position embeddings to this model's lattices."""
        cls_key = prefix + 'cls_token'
        ckpt_has_cls = cls_key in state_dict
        if ckpt_has_cls and not self.with_cls_token:
            del state_dict[cls_key]
            print_log(
                f'{type(self).__name__}: dropped the class token of '
                'the checkpoint (this model has none)', 'current')
        for i in range(self.num_stages):
            last = i == self.num_stages - 1
            load_pos_embed(state_dict,
                           f'{prefix}pos_embed{i + 1}', self.pos_shapes[i],
                           int(self.with_cls_token
                               and last), self.interpolate_mode,
                           1 if last and ckpt_has_cls else None)

    def frozen_parts(self, num_frozen: int):
        """Patch embedding, position embedding and blocks of the first
        ``num_frozen`` stages; the class token and final norm with the
        last."""
        modules, params = [], []
        for s in range(1, min(num_frozen, self.num_stages) + 1):
            modules += [
                getattr(self, f'patch_embed{s}'),
                getattr(self, f'block{s}')
            ]
            params.append(getattr(self, f'pos_embed{s}'))
            if s == self.num_stages:
                if self.final_norm:
                    modules.append(self.norm)
                if self.with_cls_token:
                    params.append(self.cls_token)
        return modules, params

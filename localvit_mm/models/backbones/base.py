"""What every LocalViT backbone shares besides its blocks.

A backbone is an attention type and a macro structure (a plain stack, a
pyramid, a transformer in a transformer) on top of the shared block and
locality FFN. Everything else lives here: the arch table lookup, the FFN
options of the arch merged with the user's, the user's attention options
(``attn_cfg``, e.g. LIFE) added to every block's attention, freezing,
``norm_eval``, activation checkpointing, the official initialization and
(through :class:`DeployMixin`) ``switch_to_deploy``.
"""
import difflib
from typing import Iterable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.utils.checkpoint as cp
from mmengine.model import BaseModule
from torch.nn.modules.batchnorm import _BatchNorm

from ..deploy import DeployMixin
from ..layers import LocalityFeedForward, tokens_to_lattice

# Arguments of LocalityFeedForward a config may set through ``ffn_cfg``
# (``mlp_ratio`` is the block's expansion ratio).
FFN_KEYS = frozenset({
    'act_cfg', 'channel_attention', 'kernel_size', 'with_dw_conv', 'norm_cfg',
    'mlp_ratio', 'deploy', 'fused'
})
# Options of the blocks' attention a config may set through ``attn_cfg``:
# ``qkv_proj='life'`` puts locality into the q/k/v projection.
ATTN_KEYS = frozenset({'qkv_proj'})


def se_ffn(reduction: Union[int, str]) -> dict:
    """Arch-row FFN options of the paper's models: h-swish, then SE whose
    squeeze keeps ``hidden // reduction`` channels (``'embed_dims'``: the
    reduction is each block's channel count, as in LocalViT-PVT)."""
    return dict(
        act_cfg=dict(type='HSwish'),
        channel_attention=dict(type='SE', reduction=reduction))


class LocalViTBackbone(DeployMixin, BaseModule):
    """Base class of the LocalViT backbones.

    Subclasses fill the class-level ``arch_zoo``, build their modules, call
    :meth:`_freeze_stages` at the end of ``__init__`` and say in
    :meth:`frozen_parts` what the first stages hold.

    Args:
        frozen_stages (int): Stages (blocks for a plain stack) whose
            parameters stop training and whose BatchNorms keep their
            statistics; -1 freezes nothing. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training
            (small per-GPU batches in detection). Defaults to False.
        with_cp (bool): Activation checkpointing of the blocks (saves memory,
            costs a second forward, which also updates the FFN's BatchNorm
            statistics a second time). Defaults to False.
        init_cfg (dict | list[dict], optional): Applied after the official
            initialization, e.g. ``dict(type='Pretrained', ...)``.
            Defaults to None.
        attn_cfg (dict, optional): Options added to every block's attention
            (keys of ``ATTN_KEYS``): ``dict(qkv_proj='life')`` gives each
            q/k/v projection LIFE's locality, independently of the locality
            FFN. Defaults to None.
    """

    arch_zoo: dict = {}
    # Outputs a plain (non-pyramid) stack of blocks offers, mmpretrain's
    # VisionTransformer contract.
    OUT_TYPES = ('raw', 'cls_token', 'featmap', 'avg_featmap')
    num_extra_tokens = 1
    output_cls_token = False

    def __init__(self,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None,
                 attn_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.with_cp = with_cp
        unknown = set(attn_cfg or {}) - ATTN_KEYS
        if unknown:
            raise ValueError(f'unknown attn_cfg keys {sorted(unknown)}; '
                             f'allowed: {sorted(ATTN_KEYS)}')
        self.attn_options = dict(attn_cfg or {})

    def parse_arch(self, arch: Union[str, dict],
                   required: Sequence[str]) -> dict:
        """A copy of the named ``arch_zoo`` row, or a custom arch dict that
        holds every ``required`` key."""
        if isinstance(arch, str):
            if arch.lower() not in self.arch_zoo:
                close = difflib.get_close_matches(arch.lower(),
                                                  sorted(self.arch_zoo), 1)
                fix = f'did you mean {close[0]!r}?' if close else \
                    f'use one of them or a dict with {sorted(required)}'
                raise ValueError(f'arch {arch!r} is not one of '
                                 f'{sorted(self.arch_zoo)}: {fix}')
            return dict(self.arch_zoo[arch.lower()])
        missing = set(required) - set(arch)
        if missing:
            raise ValueError(f'custom arch misses {sorted(missing)}: add '
                             'them to the arch dict')
        return dict(arch)

    @staticmethod
    def merge_ffn_cfg(arch_ffn: Optional[dict],
                      ffn_cfg: Optional[dict]) -> dict:
        """The arch's FFN options (None: an arch without locality) updated
        by the user's ``ffn_cfg``, whose keys are checked."""
        unknown = set(ffn_cfg or {}) - FFN_KEYS
        if unknown:
            close = difflib.get_close_matches(
                min(unknown), sorted(FFN_KEYS), 1)
            fix = f': did you mean {close[0]!r}?' if close else ''
            raise ValueError(f'unknown ffn_cfg keys {sorted(unknown)}; '
                             f'allowed: {sorted(FFN_KEYS)}{fix}')
        return dict(arch_ffn or {}, **(ffn_cfg or {}))

    def block_attn_cfg(self, attn_type: str, **options) -> dict:
        """The ``attn_cfg`` of a block: the attention type and the options
        the backbone sets, then the user's ``attn_cfg``."""
        return dict(type=attn_type, **options, **self.attn_options)

    def set_outputs(self,
                    out_indices: Union[int, Sequence[int]],
                    out_type: str,
                    num_outputs: int,
                    unit: str = 'blocks'):
        """Check and keep ``out_type`` (one of ``OUT_TYPES``) and
        ``out_indices`` (negative ones count from the end) among
        ``num_outputs`` blocks or stages."""
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'out_type must be one of {self.OUT_TYPES}, '
                             f'got {out_type!r}')
        indices = [out_indices] if isinstance(out_indices, int) \
            else list(out_indices)
        if any(not -num_outputs <= i < num_outputs for i in indices):
            raise ValueError(f'out_indices {indices} out of range for '
                             f'{num_outputs} {unit}: use indices in '
                             f'{-num_outputs}..{num_outputs - 1}')
        self.out_type = out_type
        self.out_indices = sorted({i % num_outputs for i in indices})

    def format_tokens(self, x: torch.Tensor, hw_shape: Sequence[int]):
        """One output of a plain stack from its tokens (B, extra + h*w, C):
        all of them ('raw'), the class token, the patch tokens as a map
        ('featmap') or their mean ('avg_featmap'); with
        ``output_cls_token``, ``[out, cls_token]`` (mmseg's DPTHead)."""
        patches = x[:, self.num_extra_tokens:]
        if self.out_type == 'raw':
            out = x
        elif self.out_type == 'cls_token':
            out = x[:, 0]
        elif self.out_type == 'featmap':
            out = tokens_to_lattice(patches, hw_shape)
        else:
            out = patches.mean(dim=1)
        return [out, x[:, 0]] if self.output_cls_token else out

    def forward_blocks(self, x: torch.Tensor,
                       hw_shape: Sequence[int]) -> tuple:
        """The plain stack ``self.blocks`` on embedded tokens (B, extra +
        h*w, C), ``self.norm`` after the last one, an output per
        ``out_indices`` block (:meth:`format_tokens`)."""
        outs = []
        for i, block in enumerate(self.blocks):
            x = self.run_block(block, x, hw_shape, self.num_extra_tokens)
            if i == len(self.blocks) - 1:
                x = self.norm(x)
            if i in self.out_indices:
                outs.append(self.format_tokens(x, hw_shape))
        return tuple(outs)

    def run_block(self, block: nn.Module, x, *args):
        """``block(x, *args)``, through activation checkpointing when
        ``with_cp`` is on and gradients flow."""
        if self.with_cp and self.training and x.requires_grad:
            return cp.checkpoint(block, x, *args, use_reentrant=False)
        return block(x, *args)

    def frozen_parts(
            self,
            num_frozen: int) -> Tuple[List[nn.Module], List[nn.Parameter]]:
        """Modules and loose parameters of the first ``num_frozen`` stages
        (``num_frozen >= 0``)."""
        raise NotImplementedError

    def _freeze_stages(self):
        """Stop gradients and BN updates of the first ``frozen_stages``."""
        if self.frozen_stages < 0:
            return
        modules, params = self.frozen_parts(self.frozen_stages)
        params = list(params)
        for module in modules:
            module.eval()
            params.extend(module.parameters())
        for param in params:
            param.requires_grad = False

    def train(self, mode: bool = True):
        """Train mode that keeps the frozen stages, and every BatchNorm with
        ``norm_eval``, in eval mode."""
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self

    def init_official_weights(self, embeddings: Iterable[nn.Parameter]):
        """The official init: trunc-normal 0.02 for the ``embeddings``
        (position embeddings, class token) and every Linear layer, LayerNorm
        1/0.

        The locality FFN's fc1/fc2 are 1x1 convs in the official code and
        keep their default init, as do convolutions and BatchNorm.
        """
        for param in embeddings:
            nn.init.trunc_normal_(param, std=.02)
        pointwise = {
            id(fc)
            for m in self.modules() if isinstance(m, LocalityFeedForward)
            for fc in (m.fc1, m.fc2)
        }
        for m in self.modules():
            if isinstance(m, nn.Linear) and id(m) not in pointwise:
                nn.init.trunc_normal_(m.weight, std=.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def init_weights(self):
        """The official init, then any ``init_cfg`` (e.g. Pretrained)."""
        self.init_official_weights(self.embeddings())
        super().init_weights()

    def embeddings(self) -> List[nn.Parameter]:
        """The backbone's own position embeddings, then its class token:
        what :meth:`init_weights` draws trunc-normal first, in this order."""
        own = dict(self.named_parameters(recurse=False))
        return [p for name, p in own.items() if 'pos' in name] + \
            [p for name, p in own.items() if name == 'cls_token']

"""LocalViT-T2T: T2T-ViT with the locality feed-forward.

Li et al., "LocalViT: Bringing Locality to Vision Transformers" (2021) put
the locality FFN into T2T-ViT-7 (Yuan et al., 2021): into the seven
transformer blocks (h-swish + SE) and into the two performer token layers of
the tokens-to-token module (gamma 1, h-swish, no SE), each on the token
lattice of its step. The ``t2t-vit-*`` archs switch locality off: plain GELU
MLPs everywhere, T2T-ViT itself.

State-dict names follow the official code where the structure is the same
(``tokens_to_token.attention{1,2}``, ``tokens_to_token.project``,
``cls_token``, ``blocks.{i}``, ``norm``); the locality FFNs hold the shared
:class:`LocalityFeedForward` names (``tools/model_converters`` maps them).
"""
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule

from ...registry import MODELS
from ..layers import (LocalityFeedForward, LocalViTBlock, Mlp,
                      PerformerAttention, tokens_to_lattice)
from .base import LocalViTBackbone, se_ffn

# Options of the locality FFN that say how it runs, not what it is: the
# backbone's ``ffn_cfg`` passes them to the token layers' FFNs too, so that
# ``ffn_cfg=dict(deploy=True)`` builds the whole deploy model.
RUN_KEYS = ('deploy', 'norm_cfg', 'fused')


def sinusoid_encoding(num_positions: int,
                      embed_dims: int,
                      device=None) -> torch.Tensor:
    """The fixed position encoding of T2T-ViT ("Attention Is All You Need").

    Position ``p``, channel ``j``: ``sin(p / 10000^(2 floor(j/2) / C))`` for
    even ``j``, ``cos`` of the same angle for odd ``j``; computed in float64
    and returned as float32 (1, num_positions, embed_dims), like the
    official table.
    """
    position = torch.arange(
        num_positions, dtype=torch.float64, device=device)[:, None]
    pairs = torch.arange(
        embed_dims, dtype=torch.float64, device=device).div(
            2, rounding_mode='floor')
    angle = position / torch.pow(10000., 2 * pairs / embed_dims)
    table = torch.where(
        torch.arange(embed_dims, device=device) % 2 == 0, angle.sin(),
        angle.cos())
    return table.float()[None]


def unfold_size(unfold: nn.Unfold, hw_shape: Sequence[int]) -> tuple:
    """The (h, w) lattice of the patches ``unfold`` cuts from ``hw_shape``.

    The count of a conv with the same kernel, stride and padding: a
    remainder the stride leaves is not covered, as in a convolution.
    """
    k, s, p = unfold.kernel_size, unfold.stride, unfold.padding
    return tuple((size + 2 * p - k) // s + 1 for size in hw_shape)


class TokenPerformerLayer(BaseModule):
    """A token layer of the tokens-to-token module.

    ``norm1`` -> :class:`PerformerAttention` (``in_dims`` -> ``embed_dims``,
    residual from its values), then the locality FFN on this step's lattice
    (LocalViT-T2T; no class token here, so ``num_extra_tokens=0``) or
    ``norm2`` + GELU MLP with a residual (T2T-ViT).

    It is not a :class:`LocalViTBlock`: that block adds its input to the
    attention output (``x + attn(norm1(x))``), but here the attention
    changes the channel count and brings its own residual (the values), so
    the block's form does not fit. The official LocalViT-T2T token layer
    also builds a ``norm2`` that its forward never uses; it is left out
    here (256 parameters for T2T-ViT-7's two layers).

    Args:
        in_dims (int): Channels of the unfolded patches.
        embed_dims (int): Token channels after the layer.
        kernel_ratio (float): Random features per channel of the performer.
            Defaults to 0.5.
        drop_rate (float): Dropout after the performer's projection and the
            MLP (T2T-ViT: 0.1). Defaults to 0.1.
        ffn_cfg (dict, optional): Options of :class:`LocalityFeedForward`
            (with ``mlp_ratio``, its expansion ratio, default 1); None
            builds the plain MLP (hidden ``embed_dims``). Defaults to None.
        norm_eps (float): LayerNorm eps. Defaults to 1e-5.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 in_dims: int,
                 embed_dims: int,
                 kernel_ratio: float = 0.5,
                 drop_rate: float = 0.1,
                 ffn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-5,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.with_locality = ffn_cfg is not None
        self.norm1 = nn.LayerNorm(in_dims, eps=norm_eps)
        self.attn = PerformerAttention(
            in_dims, embed_dims, kernel_ratio, proj_drop=drop_rate)
        if self.with_locality:
            ffn_cfg = dict(ffn_cfg)
            ratio = ffn_cfg.pop('mlp_ratio', 1)
            self.ffn = LocalityFeedForward(
                embed_dims, expansion_ratio=ratio, **ffn_cfg)
        else:
            self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
            self.mlp = Mlp(embed_dims, embed_dims)
            self.mlp_drop = nn.Dropout(drop_rate)

    def forward(self, x: torch.Tensor,
                hw_shape: Sequence[int]) -> torch.Tensor:
        """(B, h*w, in_dims) -> (B, h*w, embed_dims) on the (h, w) lattice."""
        x = self.attn(self.norm1(x))
        if self.with_locality:  # x is this layer's own tensor
            return self.ffn(x, hw_shape, num_extra_tokens=0, inplace=True)
        return x + self.mlp_drop(self.mlp(self.norm2(x)))


class T2TModule(BaseModule):
    """Tokens-to-token: three soft splits with two token layers between.

    Soft split (``nn.Unfold``) 7x7 stride 4 padding 2, token layer, back to
    the lattice, 3x3 s2 p1, token layer, 3x3 s2 p1, then ``project`` to the
    embedding: the image (H, W) becomes a lattice of about (H/16, W/16)
    tokens. Every lattice size comes from the unfold arithmetic, so
    non-square inputs and sizes the strides do not divide work.

    Args:
        in_channels (int): Image channels.
        embed_dims (int): Channels of the output tokens.
        token_dims (int): Channels of the token layers. Defaults to 64.
        kernel_ratio (float): Performer random features per channel.
            Defaults to 0.5.
        drop_rate (float): Dropout inside the token layers. Defaults to 0.1.
        ffn_cfg (dict, optional): Locality FFN of the token layers; None for
            plain MLPs. Defaults to None.
        norm_eps (float): LayerNorm eps. Defaults to 1e-5.
        init_cfg (dict, optional): Initialization config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 embed_dims: int,
                 token_dims: int = 64,
                 kernel_ratio: float = 0.5,
                 drop_rate: float = 0.1,
                 ffn_cfg: Optional[dict] = None,
                 norm_eps: float = 1e-5,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg=init_cfg)
        self.soft_split0 = nn.Unfold(kernel_size=7, stride=4, padding=2)
        self.soft_split1 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        self.soft_split2 = nn.Unfold(kernel_size=3, stride=2, padding=1)
        layer = dict(
            kernel_ratio=kernel_ratio,
            drop_rate=drop_rate,
            ffn_cfg=ffn_cfg,
            norm_eps=norm_eps)
        self.attention1 = TokenPerformerLayer(in_channels * 7 * 7, token_dims,
                                              **layer)
        self.attention2 = TokenPerformerLayer(token_dims * 3 * 3, token_dims,
                                              **layer)
        self.project = nn.Linear(token_dims * 3 * 3, embed_dims)

    def forward(self,
                x: torch.Tensor,
                run_layer=None) -> Tuple[torch.Tensor, tuple]:
        """(B, C, H, W) images -> tokens (B, h*w, embed_dims) and (h, w).

        ``run_layer(layer, tokens, hw_shape)`` calls a token layer (the
        backbone passes its activation-checkpointing runner).
        """
        run_layer = run_layer or (lambda layer, *args: layer(*args))
        hw_shape = tuple(x.shape[2:])
        for step in range(3):
            split = getattr(self, f'soft_split{step}')
            hw_shape = unfold_size(split, hw_shape)
            x = split(x).transpose(1, 2)
            if step < 2:
                layer = getattr(self, f'attention{step + 1}')
                x = tokens_to_lattice(run_layer(layer, x, hw_shape), hw_shape)
        return self.project(x), hw_shape


@MODELS.register_module()
class LocalViTT2T(LocalViTBackbone):
    """LocalViT-T2T backbone (Li et al., 2021) and its T2T-ViT baseline.

    A tokens-to-token module (performer token layers, each followed by a
    locality FFN on its lattice), a class token, fixed sinusoidal position
    encodings, then ViT blocks (:class:`LocalViTBlock`, qkv without bias)
    with the locality FFN and a final LayerNorm. The position encoding is
    computed at every forward for the actual token count, so any input size
    works (the official code is fixed to 224); there is nothing to resize or
    load.

    Archs (``arch_zoo``; trainable parameters with a 1000-class head):

    ==============  ====  ======  =====  =====  ========================
    name            dims  layers  heads  ratio  FFN (blocks / tokens)
    ==============  ====  ======  =====  =====  ========================
    ``7``           256   7       4      2      hs + SE r128 / hs, g=1
    ``t2t-vit-7``   256   7       4      2      GELU MLP / GELU MLP
    ==============  ====  ======  =====  =====  ========================

    ``7`` (official ``localvit_T2t_conv7``) has 4,330,602 parameters: the
    official count, 4,330,858, includes two LayerNorms its token layers
    build but never use (see :class:`TokenPerformerLayer`). ``t2t-vit-7``
    has 4,255,694, as the official T2T-ViT-7. Neither counts the random
    features of the performers (buffers, 2 x 2,048 values).

    Args:
        arch (str | dict): A name of ``arch_zoo`` or a dict with
            ``embed_dims``, ``num_layers``, ``num_heads`` and optionally
            ``mlp_ratio`` (2), ``token_dims`` (64), ``ffn_cfg`` and
            ``token_ffn_cfg`` (FFN options of the blocks and of the token
            layers, ``{}`` and ``dict(mlp_ratio=1)`` when missing; None
            gives plain MLPs there). Defaults to '7'.
        in_channels (int): Input channels. Defaults to 3.
        ffn_cfg (dict, optional): Overrides of the blocks' FFN options
            (``act_cfg``, ``channel_attention``, ``kernel_size``,
            ``with_dw_conv``, ``norm_cfg``, ``mlp_ratio``, ``deploy``,
            ``fused``); ``deploy``, ``norm_cfg`` and ``fused`` apply to the
            token layers' FFNs too. Defaults to None.
        token_ffn_cfg (dict, optional): Overrides of the token layers' FFN
            options. Defaults to None.
        attn_cfg (dict, optional): Options of the blocks' attention:
            ``dict(qkv_proj='life')`` builds LIFE q/k/v projections (the
            token layers' performers keep their ``kqv`` Linear: they change
            the channel count). Defaults to None.
        kernel_ratio (float): Performer random features per token channel.
            Defaults to 0.5.
        qk_scale (float, optional): Scale of the blocks' attention logits;
            None is ``head_dims ** -0.5``. T2T-ViT-7's released weights need
            ``256 ** -0.5`` (its ``pretrained`` models set it).
            Defaults to None.
        token_drop_rate (float): Dropout in the token layers (T2T-ViT uses
            0.1). Defaults to 0.1.
        drop_rate (float): Dropout after the position encoding.
            Defaults to 0.
        drop_path_rate (float): Stochastic depth of the blocks, linear from
            0 over depth (attention branch only with locality).
            Defaults to 0.
        norm_eps (float): Eps of every LayerNorm. Defaults to 1e-5.
        out_indices (int | Sequence[int]): Blocks whose outputs are returned;
            negative indices count from the end. Defaults to -1.
        out_type (str): 'raw' (all tokens, (B, N, C)), 'cls_token' ((B, C)),
            'featmap' ((B, C, h, w) patch tokens) or 'avg_featmap' (mean of
            the patch tokens, (B, C)). Defaults to 'cls_token'.
        final_norm (bool): Apply ``norm`` after the last block.
            Defaults to True.
        frozen_stages (int): -1 freezes nothing; ``n >= 0`` freezes the
            tokens-to-token module, the class token and the first ``n``
            blocks (parameters and BN statistics), and ``norm`` too when
            ``n == num_layers``. Defaults to -1.
        norm_eval (bool): Keep every BatchNorm in eval mode while training.
            Defaults to False.
        with_cp (bool): Activation checkpointing of the token layers and the
            blocks. Defaults to False.
        init_cfg (dict | list[dict], optional): Applied after the official
            init (trunc-normal 0.02 for Linear layers and the class token,
            LayerNorm 1/0, convolutions and BN with PyTorch defaults; the
            performers' random features are drawn at construction).
            Defaults to None.
    """

    arch_zoo = {
        '7':
        dict(
            embed_dims=256,
            num_layers=7,
            num_heads=4,
            mlp_ratio=2,
            token_dims=64,
            ffn_cfg=se_ffn(128),
            token_ffn_cfg=dict(act_cfg=dict(type='HSwish'), mlp_ratio=1)),
        't2t-vit-7':
        dict(
            embed_dims=256,
            num_layers=7,
            num_heads=4,
            mlp_ratio=2,
            token_dims=64,
            ffn_cfg=None,
            token_ffn_cfg=None),
    }

    def __init__(self,
                 arch: Union[str, dict] = '7',
                 in_channels: int = 3,
                 ffn_cfg: Optional[dict] = None,
                 token_ffn_cfg: Optional[dict] = None,
                 attn_cfg: Optional[dict] = None,
                 kernel_ratio: float = 0.5,
                 qk_scale: Optional[float] = None,
                 token_drop_rate: float = 0.1,
                 drop_rate: float = 0.,
                 drop_path_rate: float = 0.,
                 norm_eps: float = 1e-5,
                 out_indices: Union[int, Sequence[int]] = -1,
                 out_type: str = 'cls_token',
                 final_norm: bool = True,
                 frozen_stages: int = -1,
                 norm_eval: bool = False,
                 with_cp: bool = False,
                 init_cfg: Optional[Union[dict, list]] = None):
        super().__init__(
            frozen_stages=frozen_stages,
            norm_eval=norm_eval,
            with_cp=with_cp,
            init_cfg=init_cfg,
            attn_cfg=attn_cfg)
        settings = dict(
            dict(
                mlp_ratio=2,
                token_dims=64,
                ffn_cfg={},
                token_ffn_cfg=dict(mlp_ratio=1)),
            **self.parse_arch(arch, ('embed_dims', 'num_layers', 'num_heads')))
        self.arch_settings = settings
        self.embed_dims = settings['embed_dims']
        self.num_layers = settings['num_layers']
        self.set_outputs(out_indices, out_type, self.num_layers)
        self.final_norm = final_norm

        run_options = {
            k: v
            for k, v in (ffn_cfg or {}).items() if k in RUN_KEYS
        }
        token_ffn = self.merge_ffn_cfg(
            settings['token_ffn_cfg'],
            dict(run_options, **(token_ffn_cfg or {})))
        self.tokens_to_token = T2TModule(
            in_channels,
            self.embed_dims,
            token_dims=settings['token_dims'],
            kernel_ratio=kernel_ratio,
            drop_rate=token_drop_rate,
            ffn_cfg=None if settings['token_ffn_cfg'] is None else token_ffn,
            norm_eps=norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, self.embed_dims))
        self.pos_drop = nn.Dropout(drop_rate)

        block_ffn = self.merge_ffn_cfg(settings['ffn_cfg'], ffn_cfg)
        mlp_ratio = block_ffn.pop('mlp_ratio', settings['mlp_ratio'])
        with_locality = settings['ffn_cfg'] is not None
        self.blocks = nn.ModuleList(
            LocalViTBlock(
                self.embed_dims,
                settings['num_heads'],
                mlp_ratio=mlp_ratio,
                attn_cfg=self.block_attn_cfg(
                    'Attention', qkv_bias=False, qk_scale=qk_scale),
                drop_path_rate=drop_path_rate * i /
                max(self.num_layers - 1, 1),
                with_locality=with_locality,
                ffn_cfg=block_ffn,
                norm_eps=norm_eps) for i in range(self.num_layers))
        self.norm = nn.LayerNorm(
            self.embed_dims, eps=norm_eps) if final_norm else nn.Identity()

        self._freeze_stages()

    def frozen_parts(self, num_frozen: int):
        """The tokens-to-token module and class token, the first
        ``num_frozen`` blocks, and ``norm`` when every block is frozen."""
        modules = [self.tokens_to_token, *self.blocks[:num_frozen]]
        if num_frozen >= self.num_layers:
            modules.append(self.norm)
        return modules, [self.cls_token]

    def forward(self, x: torch.Tensor) -> tuple:
        """(B, C, H, W) images -> tuple of outputs of ``out_indices``."""
        x, hw_shape = self.tokens_to_token(x, self.run_block)
        cls_token = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat([cls_token, x], dim=1)
        pos = sinusoid_encoding(x.shape[1], self.embed_dims, x.device)
        return self.forward_blocks(
            self.pos_drop(x + pos.to(x.dtype)), hw_shape)

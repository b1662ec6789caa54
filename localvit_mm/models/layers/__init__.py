from .attention import (Attention, SpatialReductionAttention, check_heads,
                        merge_heads, split_heads)
from .channel_attention import ECALayer, SELayer, build_channel_attention
from .lattice import lattice_to_tokens, tokens_to_lattice
from .life import LIFE, build_qkv_proj, parse_qkv_proj, run_qkv_proj
from .locality_ffn import LocalityFeedForward
from .patch_embed import PatchEmbed
from .performer import PerformerAttention
from .pos_embed import load_pos_embed, num_extra_positions, resize_pos_embed
from .tnt_attention import TNTAttention
from .transformer_block import LocalViTBlock, Mlp, build_attention
from .window_attention import WindowAttention

__all__ = [
    'Attention', 'SpatialReductionAttention', 'ECALayer', 'SELayer',
    'build_channel_attention', 'lattice_to_tokens', 'tokens_to_lattice',
    'LocalityFeedForward', 'LocalViTBlock', 'Mlp', 'build_attention',
    'check_heads', 'merge_heads', 'split_heads', 'PatchEmbed',
    'load_pos_embed', 'num_extra_positions', 'resize_pos_embed',
    'PerformerAttention', 'TNTAttention', 'WindowAttention', 'LIFE',
    'build_qkv_proj', 'parse_qkv_proj', 'run_qkv_proj'
]

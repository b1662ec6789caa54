from .attention import Attention, SpatialReductionAttention
from .channel_attention import ECALayer, SELayer, build_channel_attention
from .lattice import lattice_to_tokens, tokens_to_lattice
from .locality_ffn import LocalityFeedForward
from .transformer_block import LocalViTBlock, Mlp

__all__ = [
    'Attention', 'SpatialReductionAttention', 'ECALayer', 'SELayer',
    'build_channel_attention', 'lattice_to_tokens', 'tokens_to_lattice',
    'LocalityFeedForward', 'LocalViTBlock', 'Mlp'
]

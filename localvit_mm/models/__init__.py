from ..registry import register_in_codebases
from .backbones import *  # noqa: F401,F403
from .layers import *  # noqa: F401,F403

register_in_codebases()

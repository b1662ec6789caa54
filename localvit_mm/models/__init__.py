from ..registry import register_in_codebases
from .backbones import *
from .deploy import DeployMixin, has_deploy_mode, switch_to_deploy
from .layers import *

register_in_codebases()

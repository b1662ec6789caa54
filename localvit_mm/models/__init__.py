from ..registry import register_in_codebases
from .backbones import *  # noqa: F401,F403
from .deploy import (DeployMixin, has_deploy_mode,  # noqa: F401
                     switch_to_deploy)
from .layers import *  # noqa: F401,F403

register_in_codebases()

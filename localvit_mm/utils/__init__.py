from .errors import UserInputError
from .launch import (check_checkpoint, check_data_roots, latest_checkpoint,
                     load_config, setup_device)
from .safe_checkpoint import (SAFE_GLOBALS, register_safe_checkpoint_loader,
                              safe_load)

__all__ = [
    'UserInputError', 'check_checkpoint', 'check_data_roots',
    'latest_checkpoint', 'load_config', 'setup_device', 'SAFE_GLOBALS',
    'register_safe_checkpoint_loader', 'safe_load'
]

from .errors import UserInputError
from .launch import (add_launch_args, check_checkpoint, check_data_roots,
                     latest_checkpoint, load_config, parse_launch_args,
                     set_work_dir, setup_device)
from .safe_checkpoint import (SAFE_GLOBALS, register_safe_checkpoint_loader,
                              safe_load)

__all__ = [
    'UserInputError', 'add_launch_args', 'parse_launch_args', 'set_work_dir',
    'check_checkpoint', 'check_data_roots', 'latest_checkpoint', 'load_config',
    'setup_device', 'SAFE_GLOBALS', 'register_safe_checkpoint_loader',
    'safe_load'
]

from .checks import (build_model, check_checkpoint_fits, check_first_samples,
                     check_pretrained, explain_build_error, fit_report,
                     load_weights_exactly, state_dict_of)
from .errors import USER_ERROR_EXIT, UserInputError, one_line, run_main
from .image_loading import CheckedLoadImageFromFile, CorruptImageError
from .launch import (DATALOADERS, add_launch_args, check_checkpoint,
                     check_data_roots, check_run, latest_checkpoint,
                     load_config, parse_launch_args, set_work_dir,
                     setup_device)
from .safe_checkpoint import (SAFE_GLOBALS, register_safe_checkpoint_loader,
                              safe_load, weights_only_everywhere)

__all__ = [
    'UserInputError', 'USER_ERROR_EXIT', 'one_line', 'run_main', 'DATALOADERS',
    'add_launch_args', 'parse_launch_args', 'set_work_dir', 'check_checkpoint',
    'check_data_roots', 'check_run', 'latest_checkpoint', 'load_config',
    'setup_device', 'SAFE_GLOBALS', 'register_safe_checkpoint_loader',
    'safe_load', 'weights_only_everywhere', 'build_model',
    'check_checkpoint_fits', 'check_first_samples', 'check_pretrained',
    'explain_build_error', 'fit_report', 'load_weights_exactly',
    'state_dict_of', 'CheckedLoadImageFromFile', 'CorruptImageError'
]

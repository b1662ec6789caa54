from .utils.safe_checkpoint import register_safe_checkpoint_loader
from .version import __version__, version_info
from .zoo import register_model_index  # noqa: F401 (registers the zoo)

# Importing the package (every config's custom_imports does) is enough for
# mmengine and the codebases' init_model to load checkpoints weights-only.
register_safe_checkpoint_loader()

__all__ = ['__version__', 'version_info']

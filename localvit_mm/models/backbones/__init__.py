from .localvit import LocalViT  # noqa: F401
from .localvit_pvt import LocalViTPVT  # noqa: F401

from .localvit import LocalViT  # noqa: F401
from .localvit_pvt import LocalViTPVT  # noqa: F401
from .localvit_swin import LocalViTSwin  # noqa: F401
from .localvit_t2t import LocalViTT2T  # noqa: F401
from .localvit_tnt import LocalViTTNT  # noqa: F401

from .localvit_pvt import LocalViTPVT  # noqa: F401

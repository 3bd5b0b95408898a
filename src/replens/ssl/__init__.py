"""Self-supervised methods, each a small registered recipe (loss + heads + views)."""

from replens.ssl import (  # noqa: F401  (importing registers the methods)
    barlow_twins,
    byol,
    dino,
    moco,
    simclr,
    simsiam,
    swav,
    vicreg,
)
from replens.ssl.base import SSLMethod, create_method, ema_update, list_methods, momentum_copy, register_method

__all__ = ["SSLMethod", "create_method", "ema_update", "list_methods", "momentum_copy", "register_method"]

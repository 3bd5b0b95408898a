"""Self-supervised methods, each a small registered recipe (loss + heads + views),
and the training plug-ins (DDM, FDA, Q-Score regulariser) that work with all of them."""

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
from replens.ssl.base import (
    SSLMethod,
    TrainPlugin,
    create_method,
    create_plugin,
    ema_update,
    list_methods,
    list_plugins,
    momentum_copy,
    plugin_class,
    register_method,
    register_plugin,
)

__all__ = [
    "SSLMethod",
    "TrainPlugin",
    "create_method",
    "create_plugin",
    "ema_update",
    "list_methods",
    "list_plugins",
    "momentum_copy",
    "plugin_class",
    "register_method",
    "register_plugin",
]

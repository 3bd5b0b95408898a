"""Self-supervised methods, each a small registered recipe (loss + heads + views),
the supervised (and l2-robust) reference recipe, and the training plug-ins (DDM,
FDA, Q-Score regulariser) that work with all of them."""

from replens.ddm import plugin as _ddm_plugin  # noqa: F401  (registers the "ddm" training plug-in)
from replens.quality import regularizer as _quality_plugins  # noqa: F401  (registers "qscore_reg", "lasso_reg")
from replens.ssl import (  # noqa: F401  (importing registers the methods)
    barlow_twins,
    byol,
    dino,
    moco,
    simclr,
    simsiam,
    supervised,
    swav,
    vicreg,
)
from replens.ssl import dual_encoder as _dual_encoder  # noqa: F401  (registers the "dual_encoder" method)
from replens.ssl import fda as _fda_plugin  # noqa: F401  (registers the "fda" training plug-in)
from replens.ssl.base import (
    SSLMethod,
    TrainPlugin,
    create_method,
    create_plugin,
    ema_update,
    list_methods,
    list_plugins,
    method_class,
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
    "method_class",
    "momentum_copy",
    "plugin_class",
    "register_method",
    "register_plugin",
]

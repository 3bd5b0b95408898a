"""Self-supervised methods, each a small registered recipe (loss + heads + views),
the supervised (and l2-robust) reference recipe, and the training plug-ins (DDM,
FDA, Q-Score regulariser) that work with all of them.

The registries (:data:`METHODS`, :data:`PLUGINS`, :class:`replens.registry.Registry`)
find their entries by module scan: the DDM and Q-Score plug-ins register when
``PLUGINS`` is first read, so this package imports neither ``replens.ddm`` nor
``replens.quality`` (no import cycle).
"""

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
    METHODS,
    PLUGINS,
    SSLMethod,
    TrainPlugin,
    create_method,
    create_plugin,
    ema_update,
    list_methods,
    list_plugins,
    method_class,
    method_entry,
    momentum_copy,
    plugin_class,
    register_method,
    register_plugin,
)

__all__ = [
    "METHODS",
    "PLUGINS",
    "SSLMethod",
    "TrainPlugin",
    "create_method",
    "create_plugin",
    "ema_update",
    "list_methods",
    "list_plugins",
    "method_class",
    "method_entry",
    "momentum_copy",
    "plugin_class",
    "register_method",
    "register_plugin",
]

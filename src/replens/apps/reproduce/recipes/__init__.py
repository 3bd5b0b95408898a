"""Recipe modules, one per paper chapter; importing this package registers all of them.

Every module in this package is imported (``pkgutil``), so a new ``chN.py``
registers its recipes without being listed anywhere.
"""

import importlib
import pkgutil

for _info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    importlib.import_module(f"{__name__}.{_info.name}")

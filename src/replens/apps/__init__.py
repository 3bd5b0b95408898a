"""Applications on top of the library: the audit, the reproduction harness and the CLI commands.

This is the top layer. Its modules call the library's typed Python API (the
same one a notebook user calls); no library package imports from here or from
:mod:`replens.cli` (ruff's ``TID251`` banned-api rule in ``pyproject.toml``
enforces it).

* :mod:`replens.apps.audit`: ``replens audit`` (train, diagnose, explain, one report);
* :mod:`replens.apps.reproduce`: the dissertation's tables and figures as recipes;
* :mod:`replens.apps.commands`: the sub-commands that :mod:`replens.cli` discovers.
"""

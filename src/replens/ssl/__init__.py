"""Self-supervised methods, each a small registered recipe."""

from replens.ssl import simclr  # noqa: F401  (registers the method)
from replens.ssl.base import SSLMethod, create_method, list_methods, register_method

__all__ = ["SSLMethod", "create_method", "list_methods", "register_method"]

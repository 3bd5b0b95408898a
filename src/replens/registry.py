"""The one registry of replens: SSL methods, training plug-ins, backbones and data sources.

A :class:`Registry` maps a name to an object (a class, a factory, a builder)
and keeps, on the :class:`Entry`, what other code needs to know about it
without special cases: the one-line help, the display name tables print, whether
a method's loss gathers across processes, whether it learns from labels, and
any registry-specific metadata (``meta``). Registration is a decorator::

    METHODS = Registry("SSL method", scan=("replens.ssl",))

    @METHODS.register("simclr", help="SimCLR: NT-Xent over two views", display_name="SimCLR", gathers=True)
    class SimCLR(SSLMethod): ...

    METHODS.entry("simclr").gathers   # True: the loop gathers embeddings across processes

Discovery is by module scan: the modules and packages named in ``scan`` are
imported (every module of a package) the first time the registry is read, so
a new file in a scanned package registers itself without an import list.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

__all__ = ["Entry", "Registry"]

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered object and what is known about it.

    Attributes:
        name: Registry name.
        obj: The registered class, factory or builder.
        help: One line for ``replens list``.
        display_name: How tables and reports print it (default: the name).
        gathers: Its loss gathers embeddings across processes (``gather_distributed``).
        needs_labels: It learns from class labels.
        meta: Registry-specific metadata (e.g. a backbone family's placeholder, a source's options).
    """

    name: str
    obj: T
    help: str
    display_name: str
    gathers: bool = False
    needs_labels: bool = False
    meta: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> :class:`Entry`, filled by a decorator, discovered by module scan.

    Args:
        kind: What is registered, for messages (``"SSL method"``, ``"backbone"``).
        scan: Modules or packages to import before the registry is first read
            (a package: every module in it).
    """

    def __init__(self, kind: str, *, scan: Sequence[str] = ()) -> None:
        self.kind = kind
        self.scan = tuple(scan)
        self._entries: dict[str, Entry[T]] = {}
        self._scanned = not self.scan

    # ------------------------------------------------------------------ writing
    def add(
        self,
        name: str,
        obj: T,
        *,
        help: str,
        display_name: str | None = None,
        gathers: bool = False,
        needs_labels: bool = False,
        **meta: Any,
    ) -> Entry[T]:
        """Register ``obj`` under ``name``.

        Raises:
            ValueError: ``name`` is empty or already registered.
        """
        if not name:
            raise ValueError(f"a {self.kind} needs a name")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        text = help.strip().splitlines()[0] if help.strip() else ""
        entry = Entry(name, obj, text, display_name or name, bool(gathers), bool(needs_labels), dict(meta))
        self._entries[name] = entry
        return entry

    def register(
        self,
        name: str,
        *,
        help: str,
        display_name: str | None = None,
        gathers: bool = False,
        needs_labels: bool = False,
        **meta: Any,
    ) -> Callable[[T], T]:
        """Decorator form of :meth:`add`; returns the object unchanged."""

        def decorate(obj: T) -> T:
            self.add(
                name, obj, help=help, display_name=display_name, gathers=gathers, needs_labels=needs_labels, **meta
            )
            return obj

        return decorate

    def replace(self, name: str, obj: T) -> Entry[T]:
        """Swap the object of a registered entry, keeping its metadata (e.g. a fake factory in a test)."""
        entry = dataclasses.replace(self.entry(name), obj=obj)
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> Entry[T] | None:
        """Take ``name`` out (e.g. a throw-away entry of a test); its entry, or None when it was not there."""
        return self._entries.pop(name, None)

    def copy(self) -> Registry[T]:
        """An independent registry with the same entries (scanned first), to extend without touching this one."""
        self.discover()
        other: Registry[T] = Registry(self.kind)
        other._entries = dict(self._entries)
        return other

    # ------------------------------------------------------------------ reading
    def discover(self) -> None:
        """Import the modules of ``scan`` once (their imports register their entries)."""
        if self._scanned:
            return
        self._scanned = True
        for target in self.scan:
            module = importlib.import_module(target)
            for info in pkgutil.iter_modules(getattr(module, "__path__", []), prefix=f"{target}."):
                importlib.import_module(info.name)

    def entry(self, name: str) -> Entry[T]:
        """The entry of ``name``.

        Raises:
            KeyError: Unknown name; the message lists the registered names.
        """
        self.discover()
        found = self._entries.get(name)
        if found is None:
            raise KeyError(f"unknown {self.kind} {name!r}; registered: {', '.join(self.names()) or 'none'}")
        return found

    def get(self, name: str) -> T:
        """The object registered as ``name`` (KeyError listing the known names otherwise)."""
        return self.entry(name).obj

    def find(self, name: str, *, scan: bool = True) -> Entry[T] | None:
        """The entry of ``name``, or None (``scan=False``: without discovery, e.g. while a scanned module registers)."""
        if scan:
            self.discover()
        return self._entries.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self.discover()
        return sorted(self._entries)

    def entries(self) -> list[Entry[T]]:
        """Every entry, sorted by name."""
        return [self._entries[name] for name in self.names()]

    def help(self) -> dict[str, str]:
        """Registered names and their one-line help, sorted."""
        return {entry.name: entry.help for entry in self.entries()}

    def __contains__(self, name: object) -> bool:
        self.discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

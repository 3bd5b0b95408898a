"""The one Registry: its contract, discovery by module scan, and every entry of every registry
(SSL methods, training plug-ins, backbones, data sources, reproduce recipes)."""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import pytest

from replens.apps.reproduce.registry import RECIPES, Recipe
from replens.data import SOURCES
from replens.models import BACKBONES
from replens.registry import Registry
from replens.ssl import METHODS, PLUGINS, SSLMethod, TrainPlugin

REGISTRIES = {"methods": METHODS, "plugins": PLUGINS, "backbones": BACKBONES, "sources": SOURCES, "recipes": RECIPES}
EVERY_ENTRY = [(kind, name) for kind, registry in REGISTRIES.items() for name in registry.names()]


@pytest.mark.parametrize(("kind", "name"), EVERY_ENTRY)
def test_every_entry_has_help_a_display_name_and_its_registry_metadata(kind: str, name: str) -> None:
    entry = REGISTRIES[kind].entry(name)
    assert entry.name == name and entry.help.strip() and "\n" not in entry.help and entry.display_name.strip()
    if kind == "methods":
        assert issubclass(entry.obj, SSLMethod) and entry.obj.name == name
        assert entry.obj.needs_labels == entry.needs_labels
        # the loop passes gather_distributed=True on several processes exactly to the methods that gather
        assert ("gather_distributed" in inspect.signature(entry.obj.__init__).parameters) == entry.gathers
    elif kind == "plugins":
        assert issubclass(entry.obj, TrainPlugin) and entry.obj.name == name and not entry.gathers
    elif kind == "backbones":
        assert isinstance(entry.meta["family"], bool) and entry.meta["placeholder"].startswith("<")
        assert callable(entry.obj)
    elif kind == "sources":
        assert isinstance(entry.meta["options"], dict) and isinstance(entry.meta["composite"], bool)
        assert f"{name}:" in entry.help  # every help line shows an example spec
    else:
        assert isinstance(entry.obj, Recipe) and entry.obj.id == name and entry.help == entry.obj.title
        assert entry.meta == {"kind": entry.obj.kind, "section": entry.obj.section}
        assert (entry.obj.claim is None) != (not entry.obj.no_claim)  # a claim, or the reason it has none


def test_the_paper_display_names_are_on_the_entries() -> None:
    shown = {name: METHODS.entry(name).display_name for name in METHODS.names()}
    assert shown["simclr"] == "SimCLR" and shown["barlow_twins"] == "Barlow Twins" and shown["swav"] == "SwaV"
    assert [n for n in METHODS.names() if METHODS.entry(n).gathers] == ["barlow_twins", "simclr", "vicreg"]
    assert [n for n in METHODS.names() if METHODS.entry(n).needs_labels] == ["supervised"]
    assert {"ddm", "fda", "qscore_reg", "lasso_reg"} <= set(PLUGINS.names())


def test_registry_contract(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    registry: Registry[object] = Registry("thing")

    @registry.register("b", help="B\nsecond line dropped", display_name="Bee", gathers=True, colour="yellow")
    class B:
        pass

    registry.add("a", object(), help="A")
    assert registry.names() == ["a", "b"] and list(registry) == ["a", "b"] and len(registry) == 2 and "b" in registry
    entry = registry.entry("b")
    assert entry.obj is B and entry.help == "B" and entry.display_name == "Bee" and entry.gathers
    assert entry.meta == {"colour": "yellow"} and registry.entry("a").display_name == "a"
    with pytest.raises(ValueError, match="already registered"):
        registry.add("b", B, help="again")
    with pytest.raises(KeyError, match="unknown thing 'c'; registered: a, b"):
        registry.get("c")
    assert registry.find("c") is None and registry.help() == {"a": "A", "b": "B"}
    copy = registry.copy()
    copy.replace("b", int)
    assert copy.get("b") is int and copy.entry("b").display_name == "Bee" and registry.get("b") is B
    # discovery: reading a registry imports every module of its scanned packages once
    package = tmp_path / "scanned_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        "from replens.registry import Registry\nTHINGS = Registry('thing', scan=('scanned_pkg',))\n"
    )
    (package / "one.py").write_text("from scanned_pkg import THINGS\nTHINGS.add('one', 1, help='the one')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        import scanned_pkg

        assert "scanned_pkg.one" not in sys.modules
        assert scanned_pkg.THINGS.names() == ["one"] and "scanned_pkg.one" in sys.modules
    finally:
        for module in [m for m in sys.modules if m.startswith("scanned_pkg")]:
            del sys.modules[module]

"""Spec parsing, the registry and shard path expansion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from replens.data import (
    ArraySource,
    DataError,
    SourceSpec,
    expand_braces,
    expand_paths,
    list_sources,
    open_source,
    parse_spec,
    register_source,
    source_options,
)
from replens.data import sources as registry_module

BUILT_IN = {"folder", "wds", "pacs", "tv", "npz", "npy", "world", "multi"}


def test_parse_spec_splits_scheme_path_and_options() -> None:
    spec = parse_spec("wds:/d/train-{0..4}.tar.gz?limit=10&subset_seed=3&size=16&max_bad=0.2")
    assert spec == SourceSpec(
        "wds",
        "/d/train-{0..4}.tar.gz",
        {"limit": "10", "subset_seed": "3", "size": "16", "max_bad": "0.2"},
    )
    assert spec.get_int("limit") == 10 and spec.get_float("max_bad") == 0.2
    assert parse_spec(str(spec)) == spec
    assert parse_spec("WDS:/x.tar") == SourceSpec("wds", "/x.tar", {})
    assert parse_spec("pacs:/p?domains=photo, sketch").get_list("domains") == ["photo", "sketch"]


def test_parse_spec_tv_keeps_name_and_root_in_the_path() -> None:
    spec = parse_spec("tv:CIFAR10:/data/cifar?train=0")
    assert (spec.scheme, spec.path, spec.options) == ("tv", "CIFAR10:/data/cifar", {"train": "0"})
    assert spec.get_bool("train") is False


def test_parse_multi_spec_keeps_part_options_and_reads_its_own_last() -> None:
    spec = parse_spec("multi:npz:/a.npz?limit=3|folder:/b?domain=x|?domain_names=p,q&limit=4")
    assert spec.path == "npz:/a.npz?limit=3|folder:/b?domain=x"
    assert spec.options == {"domain_names": "p,q", "limit": "4"}
    assert parse_spec(str(spec)) == spec
    assert parse_spec("multi:npz:/a.npz|npz:/b.npz").options == {}


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("nosuch:/x", "unknown source scheme 'nosuch'; known: "),
        ("/just/a/path.tar", "does not start with SCHEME:"),
        ("wds:", "has no path"),
        ("wds:/x.tar?limit", "option 'limit' in 'wds:/x.tar?limit' has no value"),
        ("wds:/x.tar?colour=red", "unknown option 'colour'"),
        ("wds:/x.tar?limit=1&limit=2", "option 'limit' is given twice"),
        ("wds:/x.tar?limit=ten", "option 'limit' of 'wds:/x.tar?limit=ten' must be an integer"),
        ("wds:/x.tar?limit=0", "option 'limit'"),
        ("wds:/x.tar?subset_seed=1", "option 'subset_seed'"),
        ("wds:/x.tar?max_bad=2", "option 'max_bad'"),
        ("wds:/x.tar?size=big", "option 'size'"),
        ("multi:npz:/a.npz||npz:/b.npz", "empty part"),
        ("multi:npz:/a.npz|bogus:/b", "unknown source scheme 'bogus'"),
        ("pacs:/p?domain=photo", "unknown option 'domain'"),
    ],
)
def test_parse_spec_errors_are_readable(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=None) as info:
        parse_spec(spec)
    assert message in str(info.value)


def test_unknown_scheme_lists_the_known_ones() -> None:
    with pytest.raises(DataError) as info:
        parse_spec("nosuch:/x")
    for scheme in BUILT_IN:
        assert scheme in str(info.value)


def test_list_sources_has_every_scheme_with_an_example() -> None:
    listed = list_sources()
    assert BUILT_IN <= set(listed)
    for scheme, help_text in listed.items():
        assert f"{scheme}:" in help_text, scheme  # every help line shows an example spec
    assert {"limit", "subset_seed", "size", "max_bad", "domains"} <= set(source_options("pacs"))


def test_register_source_adds_a_scheme(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_module, "SOURCES", registry_module.SOURCES.copy())

    @register_source("zeros", "black images, e.g. zeros:5?side=4", options={"side": "side"})
    def build(spec: SourceSpec, *, image_size: int | None, split: str | None) -> ArraySource:
        side = spec.get_int("side", 2)
        n = int(spec.path)
        return ArraySource(np.zeros((n, side, side, 3), np.uint8), np.arange(n) % 2)

    assert "zeros" in list_sources()
    assert len(open_source(SourceSpec("zeros", "4", {"side": "3"}))) == 4
    with pytest.raises(DataError, match="unknown option 'sides'"):
        open_source(SourceSpec("zeros", "4", {"sides": "3"}))
    source = open_source("zeros:5?side=4&limit=3")
    assert len(source) == 3 and source[0]["image"].shape == (3, 4, 4)
    assert source.spec == "zeros:5?side=4&limit=3"
    with pytest.raises(ValueError, match="already registered"):
        register_source("zeros", "again")(lambda spec, *, image_size, split: source)
    with pytest.raises(DataError, match="option 'side' of 'zeros:5\\?side=x' must be an integer"):
        open_source("zeros:5?side=x")


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("train-{0..3}.tar", ["train-0.tar", "train-1.tar", "train-2.tar", "train-3.tar"]),
        ("s-{08..10}.tar", ["s-08.tar", "s-09.tar", "s-10.tar"]),
        ("s-{0..6..3}", ["s-0", "s-3", "s-6"]),
        ("s-{2..0}", ["s-2", "s-1", "s-0"]),
        ("{photo,sketch}.tar", ["photo.tar", "sketch.tar"]),
        ("{a,b{1..2}}-{x,y}", ["a-x", "a-y", "b1-x", "b1-y", "b2-x", "b2-y"]),
        ("d/{split}-{0,1}.tar", ["d/{split}-0.tar", "d/{split}-1.tar"]),
        ("plain.tar", ["plain.tar"]),
    ],
)
def test_expand_braces(pattern: str, expected: list[str]) -> None:
    assert expand_braces(pattern) == expected


def test_expand_braces_rejects_unbalanced() -> None:
    with pytest.raises(DataError, match="unbalanced"):
        expand_braces("train-{0..3.tar")


def test_expand_paths_comma_lists_globs_and_directories(tmp_path: Path) -> None:
    for name in ("a-0.tar", "a-1.tar", "a-2.tar.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    d = str(tmp_path)
    assert expand_paths(f"{d}/a-{{0..1}}.tar,{d}/a-2.tar.gz") == [
        f"{d}/a-0.tar",
        f"{d}/a-1.tar",
        f"{d}/a-2.tar.gz",
    ]
    assert expand_paths(f"{d}/a-*") == [f"{d}/a-0.tar", f"{d}/a-1.tar", f"{d}/a-2.tar.gz"]
    assert expand_paths(d) == [f"{d}/a-0.tar", f"{d}/a-1.tar", f"{d}/a-2.tar.gz"]
    assert expand_paths(f"{d}/a-0.tar,{d}/a-0.tar") == [f"{d}/a-0.tar"]
    with pytest.raises(DataError, match="shard not found: .*a-5.tar"):
        expand_paths(f"{d}/a-{{0,5}}.tar")
    with pytest.raises(DataError, match="3 shards not found: .*a-2.tar.*a-3.tar"):
        expand_paths(f"{d}/a-{{0..4}}.tar")
    with pytest.raises(DataError, match="no files match"):
        expand_paths(f"{d}/b-*.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no shard files"):
        expand_paths(f"{d}/empty")

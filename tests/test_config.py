from dataclasses import dataclass, field

import pytest
import yaml

from replens.config import ConfigError, apply_overrides, load_config
from replens.runs import RunDir, atomic_write_text


@dataclass
class Inner:
    lr: float = 0.1
    sizes: list[int] = field(default_factory=lambda: [1, 2])


@dataclass
class Outer:
    name: str = "a"
    steps: int | None = None
    flag: bool = False
    inner: Inner = field(default_factory=Inner)


def test_overrides_convert_types_and_nest():
    cfg = apply_overrides(Outer(), ["inner.lr=0.5", "steps=3", "flag=true", "inner.sizes=[4, 5]", "name=b"])
    assert cfg == Outer(name="b", steps=3, flag=True, inner=Inner(lr=0.5, sizes=[4, 5]))
    assert apply_overrides(cfg, ["steps=null"]).steps is None


def test_unknown_keys_are_named():
    with pytest.raises(ConfigError, match="inner.nope"):
        apply_overrides(Outer(), ["inner.nope=1"])
    with pytest.raises(ConfigError, match="key=value"):
        apply_overrides(Outer(), ["steps"])
    with pytest.raises(ConfigError, match="inner.lr"):
        apply_overrides(Outer(), ["inner.lr=abc"])


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"name": "file", "inner": {"lr": 0.2}}))
    cfg = load_config(Outer, path, ["inner.lr=0.3"])
    assert cfg.name == "file" and cfg.inner.lr == 0.3 and cfg.inner.sizes == [1, 2]


def test_run_dir_writes_config_and_metrics_atomically(tmp_path):
    run = RunDir(tmp_path / "run")
    run.write_config({"a": 1})
    run.write_metrics({"acc": 0.5})
    assert yaml.safe_load((run / "config.yaml").read_text())["a"] == 1
    assert '"acc": 0.5' in (run / "metrics.json").read_text()
    assert not [p for p in run.path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "f.txt"
    atomic_write_text(path, "old")
    from replens.runs import atomic_write

    def broken(tmp):
        tmp.write_text("partial")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        atomic_write(path, broken)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


@dataclass
class WithDict:
    args: dict[str, object] = field(default_factory=dict)
    inner: Inner = field(default_factory=Inner)


def test_dict_fields_take_free_form_nested_keys():
    cfg = apply_overrides(WithDict(), ["args.ddm.prefix_dim=16", "args.ddm.lam=0.5", "inner.lr=1"])
    assert cfg.args == {"ddm": {"prefix_dim": 16, "lam": 0.5}} and cfg.inner.lr == 1.0
    with pytest.raises(ConfigError, match="not a section"):
        apply_overrides(WithDict(), ["inner.lr.x=1"])

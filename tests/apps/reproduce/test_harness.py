"""The ``replens reproduce`` harness: registry, paper numbers, runner, report, paper configs and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

import replens.apps.commands.reproduce as reproduce_command
import replens.apps.reproduce.registry as registry
import replens.apps.reproduce.report as report_module
from replens.apps.reproduce import (
    PAPER_TRAIN,
    SMALL_TRAIN,
    SMALL_WORLD_TRAIN,
    RecipeContext,
    RecipeResult,
    get_recipe,
    list_recipes,
    load_paper_numbers,
    recipe,
    resolve_data,
    run_recipe,
)
from replens.apps.reproduce import paper as paper_module
from replens.apps.reproduce.helpers import pyplot, save_figure
from replens.apps.reproduce.report import latest_results, markdown_table, paper_numbers, recipe_markdown, write_report
from replens.cli import main
from replens.config import ConfigError

MY_IDS = ["table-2.1", "table-2.2", "table-2.3", "table-2.4", "fig-2.2", "fig-2.3", "fig-2.4", "fig-2.5",
          "table-5.1", "table-5.2", "table-5.3", "table-5.4", "table-5.5", "fig-5.2", "fig-5.3", "fig-5.4",
          "table-6.1", "table-6.2", "fig-6.4", "table-c.1", "table-c.2"]


@pytest.fixture
def scratch_recipe():
    """Register throw-away recipes and remove them afterwards."""
    added: list[str] = []

    def add(id: str, fn, kind: str = "table") -> None:
        recipe(id, title="scratch", section="9.9", kind=kind, needs="nothing")(fn)
        added.append(id)

    yield add
    for id in added:
        registry.RECIPES.remove(id)


# ---------------------------------------------------------------- registry
def test_every_chapter_2_5_6_c_item_has_a_recipe_and_paper_numbers() -> None:
    ids = [r.id for r in list_recipes()]
    assert set(MY_IDS) <= set(ids)
    for id in ids:  # the contract: every registered recipe has the paper's numbers
        entry = load_paper_numbers(id)
        assert entry["section"] and entry["title"]
        assert "rows" in entry or entry.get("description")


def test_list_is_sorted_by_chapter_tables_first_then_number() -> None:
    recs = list_recipes()
    keys = [registry._sort_key(r) for r in recs]
    assert keys == sorted(keys)
    ids = [r.id for r in recs]
    assert ids.index("table-2.4") < ids.index("fig-2.2") < ids.index("table-5.1") < ids.index("table-c.1")
    assert all(r.kind == ("table" if r.id.startswith("table-") else "figure") for r in recs)


def test_recipe_decorator_rejects_bad_and_duplicate_ids(scratch_recipe) -> None:
    scratch_recipe("table-9.1", lambda ctx: RecipeResult(rows=[]))
    with pytest.raises(ValueError, match="registered twice"):
        recipe("table-9.1", title="x", section="9", kind="table", needs="-")(lambda ctx: None)
    for bad in ("Table-9.2", "tab-9.2", "table-9"):
        with pytest.raises(ValueError, match="must look like"):
            recipe(bad, title="x", section="9", kind="table", needs="-")
    with pytest.raises(ValueError, match="does not match"):
        recipe("fig-9.3", title="x", section="9", kind="table", needs="-")


def test_get_recipe_is_case_insensitive_and_names_close_matches() -> None:
    assert get_recipe("TABLE-2.1").id == "table-2.1"
    with pytest.raises(KeyError, match="table-2.1"):
        get_recipe("table-2.11")


def test_resolve_data_shorthands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLENS_SHARED_DATA", raising=False)
    monkeypatch.delenv("REPLENS_DATA", raising=False)
    with pytest.raises(ValueError, match="REPLENS_DATA"):  # no machine's folder is assumed
        resolve_data("cifar10")
    (tmp_path / "d" / "cifar10").mkdir(parents=True)
    assert resolve_data(f"cifar10:{tmp_path}/d") == f"wds:{tmp_path}/d/cifar10/{{split}}-*.tar.gz"  # a flag
    monkeypatch.setenv("REPLENS_DATA", str(tmp_path))
    assert resolve_data(None) is None and resolve_data("world") is None
    assert resolve_data("cifar10") == f"wds:{tmp_path}/cifar10/{{split}}-*.tar.gz"
    assert resolve_data("pacs") == f"pacs:{tmp_path}/pacs"
    assert resolve_data("pacs:/data/x?domains=photo") == "pacs:/data/x?domains=photo"  # the ordinary pacs: spec
    (tmp_path / "root" / "pacs").mkdir(parents=True)
    assert resolve_data(f"pacs:{tmp_path}/root") == f"pacs:{tmp_path}/root/pacs"
    assert resolve_data(f"cifar10:{tmp_path}/other") == f"wds:{tmp_path}/other/cifar10/{{split}}-*.tar.gz"
    assert resolve_data("wds:/x/train-0.tar") == "wds:/x/train-0.tar"


# ---------------------------------------------------------------- context and configs
def test_train_config_layers_budget_recipe_and_forced_overrides(tmp_path: Path) -> None:
    ctx = RecipeContext(budget="small", data=None, out=tmp_path / "a", seed=5,
                        world_overrides={"size": 16}, train_overrides={"max_steps": 3})
    cfg = ctx.train_config(method="byol", epochs=9)
    assert (cfg.method, cfg.epochs, cfg.max_steps, cfg.seed) == ("byol", 9, 3, 5)
    assert cfg.backbone == SMALL_TRAIN["backbone"] and cfg.image_size == 16  # the world's side at the small budget
    assert ctx.pick(1, 2) == 1 and ctx.world_config().n == 3000 and ctx.world_config().size == 16
    with pytest.raises(ConfigError, match="unknown TrainConfig fields"):
        ctx.train_config(epochz=3)
    paper = RecipeContext(budget="paper", data=None, out=tmp_path / "b")
    pcfg = paper.train_config()
    assert (pcfg.backbone, pcfg.optimizer, pcfg.epochs) == (PAPER_TRAIN["backbone"], "lars", 200)
    with pytest.raises(ValueError, match="budget"):
        RecipeContext(budget="huge", data=None, out=tmp_path / "c")


def test_small_budget_world_runs_get_the_world_views_and_colour_runs_keep_colour(tmp_path: Path) -> None:
    """On the world the small budget adds the world preset's views and lr; real data and colour-domain
    chapter-2 runs do not get the hue turn and grayscale that would erase colour as a domain."""
    from replens.apps.reproduce.recipes import ch2

    world = RecipeContext(budget="small", data=None, out=tmp_path / "w")
    cfg = world.train_config(method="simclr")
    assert cfg.lr == SMALL_WORLD_TRAIN["lr"] == 4e-3 and cfg.channels_last
    assert cfg.view_args == {"crop_scale": [0.3, 1.0], "hue": 0.5, "gray_prob": 0.5}
    colour = world.train_config(**ch2.train_config(world, "simclr", ddm={}, colour=True))
    assert colour.view_args == {"crop_scale": [0.3, 1.0]} and colour.lr == 4e-3 and colour.plugins == ["ddm"]
    plain = world.train_config(**ch2.train_config(world, "simclr"))
    assert plain.view_args["hue"] == 0.5
    real = RecipeContext(budget="small", data="pacs:/nowhere", out=tmp_path / "r")
    for c in (real.train_config(method="simclr"), real.train_config(**ch2.train_config(real, "simclr", colour=True))):
        assert c.lr == SMALL_TRAIN["lr"] == 2e-3 and c.view_args == {} and not c.channels_last
    paper = RecipeContext(budget="paper", data=None, out=tmp_path / "p")
    assert paper.train_config(**ch2.train_config(paper, "simclr", colour=True)).view_args == {}


def test_paper_configs_are_valid_for_the_engine(tmp_path: Path) -> None:
    """The paper protocols of chapters 2, 5 and 6 build TrainConfigs whose methods, heads and plug-ins exist."""
    from replens.apps.reproduce.recipes import ch2, ch5, ch6
    from replens.models import create_backbone
    from replens.ssl import create_method, create_plugin
    from replens.tokens import TokenTrainConfig

    paper = RecipeContext(budget="paper", data=None, out=tmp_path)
    for method in ch2.SIX_METHODS:
        cfg = paper.train_config(**ch2.train_config(paper, method, ddm={}))
        assert cfg.backbone == "vit_s16" and cfg.plugins == ["ddm"] and cfg.plugin_args["ddm"]["prefix_dim"] == 24
        assert cfg.plugin_args["ddm"]["critic_lr"] == 0.005 and cfg.plugin_args["ddm"]["ssl_weight"] == 0.5
        create_plugin("ddm", **cfg.plugin_args["ddm"])
    for method, expected in (("simclr", 0.1), ("moco", 0.1)):
        cfg = paper.train_config(**ch5.train_config(paper, method, fda={}))
        assert (cfg.backbone, cfg.optimizer, cfg.lr, cfg.weight_decay, cfg.epochs) == ("resnet50", "lars", 0.2,
                                                                                        1.5e-6, 1000)
        assert cfg.method_args["temperature"] == expected and cfg.plugins == ["fda"]
    for method in ch5.FOUR_METHODS:
        cfg = paper.train_config(**ch5.train_config(paper, method))
        with torch.device("meta"):
            create_method(cfg.method, create_backbone(cfg.backbone), **cfg.method_args)
    tcfg = ch6._train_config(paper, "tokens", 118_287)
    assert isinstance(tcfg, TokenTrainConfig) and tcfg.batch_size == 256 and tcfg.steps == 100 * (118_287 // 256)
    assert tcfg.encoder_config().width == 512 and tcfg.encoder_config().layers == 8
    assert ch6.PAPER_LR_SWEEP == (1e-6, 5e-6, 1e-5, 5e-5)


# ---------------------------------------------------------------- paper numbers
def test_paper_numbers_are_copied_from_the_paper() -> None:
    t21 = load_paper_numbers("table-2.1")
    assert t21["section"] == "2.4.2" and t21["rows"][0]["photo"] == "97.54 / 98.28"
    assert [r["model"] for r in t21["rows"]] == ["SimCLR", "MoCo", "BYOL", "DINO", "SimSiam", "Barlow Twins"]
    assert load_paper_numbers("table-2.4")["rows"][3]["stl-10"] == "84.7 / 82.35"
    assert load_paper_numbers("table-5.1")["rows"][1]["MoCo v2"] == "73.0 (0.4)"
    assert load_paper_numbers("table-5.2")["rows"][4]["iNaturalist"] == 46.7
    assert load_paper_numbers("table-5.5")["rows"][3]["x"] == 48.8
    assert load_paper_numbers("table-6.2")["rows"][0]["text correct"] == 30.75
    assert load_paper_numbers("fig-2.4")["rows"][2]["linear top-1"] == 87.06
    assert load_paper_numbers("table-c.2")["rows"][4]["p (right)"] == 0.1


def test_paper_numbers_match_the_dissertation_text_when_present() -> None:
    text_path = Path("/work/shared/seed/000_1795e3180781ea3d.txt")
    if not text_path.is_file():
        pytest.skip("the paper text is not on this machine")
    text = text_path.read_text()
    for id in ("table-2.1", "table-2.2", "table-2.3", "table-2.4", "table-5.1", "table-5.2", "table-6.1", "table-6.2"):
        for row in load_paper_numbers(id)["rows"]:
            for key, cell in row.items():
                for part in str(cell).replace("(", " ").replace(")", " ").replace("/", " ").split():
                    if part.replace(".", "").isdigit():
                        assert part in text, f"{id} {key}: {part} is not in the paper text"


def test_malformed_paper_yaml_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paper_module, "paper_numbers_dir", lambda: tmp_path)
    paper_module._all_numbers.cache_clear()
    try:
        (tmp_path / "x.yaml").write_text(yaml.safe_dump({"table-9.1": {"section": "9", "title": "t",
                                                                       "columns": ["a"], "rows": [{"b": 1}]}}))
        with pytest.raises(ValueError, match=r"x\.yaml: table-9\.1: row 0 has keys outside columns"):
            load_paper_numbers("table-9.1")
        paper_module._all_numbers.cache_clear()
        (tmp_path / "x.yaml").write_text(yaml.safe_dump({"fig-9.1": {"title": "t", "description": "d"}}))
        with pytest.raises(ValueError, match="missing keys"):
            load_paper_numbers("fig-9.1")
        paper_module._all_numbers.cache_clear()
        (tmp_path / "x.yaml").write_text(yaml.safe_dump({"fig-9.1": {"section": 9, "title": "t", "description": "d"}}))
        assert load_paper_numbers("fig-9.1")["section"] == "9"
        with pytest.raises(KeyError, match="no paper numbers"):
            load_paper_numbers("fig-9.2")
    finally:
        paper_module._all_numbers.cache_clear()


# ---------------------------------------------------------------- runner
def _fake_paper(monkeypatch: pytest.MonkeyPatch, ids: dict[str, dict]) -> None:
    real = paper_module.load_paper_numbers
    fake = lambda id: ids[id] if id in ids else real(id)  # noqa: E731
    for module in (paper_module, registry, report_module, reproduce_command):  # each binds the name at import
        monkeypatch.setattr(module, "load_paper_numbers", fake)


def test_run_recipe_writes_result_and_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scratch_recipe) -> None:
    def fn(ctx: RecipeContext) -> RecipeResult:
        save_figure(pyplot().figure(), ctx.out / "f.png")
        return RecipeResult(rows=[{"z": 1.5, "a": "x"}, {"z": 2.0, "a": "y"}], figures=["f.png"],
                            protocol={"steps": 3}, notes="tiny")

    scratch_recipe("fig-9.1", fn, kind="figure")
    _fake_paper(monkeypatch, {"fig-9.1": {"section": "9.9", "title": "paper fig", "description": "what it shows"}})
    ctx = RecipeContext(budget="small", data=None, out=tmp_path / "run", seed=3, options={"k": 1})
    res = run_recipe("fig-9.1", ctx)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert saved["rows"] == res["rows"] == [{"z": 1.5, "a": "x"}, {"z": 2.0, "a": "y"}]
    assert saved["columns"] == ["z", "a"] and saved["paper"]["description"] == "what it shows"
    assert saved["protocol"]["budget"] == "small" and saved["protocol"]["steps"] == 3
    assert saved["protocol"]["options"] == {"k": 1} and saved["protocol"]["data"].startswith("world(")
    assert saved["seconds"] >= 0 and saved["kind"] == "figure"
    table = (tmp_path / "run" / "table.md").read_text()
    assert "| z | a |" in table and "what it shows" in table and "![fig-9.1 f](f.png)" in table


def test_runner_checks_paper_numbers_first_and_validates_the_result(tmp_path: Path, scratch_recipe) -> None:
    called = []
    scratch_recipe("table-9.2", lambda ctx: called.append(1))
    with pytest.raises(KeyError, match="no paper numbers"):
        run_recipe("table-9.2", RecipeContext(budget="small", data=None, out=tmp_path / "a"))
    assert not called


def test_runner_rejects_missing_figures_and_wrong_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          scratch_recipe) -> None:
    scratch_recipe("table-9.3", lambda ctx: RecipeResult(rows=[], figures=["nope.png"]))
    scratch_recipe("table-9.4", lambda ctx: {"rows": []})
    entry = {"section": "9", "title": "t", "description": "d"}
    _fake_paper(monkeypatch, {"table-9.3": entry, "table-9.4": entry})
    with pytest.raises(FileNotFoundError, match="nope.png"):
        run_recipe("table-9.3", RecipeContext(budget="small", data=None, out=tmp_path / "a"))
    with pytest.raises(TypeError, match="not a RecipeResult"):
        run_recipe("table-9.4", RecipeContext(budget="small", data=None, out=tmp_path / "b"))


# ---------------------------------------------------------------- report
def _result(root: Path, name: str, id: str, data: str, when: str, value: float, budget: str = "small",
            key: str = "paper", seeds: list[int] | None = None) -> None:
    """A result file; ``key="seed"`` writes the dissertation's numbers where files of earlier versions had them."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "fig.png").write_bytes(b"png")
    (folder / "result.json").write_text(json.dumps({
        "id": id, "title": "T", "section": "2.4.2", "kind": "table", "budget": budget, "rows": [{"v": value}],
        "columns": ["v"], "figures": ["fig.png"], "protocol": {"data": data}, "notes": "", "seconds": 12.0,
        "finished_at": when, key: load_paper_numbers(id), **({"seeds": seeds} if seeds else {})}))


def test_result_files_with_the_papers_numbers_under_the_old_seed_key_still_load(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _result(root, "old", "table-2.1", "world(n=3000)", "2026-01-01T00:00:00Z", 11.0, key="seed")
    _result(root, "new", "table-2.1", "pacs:/data/pacs", "2026-01-01T00:00:00Z", 22.0)
    found = latest_results(root)["table-2.1"]
    numbers = load_paper_numbers("table-2.1")
    assert found["world"]["paper"] == numbers and found["pacs"]["paper"] == numbers
    assert paper_numbers({"paper": numbers, "seed": {"title": "stale"}}) == numbers  # the current key wins
    assert paper_numbers({"seed": 3}) == {} and paper_numbers({}) == {}
    text = recipe_markdown(found["world"])
    assert f"**Paper** (section {numbers['section']}): {numbers['title']}" in text and "97.54 / 98.28" in text
    out = tmp_path / "R.md"
    write_report(root, out, progress=False)
    assert out.read_text().count("97.54 / 98.28") == 1  # the paper's table once, above the first data set


def test_report_takes_the_latest_result_per_data_set(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _result(root, "a", "table-2.1", "world(n=3000)", "2026-01-01T00:00:00Z", 11.0)
    _result(root, "b", "table-2.1", "world(n=3000)", "2026-01-02T00:00:00Z", 22.0)
    _result(root, "c", "table-2.1", "pacs:/data/pacs", "2026-01-01T00:00:00Z", 33.0)
    _result(root, "d", "table-2.1", "world(n=3000)", "2026-01-03T00:00:00Z", 44.0, budget="paper")
    found = latest_results(root)
    assert found["table-2.1"]["world"]["rows"] == [{"v": 22.0}] and found["table-2.1"]["pacs"]["rows"] == [{"v": 33.0}]
    out = tmp_path / "docs" / "REPRODUCTION.md"
    info = write_report(root, out, progress=False)
    text = out.read_text()
    assert "table-2.1" in info["with_result"] and "table-2.2" in info["not_run"]
    assert "| 22.00 |" in text and "| 33.00 |" in text and "| 44.00 |" not in text
    assert "### table-2.1 on pacs" in text and "97.54 / 98.28" in text
    # figures are copied beside the report (run folders are not shipped) and linked relatively
    for kind, run in (("world", "b"), ("pacs", "c")):
        assert f"](reproduction-figures/table-2.1-{kind}/fig.png)" in text
        copy = out.parent / "reproduction-figures" / f"table-2.1-{kind}" / "fig.png"
        assert copy.read_bytes() == (root / run / "fig.png").read_bytes()
    assert "**Ours**: not run" in text and "replens reproduce table-2.2" in text


def test_report_run_missing_runs_and_records_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      scratch_recipe) -> None:
    scratch_recipe("table-9.5", lambda ctx: RecipeResult(rows=[{"acc": 50.0}]))

    def boom(ctx: RecipeContext) -> RecipeResult:
        raise RuntimeError("no GPU here")

    scratch_recipe("table-9.6", boom)
    entry = {"section": "9", "title": "t", "columns": ["acc"], "rows": [{"acc": 60.0}]}
    _fake_paper(monkeypatch, {"table-9.5": entry, "table-9.6": entry})
    mine = [registry.RECIPES.get("table-9.5"), registry.RECIPES.get("table-9.6")]
    monkeypatch.setattr(report_module, "list_recipes", lambda: mine)
    info = write_report(tmp_path / "runs", tmp_path / "R.md", run_missing=True, progress=False)
    assert info["ran"] == ["table-9.5"] and "no GPU here" in info["failed"]["table-9.6"]
    text = (tmp_path / "R.md").read_text()
    assert "| 50.00 |" in text and "| 60.00 |" in text and "failed: RuntimeError: no GPU here" in text


def test_markdown_table_formats_cells() -> None:
    text = markdown_table([{"a": 1.23456, "b": "x|y", "c": True}, {"a": float("nan")}], ["a", "b", "c"])
    assert text.splitlines() == ["| a | b | c |", "|---|---|---|", "| 1.23 | x\\|y | yes |", "| nan |  |  |"]


# ---------------------------------------------------------------- CLI
def test_cli_list_run_and_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["reproduce", "list"]) == 0
    out = capsys.readouterr().out
    assert "table-2.1" in out and "fig-5.4" in out and "needs: " in out and "table-c.2" in out
    run = tmp_path / "runs" / "c2"
    assert main(["reproduce", "table-c.2", "--out", str(run), "--quiet", "--set", "method=simclr"]) == 0
    saved = json.loads((run / "result.json").read_text())
    assert saved["id"] == "table-c.2" and saved["protocol"]["method"] == "simclr"
    assert saved["paper"]["rows"][5]["values"] == "m = 0.8, n = 1.75"
    blur = next(r for r in saved["rows"] if r["augmentation"] == "Gaussian blur")
    assert 0.0 <= blur["p (left)"] <= 1.0
    assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file() and (run / "table.md").is_file()
    assert main(["reproduce", "run", "table-2.11"]) == 2
    assert "table-2.1" in capsys.readouterr().err
    assert main(["reproduce", "report", "--run-root", str(tmp_path / "runs"), "--out", str(tmp_path / "R.md"),
                 "--quiet"]) == 0
    assert "## table-c.2" in (tmp_path / "R.md").read_text()


def test_cli_bad_data_spec_leaves_no_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REPLENS_DATA", raising=False)
    monkeypatch.delenv("REPLENS_SHARED_DATA", raising=False)
    root = tmp_path / "runs"
    assert main(["reproduce", "run", "fig-3.4", "--data", "cifar10", "--run-root", str(root), "--quiet"]) == 2
    assert "REPLENS_DATA" in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())  # nothing half-made for the user to clean up


# ---------------------------------------------------------------- repeats, verdicts, no result
def _trains(ctx: RecipeContext) -> None:
    ctx.trainings["fake"] = {"config": {"method": "simclr", "seed": ctx.seed}, "steps": 1, "seconds": 0.0}


def test_a_training_recipe_runs_three_seeds_and_its_claim_gets_a_verdict(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from replens.apps.reproduce.verdict import Claim

    seen = []

    def fn(ctx: RecipeContext) -> RecipeResult:
        _trains(ctx)
        seen.append((ctx.seed, ctx.data_seed, ctx.out.name))
        gen = torch.Generator().manual_seed(ctx.seed)  # init / views follow the seed: a small seeded wobble
        wobble = float(torch.rand(1, generator=gen))
        return RecipeResult(rows=[{"setting": "Baseline", "top1": 40.0 + wobble},
                                  {"setting": "+ FDA", "top1": 45.0 + 1.2 * wobble}])

    claim = Claim("FDA raises top-1", pairs=lambda rows: (rows[0]["top1"], rows[1]["top1"]))
    recipe("table-9.7", title="scratch", section="9.9", kind="table", needs="-", claim=claim)(fn)
    try:
        _fake_paper(monkeypatch, {"table-9.7": {"section": "9", "title": "t", "description": "d"}})
        res = run_recipe("table-9.7", RecipeContext(budget="small", data=None, out=tmp_path / "r", seed=4))
    finally:
        registry.RECIPES.remove("table-9.7")
    assert [s for s, _, _ in seen] == [4, 5, 6] and {d for _, d, _ in seen} == {0}  # the data stay fixed
    assert [o for _, _, o in seen] == ["r", "seed-5", "seed-6"]
    assert res["seeds"] == [4, 5, 6] and len(res["runs"]) == 3 and res["status"] == "result"
    firsts = [r["rows"][0]["top1"] for r in res["runs"]]
    assert res["rows"][0]["top1"] == pytest.approx(sum(firsts) / 3)
    assert res["rows_std"][0]["top1"] == pytest.approx(float(torch.tensor(firsts, dtype=torch.float64).std()))
    assert res["verdict"]["verdict"] == "holds" and res["verdict"]["n"] == 3
    assert res["claim"]["text"] == "FDA raises top-1" and "paired t-test" in res["claim"]["test"]
    table = (tmp_path / "r" / "table.md").read_text()
    assert " ± " in table and "Verdict: holds" in table and "mean ± std over 3 seeds" in table


def test_analysis_recipes_run_once_and_seeds_is_an_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          scratch_recipe) -> None:
    calls = []
    scratch_recipe("table-9.8", lambda ctx: calls.append(ctx.seed) or RecipeResult(rows=[{"v": 1.0}]))

    def trains(ctx: RecipeContext) -> RecipeResult:
        _trains(ctx)
        calls.append(ctx.seed)
        return RecipeResult(rows=[{"v": 2.0}])

    scratch_recipe("table-9.9", trains)
    entry = {"section": "9", "title": "t", "description": "d"}
    _fake_paper(monkeypatch, {"table-9.8": entry, "table-9.9": entry})
    assert run_recipe("table-9.8", RecipeContext(budget="small", data=None, out=tmp_path / "a"))["seeds"] == [0]
    res = run_recipe("table-9.9", RecipeContext(budget="small", data=None, out=tmp_path / "b", options={"seeds": 2}))
    assert res["seeds"] == [0, 1] and calls == [0, 0, 1] and res["verdict"] is None
    assert registry.seeds_of(RecipeContext(budget="paper", data=None, out=tmp_path / "c")) == [0]


def test_empty_or_nan_results_are_no_result_with_the_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            scratch_recipe) -> None:
    from replens.apps.reproduce.registry import nothing_counted

    scratch_recipe("table-9.10", lambda ctx: RecipeResult(rows=[{"precision": float("nan"), "k": "top-1"}]))
    scratch_recipe("table-9.11", lambda ctx: RecipeResult(rows=[{"pct": 0.0}],
                                                          no_result=nothing_counted(groups_judged=0, images=4)))
    scratch_recipe("table-9.12", lambda ctx: RecipeResult(rows=[]))
    entry = {"section": "9", "title": "t", "description": "d"}
    _fake_paper(monkeypatch, {i: entry for i in ("table-9.10", "table-9.11", "table-9.12")})
    reasons = {}
    for id in ("table-9.10", "table-9.11", "table-9.12"):
        res = run_recipe(id, RecipeContext(budget="small", data=None, out=tmp_path / id))
        assert res["status"] == "no result"
        reasons[id] = res["no_result"]
        assert "**No result**" in (tmp_path / id / "table.md").read_text()
    assert "every number is NaN" in reasons["table-9.10"] and "0 groups_judged" in reasons["table-9.11"]
    assert "images" not in reasons["table-9.11"] and "no rows" in reasons["table-9.12"]


def test_report_top_table_has_claim_ours_verdict_data_and_counts(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _result(root, "a", "table-2.1", "world(n=3000)", "2026-01-01T00:00:00Z", 11.0)
    folder = root / "b"
    folder.mkdir()
    (folder / "result.json").write_text(json.dumps({
        "id": "table-5.1", "title": "T", "section": "5.5.2", "kind": "table", "budget": "small",
        "status": "result", "no_result": "", "rows": [{"SimCLR": 40.0}, {"SimCLR": 45.0}],
        "rows_std": [{"SimCLR": 1.0}, {"SimCLR": 0.5}], "columns": ["SimCLR"], "figures": [],
        "claim": {"text": "FDA raises SimCLR's linear top-1", "direction": 1, "test": "paired t-test over seeds",
                  "quantity": "top-1"},
        "verdict": {"verdict": "holds", "test": "paired t-test", "n": 3, "control_mean": 40.0,
                    "treatment_mean": 45.0, "difference_mean": 5.0, "difference_std": 0.7, "p_value": 0.01,
                    "alpha": 0.05, "direction": 1, "reason": "p = 0.01"},
        "protocol": {"data": "world(n=3000)"}, "notes": "", "seconds": 3.0, "seeds": [0, 1, 2],
        "finished_at": "2026-01-01T00:00:00Z", "paper": load_paper_numbers("table-5.1")}))
    (root / "c").mkdir()
    (root / "c" / "result.json").write_text(json.dumps({  # an older result file: NaN only, paper under "seed"
        "id": "table-4.1", "title": "T", "section": "4.4", "kind": "table", "budget": "small",
        "rows": [{"precision": float("nan")}], "columns": ["precision"], "figures": [],
        "protocol": {"data": "world(n=3000)"}, "notes": "", "seconds": 1.0,
        "finished_at": "2026-01-01T00:00:00Z", "seed": load_paper_numbers("table-4.1")}))
    out = tmp_path / "R.md"
    info = write_report(root, out, progress=False)
    text = out.read_text()
    assert "| id | title | section | paper's claim | ours (mean ± std) | verdict | data |" in text
    assert "FDA raises SimCLR's linear top-1 | 40.00 → 45.00 (diff +5.00 ± 0.70, n=3) | holds | world |" in text
    assert "no result (every number is NaN)" in text and "**No result**: every number is NaN." in text
    assert info["verdicts"]["holds"] == 1 and info["verdicts"]["no result"] == 1
    assert "1 hold, 0 reversed, 0 not significant, 1 no result" in text
    assert "40.00 ± 1.00" in text and "Table B.2:" in text and "Stand-in" not in text
    assert "stand-in: the world's photo/sketch/cartoon/painting renderings stand in for PACS" in text


def test_every_recipe_states_the_papers_claim_or_why_it_has_none() -> None:
    from replens.apps.reproduce.verdict import Claim

    for rec in list_recipes():
        assert (rec.claim is None) != (not rec.no_claim), f"{rec.id}: a claim or a no_claim reason, exactly one"
        if rec.claim is not None:
            assert rec.claim.text and rec.claim.quantity, rec.id
    with pytest.raises(ValueError, match="not both"):
        recipe("table-9.13", title="t", section="9", kind="table", needs="-",
               claim=Claim("x", pairs=lambda rows: (0.0, 1.0)), no_claim="y")


def test_a_recipe_without_a_claim_says_so_in_its_result_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   ) -> None:
    from replens.apps.reproduce.report import claim_text

    recipe("fig-9.14", title="scratch", section="9.9", kind="figure", needs="-",
           no_claim="an illustration")(lambda ctx: RecipeResult(rows=[{"v": 1.0}]))
    try:
        _fake_paper(monkeypatch, {"fig-9.14": {"section": "9", "title": "t", "description": "d"}})
        res = run_recipe("fig-9.14", RecipeContext(budget="small", data=None, out=tmp_path / "r"))
        assert claim_text(get_recipe("fig-9.14")) == "none: an illustration"
    finally:
        registry.RECIPES.remove("fig-9.14")
    assert res["claim"] is None and res["verdict"] is None and res["no_claim"] == "an illustration"
    assert "**Claim: none** (an illustration)." in (tmp_path / "r" / "table.md").read_text()


def test_report_says_how_many_seeds_the_headline_runs_used(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    _result(root, "a", "table-2.1", "world(n=3000)", "2026-01-01T00:00:00Z", 11.0, seeds=[0])
    _result(root, "b", "table-2.2", "world(n=3000)", "2026-01-01T00:00:00Z", 12.0, seeds=[0, 1, 2])
    _result(root, "c", "table-2.3", "world(n=3000)", "2026-01-01T00:00:00Z", 13.0, seeds=[0])
    _result(root, "d", "fig-5.3", "world(n=3000)", "2026-01-01T00:00:00Z", 1.0)  # a result without seeds
    text = (tmp_path / "R.md").read_text() if write_report(root, tmp_path / "R.md", progress=False) else ""
    line = next(x for x in text.splitlines() if x.startswith("Runs behind the headline results"))
    assert "of 3 recipes: 3 seeds in 1, 1 seed in 2" in line
    # the line sits in the introduction, before the top table
    assert text.index(line) < text.index("| id | title |")

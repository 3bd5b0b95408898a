"""``replens fda preview``: the Figure 5.3 grid."""

import json

import numpy as np
from PIL import Image

from replens.cli import main
from replens.world import WorldConfig, generate_world


def test_preview_grid_from_a_data_spec_and_from_an_image(tmp_path):
    world = generate_world(WorldConfig(n=16, size=32, seed=1), tmp_path / "world", progress=False)
    png = tmp_path / "out" / "grid.png"  # a run folder: grid.png, config.yaml and metrics.json
    assert main(["fda", "preview", f"world:{world}", "--images", "1", "--out", str(png.parent), "--quiet"]) == 0
    with Image.open(png) as im:
        assert im.size[0] > 400 and im.size[1] > 400  # 5 rows (4 operations + f), 5 columns
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert (tmp_path / "out" / "config.yaml").exists()
    change = metrics["mean_abs_change"]
    # stronger settings perturb more (columns are ordered by strength)
    for op in ("amplitude rescale", "phase shift", "random frequency mask", "Gaussian mixture mask"):
        values = list(change[op].values())
        assert len(values) == 4 and all(v >= 0 for v in values)
    assert change["random frequency mask"]["k=0.01"] < change["random frequency mask"]["k=0.5"]
    assert change["amplitude rescale"]["m,n=0.9,1.2"] < change["amplitude rescale"]["m,n=0.2,4"]
    assert change["Gaussian mixture mask"]["o=5"] < change["Gaussian mixture mask"]["o=80"]
    assert change["phase shift"]["theta=0.2"] < change["phase shift"]["theta=1.5"]

    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(image)
    assert main(["fda", "preview", str(image), "--out", str(tmp_path / "single"), "--quiet"]) == 0
    assert (tmp_path / "single" / "grid.png").exists()
    assert json.loads((tmp_path / "single" / "metrics.json").read_text())["size"] == 40


def test_library_preview_matches_the_command(tmp_path):
    from replens.augment.fourier_preview import STRENGTHS, fda_preview

    world = generate_world(WorldConfig(n=16, size=32, seed=1), tmp_path / "world", progress=False)
    preview = fda_preview(f"world:{world}", images=2, seed=4)
    assert preview.images == 2 and preview.size == 32
    assert len(preview.tiles) == 2 * (len(STRENGTHS) + 1) and len(preview.row_labels) == len(preview.tiles)
    assert main(["fda", "preview", f"world:{world}", "--images", "2", "--seed", "4", "--out", str(tmp_path / "run"),
                 "--quiet"]) == 0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["mean_abs_change"] == preview.mean_abs_change
    with Image.open(preview.save(tmp_path / "lib.png")) as mine, Image.open(tmp_path / "run" / "grid.png") as cli:
        assert mine.size == cli.size and np.array_equal(np.asarray(mine), np.asarray(cli))


def test_preview_of_a_missing_image_is_a_clear_error(tmp_path, capsys):
    assert main(["fda", "preview", str(tmp_path / "nope.jpg"), "--out", str(tmp_path / "g.png"), "--quiet"]) == 2
    assert "nope.jpg" in capsys.readouterr().err

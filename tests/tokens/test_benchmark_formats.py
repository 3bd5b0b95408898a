"""ARO, Winoground and SugarCrepe fixtures in their published layouts, through ``replens tokens eval``.

Layouts (as the benchmarks ship them):

* ARO (mertyg/vision-language-models-are-bows): ``ROOT/visual_genome_relation.json`` and
  ``visual_genome_attribution.json`` (lists of ``image_id``, ``relation_name`` / ``attributes``,
  ``bbox_x/y/w/h``, ``image_path``, ``true_caption``, ``false_caption``) and ``ROOT/images/<id>.jpg``;
  COCO-Order from BLIP's ``coco_karpathy_test.json`` (``image`` = ``val2014/COCO_val2014_<id>.jpg``,
  five ``caption`` strings) under the COCO root;
* Winoground (facebook/winoground on the Hugging Face hub): ``data/examples.jsonl`` and ``data/images.zip``;
* SugarCrepe (RAIVNLab/sugar-crepe): ``data/<category>.json`` = ``{"0": {"filename", "caption",
  "negative_caption"}}`` for seven categories, images from COCO ``val2017/``.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from replens.cli import main
from replens.evaluate.compositional import load_aro_vg, load_winoground
from replens.tokens import PairData, TokenDataset, TokenTrainConfig, train_token_model

SUGARCREPE = ("add_att", "add_obj", "replace_att", "replace_obj", "replace_rel", "swap_att", "swap_obj")


def _jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int] = (48, 64)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(path)


def write_benchmarks(root: Path) -> dict[str, Path]:
    """Small copies of the four benchmarks in their real layouts under ``root``."""
    rng = np.random.default_rng(0)
    aro, coco, wino, crepe = root / "aro", root / "coco", root / "winoground" / "data", root / "sugar-crepe" / "data"
    relation, attribution = [], []
    for k, image_id in enumerate(("2315541", "2331367", "2407423")):
        _jpeg(aro / "images" / f"{image_id}.jpg", rng)
        box = {"bbox_x": 4 + k, "bbox_y": 2, "bbox_w": 30, "bbox_h": 20}
        relation.append({"image_id": image_id, "relation_name": "sitting on", **box, "image_path": f"{image_id}.jpg",
                         "true_caption": "the cat is sitting on the mat",
                         "false_caption": "the mat is sitting on the cat"})
        attribution.append({"image_id": image_id, "attributes": ["white", "wooden"], **box,
                            "image_path": f"{image_id}.jpg", "true_caption": "the white cat and the wooden table",
                            "false_caption": "the wooden cat and the white table"})
    (aro / "visual_genome_relation.json").write_text(json.dumps(relation))
    (aro / "visual_genome_attribution.json").write_text(json.dumps(attribution))
    karpathy = []
    for image_id in (391895, 522418):
        name = f"val2014/COCO_val2014_{image_id:012d}.jpg"
        _jpeg(coco / name, rng)
        karpathy.append({"image": name, "image_id": str(image_id), "caption": [
            "A man with a red helmet on a small moped on a dirt road.", "Man riding a motor bike on a dirt road.",
            "A man riding on the back of a motorcycle.", "A dirt path with a young person on a motor bike.",
            "A man in a red shirt and a red hat is on a motorcycle on a hill side."]})
    (coco / "coco_karpathy_test.json").write_text(json.dumps(karpathy))
    wino.mkdir(parents=True)
    with zipfile.ZipFile(wino / "images.zip", "w") as archive:
        for n in range(2):
            for side in (0, 1):
                buffer = io.BytesIO()
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, format="PNG")
                archive.writestr(f"images/ex_{n}_img_{side}.png", buffer.getvalue())
    (wino / "examples.jsonl").write_text("".join(json.dumps({
        "id": n, "caption_0": "an old person kisses a young person", "caption_1": "a young person kisses an old person",
        "tag": "Object", "secondary_tag": "", "num_main_preds": 1, "collapsed_tag": "Object",
        "image_0": f"ex_{n}_img_0", "image_1": f"ex_{n}_img_1"}) + "\n" for n in range(2)))
    crepe.mkdir(parents=True)
    for k, category in enumerate(SUGARCREPE):
        filename = f"{544519 + k:012d}.jpg"
        _jpeg(coco / "val2017" / filename, rng)
        (crepe / f"{category}.json").write_text(json.dumps({str(i): {
            "filename": filename, "caption": "A girl with a green shirt brushing her teeth.",
            "negative_caption": "A girl with a blue shirt brushing her teeth."} for i in range(2)}, indent=4))
    return {"aro": aro, "coco": coco, "winoground": wino.parent, "sugarcrepe": crepe}


def test_loaders_read_the_published_layouts(tmp_path: Path) -> None:
    paths = write_benchmarks(tmp_path)
    (item, *_) = load_aro_vg(paths["aro"] / "visual_genome_relation.json")  # images/ beside the JSON by default
    assert item.load_image().shape == (20, 30, 3) and item.meta["relation_name"] == "sitting on"
    (attr, *_) = load_aro_vg(paths["aro"] / "visual_genome_attribution.json")
    assert attr.meta["attributes"] == ["white", "wooden"]
    wino = load_winoground(paths["winoground"])  # data/images.zip read in place
    assert len(wino) == 2 and wino[1].meta["collapsed_tag"] == "Object"
    first, second = wino[1].load_images()
    assert first.shape == (40, 40, 3) and not np.array_equal(first, second)


def test_tokens_eval_runs_every_benchmark_end_to_end(caches: dict[str, Path], vl, tmp_path: Path) -> None:
    paths = write_benchmarks(tmp_path / "bench")
    config = TokenTrainConfig(encoder="vit", preset="tiny", steps=2, batch_size=16, lr=2e-3, eval_every=2,
                              log_every=1, checkpoint_every=2, patch_size=8, max_eval=16)
    train_token_model(config, PairData(TokenDataset(caches["train"])), vl, tmp_path / "vit", progress=False)
    aro, coco = paths["aro"], paths["coco"]
    assert main([
        "tokens", "eval", "--model", str(tmp_path / "vit"),
        "--aro-relation", str(aro / "visual_genome_relation.json"),
        "--aro-attribution", str(aro / "visual_genome_attribution.json"),
        "--aro-order", str(coco / "coco_karpathy_test.json"), "--order-images", str(coco),
        "--winoground", str(paths["winoground"]),
        "--sugarcrepe", str(paths["sugarcrepe"]), "--coco-images", str(coco / "val2017"),
        "--out", str(tmp_path / "ev"), "--quiet",
    ]) == 0
    bench = json.loads((tmp_path / "ev" / "metrics.json").read_text())["benchmarks"]
    assert bench["vg_relation"]["n"] == 3 and bench["vg_attribution"]["n"] == 3
    assert bench["order"]["n"] == 10  # five captions of two images, each against its four shuffles
    assert bench["winoground"]["n"] == 2
    assert sorted(k.removeprefix("sugarcrepe/") for k in bench if k.startswith("sugarcrepe/")) == sorted(SUGARCREPE)
    for result in bench.values():
        if "accuracy" in result:
            assert 0.0 <= result["accuracy"] <= 100.0

"""Extractor (c): scene graphs from Visual Genome or PSG JSON (paper section 6.4.1).

The paper notes that scene-graph datasets "provide pre-defined image graphs
with object and relationship sets" that can replace the segmenter and the
relation model. Two public formats are read:

* Visual Genome ``scene_graphs.json``: a list of images ``{"image_id",
  "objects": [{"object_id", "x", "y", "w", "h", "names": [...]}],
  "relationships": [{"predicate", "subject_id", "object_id"}]}`` (relationships
  may also nest ``"subject"``/``"object"`` objects with an ``object_id``);
  images are ``<image_dir>/<image_id>.jpg``; objects have boxes only (their
  masks are the rasterised boxes);
* PSG ``psg.json``: ``{"data": [{"file_name", "height", "width",
  "segments_info": [{"id", "category_id"}], "annotations": [{"bbox": [x0, y0, x1, y1]}],
  "relations": [[subject, object, predicate]], "pan_seg_file_name"}],
  "thing_classes", "stuff_classes", "predicate_classes"}``; masks come from the
  panoptic PNG (segment id ``R + 256 G + 256^2 B``) when it is present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from replens.evaluate.compositional import read_json_file
from replens.tokens.extract import SceneGraph

__all__ = ["SceneGraphRecord", "load_psg", "load_visual_genome"]


@dataclass
class SceneGraphRecord:
    """One annotated image of a scene-graph dataset.

    Attributes:
        name: A stable id (the dataset's image id or file name).
        image_path: The image file.
        boxes: (n, 4) pixel boxes ``x0, y0, x1, y1``.
        names: Object names.
        relations: ``(subject, object, predicate)`` with object indices.
        segmentation_path: PSG panoptic PNG, if any.
        segment_ids: Panoptic segment id of each object (PSG).
    """

    name: str
    image_path: Path
    boxes: np.ndarray
    names: list[str]
    relations: list[tuple[int, int, str]]
    segmentation_path: Path | None = None
    segment_ids: list[int] = field(default_factory=list)

    def load_image(self) -> np.ndarray:
        """(H, W, 3) uint8.

        Raises:
            FileNotFoundError: The image is missing (named).
        """
        if not self.image_path.is_file():
            raise FileNotFoundError(f"image of scene graph {self.name!r} not found: {self.image_path}")
        with Image.open(self.image_path) as pil:
            return np.asarray(pil.convert("RGB")).copy()

    def graph(self, height: int, width: int) -> SceneGraph:
        """The :class:`SceneGraph` for the loaded image of size ``(height, width)``."""
        masks = None
        if self.segmentation_path is not None and self.segmentation_path.is_file():
            with Image.open(self.segmentation_path) as pil:
                rgb = np.asarray(pil.convert("RGB")).astype(np.int64)
            ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]
            masks = np.stack([ids == s for s in self.segment_ids]) if self.segment_ids else None
            if masks is not None and masks.shape[1:] != (height, width):
                raise ValueError(
                    f"scene graph {self.name!r}: segmentation {self.segmentation_path} is {masks.shape[1:]}, "
                    f"image is {(height, width)}"
                )
        return SceneGraph(self.boxes, list(self.relations), (height, width), masks=masks, names=list(self.names))


def _object_id(ref: Any, where: str, key: str) -> int:
    if isinstance(ref, dict):
        if "object_id" not in ref:
            raise ValueError(f"{where}: {key} has no object_id")
        return int(ref["object_id"])
    return int(ref)


def load_visual_genome(
    scene_graphs: str | Path, image_dir: str | Path, *, limit: int | None = None
) -> list[SceneGraphRecord]:
    """Visual Genome scene graphs (see the module docstring for the format).

    Relationships naming an object the image does not list are skipped.

    Raises:
        ValueError: An image or object without the required keys (file and position named).
    """
    data = read_json_file(scene_graphs, "scene-graph file")
    if not isinstance(data, list):
        raise ValueError(f"{scene_graphs}: expected a JSON list of images")
    records = []
    for r, entry in enumerate(data[:limit] if limit else data):
        where = f"{scene_graphs} image {r}"
        if not isinstance(entry, dict) or "image_id" not in entry or "objects" not in entry:
            raise ValueError(f"{where}: needs 'image_id' and 'objects'")
        index: dict[int, int] = {}
        boxes, names = [], []
        for k, obj in enumerate(entry["objects"]):
            missing = [key for key in ("object_id", "x", "y", "w", "h") if key not in obj]
            if missing:
                raise ValueError(f"{where} object {k}: missing keys {missing}")
            index[int(obj["object_id"])] = len(boxes)
            x, y, w, h = (float(obj[key]) for key in ("x", "y", "w", "h"))
            boxes.append([x, y, x + w, y + h])
            obj_names = obj.get("names") or [obj.get("name", "object")]
            names.append(str(obj_names[0]))
        relations = []
        for k, rel in enumerate(entry.get("relationships", [])):
            rwhere = f"{where} relationship {k}"
            if "predicate" not in rel:
                raise ValueError(f"{rwhere}: missing 'predicate'")
            s = _object_id(rel.get("subject_id", rel.get("subject")), rwhere, "subject")
            o = _object_id(rel.get("object_id", rel.get("object")), rwhere, "object")
            if s in index and o in index and s != o:
                relations.append((index[s], index[o], str(rel["predicate"]).strip().lower()))
        image_id = entry["image_id"]
        records.append(
            SceneGraphRecord(
                name=str(image_id),
                image_path=Path(image_dir) / f"{image_id}.jpg",
                boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
                names=names,
                relations=relations,
            )
        )
    return records


def load_psg(psg_json: str | Path, image_root: str | Path, *, limit: int | None = None) -> list[SceneGraphRecord]:
    """PSG scene graphs with panoptic masks (see the module docstring for the format).

    Raises:
        ValueError: Missing keys, or segments and annotations of different lengths (entry named).
    """
    data = read_json_file(psg_json, "scene-graph file")
    if not isinstance(data, dict) or "data" not in data or "predicate_classes" not in data:
        raise ValueError(f"{psg_json}: expected an object with 'data' and 'predicate_classes'")
    classes = list(data.get("thing_classes", [])) + list(data.get("stuff_classes", []))
    predicates = list(data["predicate_classes"])
    root = Path(image_root)
    records = []
    for r, entry in enumerate(data["data"][:limit] if limit else data["data"]):
        where = f"{psg_json} entry {r}"
        missing = [k for k in ("file_name", "annotations", "relations") if k not in entry]
        if missing:
            raise ValueError(f"{where}: missing keys {missing}")
        anns = entry["annotations"]
        segments = entry.get("segments_info", [])
        if segments and len(segments) != len(anns):
            raise ValueError(f"{where}: {len(segments)} segments but {len(anns)} annotations")
        boxes = np.array([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        names = [classes[int(a["category_id"])] if 0 <= int(a["category_id"]) < len(classes)
                 else str(a["category_id"]) for a in anns]
        relations = []
        for k, rel in enumerate(entry["relations"]):
            if len(rel) != 3:
                raise ValueError(f"{where} relation {k}: expected [subject, object, predicate], got {rel}")
            s, o, p = (int(v) for v in rel)
            if not (0 <= s < len(anns) and 0 <= o < len(anns) and 0 <= p < len(predicates)):
                raise ValueError(f"{where} relation {k}: index out of range in {rel}")
            relations.append((s, o, str(predicates[p])))
        seg_file = entry.get("pan_seg_file_name")
        records.append(
            SceneGraphRecord(
                name=str(entry.get("image_id", entry["file_name"])),
                image_path=root / str(entry["file_name"]),
                boxes=boxes,
                names=names,
                relations=relations,
                segmentation_path=root / str(seg_file) if seg_file else None,
                segment_ids=[int(s["id"]) for s in segments],
            )
        )
    return records

"""Zero-shot classification with a vision-language model (prompts from class names)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from replens.data import iterate_batches, make_loader
from replens.vl.model import VLModel
from replens.vl.tiny import _crop_batch, world_training_items
from replens.world.annotate import object_phrase
from replens.world.vocab import (
    COLOURLESS_DOMAINS,
    COLOURS,
    DOMAIN_NOUN,
    DOMAINS,
    SHAPES,
    TEXTURELESS_DOMAINS,
    TEXTURES,
    article,
    marker_names,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "class_text_embeddings",
    "world_attribute_accuracy",
    "world_templates",
    "zero_shot_classify",
]

#: Prompt templates for a data source without a known domain vocabulary.
DEFAULT_TEMPLATES: tuple[str, ...] = ("a photo of a {}.", "a {}.", "a picture of a {}.")


def world_templates(domains: Sequence[str] | None = None) -> tuple[str, ...]:
    """Prompts in the world's caption grammar: ``"a sketch of a {}"`` for each domain, and ``"a {}"``."""
    names = [DOMAIN_NOUN[d] for d in (domains or DOMAINS)]
    return tuple(f"{article(n)} {n} of a {{}}" for n in names) + ("a {}",)


def class_text_embeddings(vl: VLModel, classes: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """One normalised text embedding per class: the mean over templates, re-normalised (CLIP's prompt ensembling).

    Shape:
        - Output: (len(classes), embed_dim)
    """
    if not classes:
        raise ValueError("zero-shot classification needs at least one class name")
    prompts = [t.format(c) for c in classes for t in templates]
    emb = vl.embed_texts(prompts).view(len(classes), len(templates), -1).mean(1)
    return F.normalize(emb, dim=-1)


@torch.no_grad()
def world_attribute_accuracy(vl: VLModel, world: Any, *, max_items: int = 400, seed: int = 0) -> dict[str, float]:
    """How well a VL model names what FALCON asks it to name: attributes of object and marker crops.

    For object crops (the object's box, padded), each attribute is chosen
    among its alternatives with the others fixed to the truth, e.g. colour
    among ``"a red circle"``, ``"a blue circle"``, ...; for marker-patch crops,
    the patch colour among ``"a crimson patch"``, ... . Chance is 1 / the
    number of alternatives (10 colours, 10 shapes, 4 textures, 10 markers).
    Attributes a crop's domain does not draw (a sketch's colour and texture,
    a tint's colour) are not asked, and its options name none of them.

    Returns:
        Accuracy in percent for ``colour``, ``shape``, ``texture`` (object
        crops) and ``marker`` (marker crops), and the crops counted.
    """
    rng = np.random.default_rng(seed)
    items = world_training_items(world)
    out: dict[str, float] = {}
    objects = [it for it in items if it.kind == "object"]
    markers = [it for it in items if it.kind == "marker"]
    for kind, chosen in (("object", objects), ("marker", markers)):
        if not chosen:
            continue
        chosen = [chosen[i] for i in rng.permutation(len(chosen))[:max_items]]
        images = torch.stack([torch.as_tensor(world.read(it.image)).permute(2, 0, 1) for it in chosen])
        boxes = torch.tensor([it.box for it in chosen], dtype=torch.float32)
        emb = vl.embed_images(_crop_batch(images, boxes, vl.image_size))
        if kind == "marker":
            names = marker_names(world.config.patterned)
            text = vl.embed_texts([f"{article(m)} {m} patch" for m in names])
            truth = [names.index(world.record(it.image)["marker"]) for it in chosen]
            out["marker"] = float(
                100 * np.mean([int((e @ text.T).argmax()) == t for e, t in zip(emb, truth, strict=True)])
            )
            out["marker_crops"] = len(chosen)
            continue
        questions = []
        for it in chosen:
            objs = world.record(it.image)["objects"]
            x0, y0, x1, y1 = it.box
            obj = min(
                objs,
                key=lambda o, cx=x0 + x1, cy=y0 + y1: (
                    abs(o["box"][0] + o["box"][2] - cx) + abs(o["box"][1] + o["box"][3] - cy)
                ),
            )  # the object whose box the crop is centred on
            domain = world.record(it.image)["domain"]

            def options(key: str, values: Sequence[str], obj: dict = obj, domain: str = domain) -> list[str]:
                return [object_phrase({**obj, key: v}, "look", domain) for v in values]

            # an attribute the domain does not draw (a sketch's colour and texture) is not asked
            asked = [("shape", options("shape", SHAPES), SHAPES.index(obj["shape"]))]
            if domain not in COLOURLESS_DOMAINS:
                asked.append(("colour", options("colour", COLOURS), COLOURS.index(obj["colour"])))
            if domain not in TEXTURELESS_DOMAINS:
                asked.append(("texture", options("texture", TEXTURES), TEXTURES.index(obj["texture"])))
            questions.append(tuple(asked))
        prompts = sorted({p for q in questions for _, options, _ in q for p in options})
        index = {p: i for i, p in enumerate(prompts)}
        text = vl.embed_texts(prompts)
        hits: dict[str, list[bool]] = {"colour": [], "shape": [], "texture": []}
        for e, q in zip(emb, questions, strict=True):
            for name, options, truth in q:
                hits[name].append(int((e @ text[[index[p] for p in options]].T).argmax()) == truth)
        out.update({k: float(100 * np.mean(v)) for k, v in hits.items() if v})
        out["object_crops"] = len(chosen)
    return out


@torch.no_grad()
def zero_shot_classify(
    vl: VLModel,
    source: Any,
    *,
    templates: Sequence[str] | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Classify every image of a source by its nearest class prompt.

    Args:
        vl: The vision-language model.
        source: An image source (``classes``, ``domain_names`` and the sample protocol).
        templates: Prompt templates with one ``{}`` (default: the world's
            grammar for a world source, :data:`DEFAULT_TEMPLATES` otherwise).
        batch_size: Images per forward pass.
        progress: Show a tqdm bar.

    Returns:
        ``{"top1": %, "per_domain": {domain: %}, "per_class": {class: %},
        "samples": n, "templates": [...], "predictions": array}``.
    """
    from tqdm.auto import tqdm

    classes = list(source.classes)
    if templates is None:
        is_world = type(source).__name__ == "WorldDataset"
        templates = world_templates(getattr(source, "domain_names", None)) if is_world else DEFAULT_TEMPLATES
    text = class_text_embeddings(vl, classes, templates)
    preds, labels, domains = [], [], []
    loader = make_loader(source, batch_size=batch_size, shuffle=False)
    for batch in tqdm(iterate_batches(loader), total=len(loader), desc="zero-shot", disable=not progress):
        emb = vl.embed_images(batch["image"], batch_size=batch_size)
        preds.append((emb @ text.T).argmax(1).numpy())
        labels.append(batch["label"].numpy())
        domains.append(batch["domain"].numpy())
    pred = np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
    label = np.concatenate(labels) if labels else np.zeros(0, dtype=np.int64)
    domain = np.concatenate(domains) if domains else np.zeros(0, dtype=np.int64)
    correct = pred == label
    domain_names = list(getattr(source, "domain_names", []))

    def pct(mask: np.ndarray) -> float:
        return float(100.0 * correct[mask].mean()) if mask.any() else float("nan")

    return {
        "top1": pct(np.ones_like(correct, dtype=bool)),
        "per_domain": {
            domain_names[d] if d < len(domain_names) else str(d): pct(domain == d) for d in np.unique(domain)
        },
        "per_class": {classes[c]: pct(label == c) for c in np.unique(label)},
        "samples": int(len(label)),
        "templates": list(templates),
        "predictions": pred,
    }

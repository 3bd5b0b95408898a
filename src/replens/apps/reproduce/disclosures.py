"""What each recipe's text must disclose: stand-ins for the paper's data, planted cues, the VL model.

:func:`disclosure` gives, per recipe and data set, one paragraph that
``REPRODUCTION.md`` and each ``table.md`` print under the recipe:

* **stand-ins**: where the embedded world replaces a data set or benchmark of
  the paper (PACS, DomainNet, WILDS, Salient ImageNet masks, ARO, Winoground,
  STL-10, ImageNet), said as such;
* **planted cue**: chapters 3 and 4 and appendices A and B train on a world in
  which the class is tied to a coloured corner patch in 70 % of the training
  scenes only (``ch3.WORLD``, ``spurious=0.7``); the test split keeps the patch
  independent of the class, so the failures those recipes explain are induced
  by that shift, not found in natural data;
* **one tiny CLIP**: chapters 4 and 6 and appendix B use the library's default
  tiny CLIP (``ch4.vl_model``) at the small budget, CLIP ViT-B/32 at the paper budget.

:data:`NO_RECIPE` lists the paper's tables and figures without a recipe and why.
"""

from __future__ import annotations

#: Chapters whose recipes train on the world with the planted, train-only class cue.
PLANTED_CUE_CHAPTERS: tuple[str, ...] = ("3", "4", "a", "b")
#: Chapters that caption or score with a vision-language model.
VL_CHAPTERS: tuple[str, ...] = ("4", "6", "b")

PLANTED_CUE = ("the world of this recipe plants a class-tied coloured corner patch in 70 % of the training scenes "
               "only (spurious=0.7; independent of the class at test time): its mis-classifications are induced by "
               "that train/test shift")
ONE_TINY_CLIP = ("concepts and captions come from the library's default tiny CLIP (one model for chapters 4, 6 and "
                 "appendix B at the small budget; CLIP ViT-B/32 at the paper budget), not CLIP ViT-B/32 with LAION-400M")

#: Stand-ins on the embedded world, per recipe id.
STAND_INS: dict[str, str] = {
    "table-2.1": "the world's photo/sketch/cartoon/painting renderings stand in for PACS",
    "fig-2.2": "the world's renderings stand in for PACS",
    "table-2.2": "world domains (photo, painting, sketch seen; cartoon and two tints unseen) stand in for DomainNet",
    "table-2.3": "a world with a shifted rendering stands in for WILDS's unseen validation domains",
    "table-2.4": "similar world domains without labels stand in for the paper's mixture of similar domains",
    "fig-2.3": "tinted world renderings stand in for Colored CIFAR-10",
    "fig-2.4": "tinted world renderings stand in for Colored CIFAR-10",
    "fig-2.5": "world cartoon + sketch stand in for PACS cartoon + sketch",
    "fig-3.6": "the world's core (object) and spurious (corner patch, background) masks stand in for Salient "
               "ImageNet's human-annotated masks",
    "fig-3.7": "the world's core and spurious masks stand in for Salient ImageNet's masks",
    "table-4.1": "exact judgements against the world's true concepts stand in for the Mechanical Turk study",
    "table-4.2": "FALCON ablations stand in for MILAN and Net-Dissect; the world's truth stands in for the human vote",
    "table-6.1": "world relation/attribute swaps and word-order shuffles stand in for ARO (VG-R, VG-A, COCO-Order)",
    "table-6.2": "world 2x2 image/caption groups stand in for Winoground",
    "fig-6.4": "the world's scenes and captions stand in for the paper's COCO/Visual Genome training data",
    "table-a.1": "world variants (other seeds, tints) stand in for the paper's further datasets",
    "table-a.2": "world variants stand in for the paper's unseen transfer datasets",
    "fig-a.2": "tinted and single-object world sets stand in for the paper's unseen datasets",
    "fig-a.3": "a tinted world stands in for the paper's unseen dataset",
    "fig-a.11": "a world class stands in for the paper's ImageNet class; the heatmaps illustrate, they do not test",
    "fig-a.12": "a world class stands in for the paper's ImageNet class; the heatmaps illustrate, they do not test",
    "fig-a.13": "a world class stands in for the paper's ImageNet class; the heatmaps illustrate, they do not test",
    "fig-a.14": "a world class stands in for the paper's ImageNet class; the heatmaps illustrate, they do not test",
    "fig-b.7": "unseen world sets stand in for STL-10",
}

#: Tables and figures of the paper without a recipe, and why.
NO_RECIPE: dict[str, str] = {
    "Figure 2.1": "a diagram of the DDM framework (no result)",
    "Figure 4.1": "a diagram of the FALCON pipeline (no result)",
    "Figure 4.3": "an illustration of contrastive concept extraction on one feature (no measurement); fig-4.2's "
                  "report shows the same steps for our features",
    "Figure 5.1": "a diagram of the FDA pipeline (no result)",
    "Figure 5.5": "a diagram of the dual-encoder setup (no result); table-5.5 runs it",
    "Figure 6.1": "a diagram of the visual-token framework (no result)",
    "Figure 6.2": "an illustration of text vs image processing (no result)",
    "Figure 6.3": "a diagram of token extraction with off-the-shelf models (no result)",
    "Table B.2": "FALCON with BLIP-2 zero-shot captions judged by a Mechanical Turk study: BLIP-2 weights and the "
                 "human study are not available offline, and the world's truth cannot judge BLIP-2's free text",
    "Figure B.5": "the Mechanical Turk template of the user study (no result)",
}


def disclosure(recipe_id: str, data: str = "world") -> str:
    """The protocol disclosure of a recipe on ``data`` (``world``, ``cifar10``, ``pacs``, ``other``), or ``""``."""
    chapter = recipe_id.split("-", 1)[1].split(".", 1)[0]
    parts = []
    if data == "world":
        if recipe_id in STAND_INS:
            parts.append(f"stand-in: {STAND_INS[recipe_id]}")
        if chapter in PLANTED_CUE_CHAPTERS:
            parts.append(PLANTED_CUE)
    elif data in ("cifar10", "pacs"):
        parts.append(f"real data ({data}), at the small budget a seeded subset (option limit)")
    if chapter in VL_CHAPTERS or recipe_id in ("table-4.1", "table-4.2"):
        parts.append(ONE_TINY_CLIP)
    return "; ".join(parts) + ("." if parts else "")

"""What replens can download and what is already cached (``replens list --pretrained``).

Every entry names a file (or archive) that :mod:`replens.hub` fetches on first
use, where it comes from and where it is cached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from replens.hub import cached_hf, checkpoints_dir, hf_cache_dir, hf_repo_location, replens_cache_dir

__all__ = ["CatalogEntry", "pretrained_catalog"]


@dataclass(frozen=True)
class CatalogEntry:
    """One downloadable thing.

    Attributes:
        kind: ``backbone``, ``vl``, ``detector``, ``dataset`` or ``captions``.
        name: How to ask for it (``resnet50 --pretrained``, ``--vl ViT-B-32:openai``, ``tv:CIFAR10``, ...).
        source: The URL or Hugging Face repository it comes from.
        cache: Where it is (or will be) cached.
        cached: Whether it is in the cache now.
    """

    kind: str
    name: str
    source: str
    cache: str
    cached: bool


def _url_entry(kind: str, name: str, url: str, dest: Path) -> CatalogEntry:
    return CatalogEntry(kind, name, url, str(dest), dest.is_file())


def _torchvision_entries() -> list[CatalogEntry]:
    # lazy: these modules import torch; replens.catalog stays torch-free
    from replens.models.cifar_resnet import AKAMASTER_FILES, AKAMASTER_URL
    from replens.models.torchvision_resnet import torchvision_weights_file
    from replens.tokens.maskrcnn import MASKRCNN_FILE, MASKRCNN_URL

    entries = []
    for arch, weights in (("resnet18", "ResNet18_Weights.IMAGENET1K_V1"), ("resnet50", "ResNet50_Weights.IMAGENET1K_V2")):
        url, dest = torchvision_weights_file(weights)
        entries.append(_url_entry("backbone", f"{arch} --pretrained", url, dest))
    for depth, file in AKAMASTER_FILES.items():
        entries.append(_url_entry("backbone", f"cifar_resnet{depth} --pretrained", AKAMASTER_URL.format(file),
                                  checkpoints_dir() / file))
    entries.append(_url_entry("detector", "tokens extract --extractor maskrcnn", MASKRCNN_URL,
                              checkpoints_dir() / MASKRCNN_FILE))
    return entries


def _open_clip_entries() -> list[CatalogEntry]:
    import open_clip

    entries = []
    for model, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(model, tag)
        if cfg.get("hf_hub"):
            repo, filename = os.path.split(cfg["hf_hub"])
            names = [filename] if filename else ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
            cached = any(cached_hf(repo, n) is not None for n in names)
            entries.append(CatalogEntry("vl", f"{model}:{tag}", f"hf-hub:{repo}", str(hf_repo_location(repo)), cached))
        elif cfg.get("url"):
            dest = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
            entries.append(_url_entry("vl", f"{model}:{tag}", cfg["url"], dest))
    return entries


def _timm_entries() -> list[CatalogEntry]:
    root = hf_cache_dir()
    entries = [CatalogEntry("backbone", "timm:<name> --pretrained", "hf-hub:timm/<name>", str(root), False)]
    for folder in sorted(root.glob("models--timm--*")) if root.is_dir() else ():
        if any((folder / "snapshots").rglob("*.safetensors")) or any((folder / "snapshots").rglob("*.bin")):
            name = folder.name.removeprefix("models--timm--")
            entries.append(CatalogEntry("backbone", f"timm:{name}", f"hf-hub:timm/{name}", str(folder), True))
    return entries


def _dataset_entries() -> list[CatalogEntry]:
    # lazy: replens.data imports torch; replens.catalog stays torch-free
    from replens.data.torchvision_source import DOWNLOADABLE, default_dataset_root, torchvision_dataset_class

    root = Path(default_dataset_root())
    entries = []
    for name in DOWNLOADABLE:
        cls = torchvision_dataset_class(name)
        target = root / cls.base_folder
        entries.append(CatalogEntry("dataset", f"tv:{name}", cls.url, str(target), target.is_dir()))
    return entries


def _bank_entries() -> list[CatalogEntry]:
    # lazy: replens.explain imports torch; replens.catalog stays torch-free
    from replens.explain.bank import LAION400M_TEXT_URL

    dest = replens_cache_dir() / "laion400m" / os.path.basename(LAION400M_TEXT_URL.format(0))
    return [_url_entry("captions", "--captions laion400m:0", LAION400M_TEXT_URL.format(0), dest)]


def pretrained_catalog(open_clip_models: bool = True) -> list[CatalogEntry]:
    """Everything replens can download, with its source and cache state.

    Args:
        open_clip_models: Include every open_clip (model, tag) pair (about 150 rows).
    """
    entries = _torchvision_entries() + _timm_entries()
    if open_clip_models:
        entries += _open_clip_entries()
    entries += _dataset_entries() + _bank_entries()
    order = ["backbone", "vl", "detector", "dataset", "captions"]
    return sorted(entries, key=lambda e: order.index(e.kind))  # stable: keeps each kind's own order

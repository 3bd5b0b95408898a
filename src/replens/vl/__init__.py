"""Vision-language models (``replens.vl``): open_clip models and the embedded tiny CLIP.

One entry point, :func:`load_vl_model`, returns a :class:`VLModel` with
``encode_image``, ``encode_text``, ``tokenize`` and ``preprocess`` (and the
batched, gradient-free ``embed_images`` / ``embed_texts``)::

    from replens.vl import load_vl_model

    vl = load_vl_model()                              # embedded tiny CLIP (cached; trained on demand)
    vl = load_vl_model("runs/vl-train/model.safetensors")
    vl = load_vl_model("ViT-B-32:openai")             # open_clip weights (cached; downloaded on first use)
    vl = load_vl_model("hf-hub:org/repo")             # an open_clip model on the Hugging Face hub
    vl = load_vl_model("open_clip:ViT-B-32", weights="clip.pt")
"""

from __future__ import annotations

from pathlib import Path

from replens.models.weights import WeightsError
from replens.vl.model import (
    OPEN_CLIP_WEIGHTS,
    VL_FORMAT,
    VLModel,
    file_fingerprint,
    load_hf_open_clip,
    load_open_clip,
    load_open_clip_folder,
    load_vl_checkpoint,
)
from replens.vl.tiny import (
    TINY_CLIP_NAME,
    TinyClipConfig,
    TinyClipTrainConfig,
    TrainingItem,
    build_tiny_clip,
    default_tiny_clip,
    default_world,
    tiny_clip_cache_path,
    train_tiny_clip,
    world_training_items,
)
from replens.vl.zeroshot import (
    DEFAULT_TEMPLATES,
    class_text_embeddings,
    world_attribute_accuracy,
    world_templates,
    zero_shot_classify,
)

__all__ = [
    "DEFAULT_TEMPLATES",
    "TINY_CLIP_NAME",
    "VL_FORMAT",
    "TinyClipConfig",
    "TinyClipTrainConfig",
    "TrainingItem",
    "VLModel",
    "build_tiny_clip",
    "class_text_embeddings",
    "default_tiny_clip",
    "default_world",
    "file_fingerprint",
    "load_hf_open_clip",
    "load_open_clip",
    "load_open_clip_folder",
    "load_vl_checkpoint",
    "load_vl_model",
    "tiny_clip_cache_path",
    "train_tiny_clip",
    "world_attribute_accuracy",
    "world_templates",
    "world_training_items",
    "zero_shot_classify",
]


def load_vl_model(
    name_or_path: str | Path | None = None,
    *,
    weights: str | Path | None = None,
    device: str = "cpu",
    cache_dir: str | Path = "runs/cache",
    train_if_missing: bool = True,
    progress: bool = True,
) -> VLModel:
    """Load a vision-language model by name or path.

    Args:
        name_or_path: ``None`` or ``"tiny-clip"``: the embedded tiny CLIP,
            cached under ``cache_dir`` and trained on demand; a path to a
            checkpoint written by ``replens vl train`` (file or folder); a folder in
            open_clip's layout (``open_clip_config.json`` + weights, see
            :meth:`VLModel.save_open_clip`); ``hf-hub:org/repo`` (an open_clip model on
            the Hugging Face hub); or an open_clip ``<model>[:<tag>]`` (optionally
            prefixed ``open_clip:``). Hub weights are downloaded on first use
            (:mod:`replens.hub`).
        weights: A local full-CLIP checkpoint for an open_clip model name.
        device: Where to put the model.
        cache_dir: Cache of the default tiny CLIP.
        train_if_missing: Train the default tiny CLIP when it is not cached.
        progress: Progress bars while training on demand.

    Returns:
        The model in eval mode.

    Raises:
        WeightsError: Missing or mismatched weights.
        replens.hub.DownloadError: Weights not cached and not downloadable (e.g. offline).
        KeyError: Unknown open_clip model name.
    """
    if name_or_path is None or str(name_or_path) == TINY_CLIP_NAME:
        if weights is not None:
            return load_vl_checkpoint(weights, device=device)
        return default_tiny_clip(cache_dir, train_if_missing=train_if_missing, device=device, progress=progress)
    spec = str(name_or_path)
    if spec.startswith("hf-hub:"):
        return load_hf_open_clip(spec, device=device)
    path = Path(spec)
    config_file = path / "open_clip_config.json"
    if config_file.is_file():
        weights_file = next((path / n for n in OPEN_CLIP_WEIGHTS if (path / n).is_file()), path / OPEN_CLIP_WEIGHTS[0])
        return load_open_clip_folder(config_file, weights_file, name=path.name,
                                     fingerprint=f"{path.name}:{file_fingerprint(weights_file)}", device=device)
    if path.exists() or spec.endswith((".safetensors", ".pt", ".pth", ".bin")) or "/" in spec:
        if not path.exists():
            raise WeightsError(f"VL checkpoint not found: {path}")
        return load_vl_checkpoint(path, device=device)
    return load_open_clip(spec, weights=weights, device=device)

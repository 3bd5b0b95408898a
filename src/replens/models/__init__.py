"""Backbones, checkpoint I/O and feature extraction (``replens.models``).

Every encoder is a :class:`Backbone` created by name together with its
preprocessing::

    from replens.models import create_backbone, extract_features, load_embeddings

    model = create_backbone("cifar_resnet20", weights="weights/cifar10_resnet20.th")
    out = extract_features(model, source, "runs/feats", layer="layer3", normalize=True)
    emb = load_embeddings(out)

Registered names (see :func:`list_backbones`): ``small_cnn``, ``resnet_tiny``,
``resnet_small``, ``resnet18``, ``resnet50``, ``cifar_resnet20``,
``cifar_resnet56``, ``timm:<model>`` (alias ``vit_s16``) and
``open_clip:<model>[:<tag>]``.
"""

# importing the architecture modules registers their backbones
from replens.models import cifar_resnet as _cifar_resnet  # noqa: F401
from replens.models import open_clip_backbone as _open_clip_backbone  # noqa: F401
from replens.models import small as _small  # noqa: F401
from replens.models import timm_backbone as _timm_backbone  # noqa: F401
from replens.models import torchvision_resnet as _torchvision_resnet  # noqa: F401
from replens.models.backbone import (
    BACKBONES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    Backbone,
    create_backbone,
    list_backbones,
    register_alias,
    register_backbone,
)
from replens.models.cifar_resnet import CifarResNet
from replens.models.features import (
    Embeddings,
    EmbeddingsError,
    extract_features,
    load_embeddings,
    pool_features,
)
from replens.models.open_clip_backbone import OpenClipBackbone
from replens.models.small import NarrowResNet, SmallCNN
from replens.models.timm_backbone import TimmBackbone
from replens.models.torchvision_resnet import TorchvisionResNet
from replens.models.weights import (
    LoadResult,
    WeightsError,
    load_weights,
    read_checkpoint,
    read_state_dict,
    save_checkpoint,
)

__all__ = [
    "BACKBONES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Backbone",
    "CifarResNet",
    "Embeddings",
    "EmbeddingsError",
    "LoadResult",
    "NarrowResNet",
    "OpenClipBackbone",
    "SmallCNN",
    "TimmBackbone",
    "TorchvisionResNet",
    "WeightsError",
    "create_backbone",
    "extract_features",
    "list_backbones",
    "load_embeddings",
    "load_weights",
    "pool_features",
    "read_checkpoint",
    "read_state_dict",
    "register_alias",
    "register_backbone",
    "save_checkpoint",
]

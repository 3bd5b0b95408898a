"""Batched view pipelines that run on the model's device."""

from replens.augment.views import (
    ViewConfig,
    ViewParams,
    ViewPipeline,
    color_matrix,
    gaussian_blur,
    recipe_view,
    sample_crops,
    simclr_view_config,
)

__all__ = [
    "ViewConfig",
    "ViewParams",
    "ViewPipeline",
    "color_matrix",
    "gaussian_blur",
    "recipe_view",
    "sample_crops",
    "simclr_view_config",
]

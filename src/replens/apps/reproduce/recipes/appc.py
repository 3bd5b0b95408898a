"""Appendix C: Table C.1 (training setup) and Table C.2 (augmentation hyper-parameters), read off the engine.

Neither table is an experiment: they document the protocol. Their recipes
build what the engine would run at the paper budget (the ``TrainConfig`` of
each method from ``recipes/ch5.py``, the method and its heads on ResNet-50,
the views of the method with the FDA plug-in at 224 px) and tabulate it
beside the paper's values, so a departure shows up as a differing cell.
"""

from __future__ import annotations

from typing import Any

from replens.apps.reproduce.helpers import option
from replens.apps.reproduce.recipes.ch5 import FOUR_METHODS, PAPER_CH5, method_label
from replens.apps.reproduce.registry import RecipeContext, RecipeResult, recipe
from replens.apps.reproduce.registry import RecipeContext as Ctx
from replens.models import create_backbone
from replens.ssl import create_method, create_plugin


def _linear_dims(module: Any) -> str:
    import torch

    dims = [m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear)]
    return f"MLP ({', '.join(str(d) for d in dims)})" if dims else "N/A"


def paper_setup(ctx: RecipeContext, method: str) -> dict[str, Any]:
    """One column of Table C.1 as the engine builds it at the paper budget (no training)."""
    import torch

    paper = Ctx(budget="paper", data=None, out=ctx.out, seed=ctx.seed, progress=False)
    cfg = paper.train_config(**PAPER_CH5[method])
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        backbone = create_backbone(cfg.backbone, **cfg.backbone_args)
        model = create_method(cfg.method, backbone, **cfg.method_args)
    momentum = hasattr(model, "backbone_momentum")
    temperature = getattr(getattr(model, "criterion", None), "temperature", None)
    zero_init = bool(cfg.backbone_args.get("zero_init_residual", False))
    return {
        "Encoder": {"resnet50": "ResNet-50"}.get(cfg.backbone, cfg.backbone),
        "Zero init residual": zero_init,
        "Projection model features": _linear_dims(model.projection_head),
        "Prediction model features": _linear_dims(model.prediction_head) if hasattr(model, "prediction_head") else "N/A",
        "Momentum encoder (for right encoder)": momentum,
        "Stop-grad (for right encoder)": momentum or method == "simsiam",
        "Contrastive loss temperature": "N/A" if temperature is None else float(temperature),
        "Optimizer": cfg.optimizer.upper(),
        "Learning rate": cfg.lr,
        "Weight decay": cfg.weight_decay,
        "Learning rate schedule": f"linear warm-up ({cfg.warmup_epochs:g} epochs), cosine decay",
        "Epochs": cfg.epochs,
        "Batch size": cfg.batch_size,
        "Linear probe epochs": "full-batch L-BFGS, <= 200 iterations",
        "Linear probe learning rate": "N/A (line search)",
        "Linear probe optimizer": "L-BFGS (multinomial logistic regression)",
        "Linear probe learning rate schedule": "N/A",
    }


@recipe("table-c.1", title="Training setup for each model (SimCLR, BYOL, MoCo v2, SimSiam)",
        section="C.1", kind="table", needs="nothing (reads the paper-budget configs; no training); seconds",
        no_claim="training settings as a table; nothing measured or compared")
def table_c_1(ctx: RecipeContext) -> RecipeResult:
    """Table C.1 as our engine's paper-budget configuration (the same at every budget)."""
    chosen = option(ctx, "methods", list(FOUR_METHODS))
    columns = {method_label(m): paper_setup(ctx, m) for m in chosen}
    settings = list(next(iter(columns.values())))
    rows = [{"setting": s, **{label: col[s] for label, col in columns.items()}} for s in settings]
    return RecipeResult(rows=rows, protocol={"source": "replens.apps.reproduce.recipes.ch5.PAPER_CH5 through "
                                                       "RecipeContext.train_config (paper budget)"},
                        notes="built, not trained; departures: ResNet zero-init-residual is not an option of the "
                              "torchvision backbone; MoCo's projection head is (2048, 256), not (4096, 256); the "
                              "paper gives no batch size (we use 4096); our linear probe is the library's fixed "
                              "L-BFGS protocol, not 90 epochs of SGD")


def _fmt(v: Any) -> str:
    if isinstance(v, tuple | list):
        return ", ".join(f"{x:.3g}" for x in v)
    return f"{v:.3g}" if isinstance(v, float) else str(v)


@recipe("table-c.2", title="Augmentation hyper-parameters (image and FDA), left and right views",
        section="C.2", kind="table", needs="nothing (builds the views the engine would use; no training); seconds",
        no_claim="augmentation settings as a table; nothing measured or compared")
def table_c_2(ctx: RecipeContext) -> RecipeResult:
    """Table C.2 from the views the engine builds for a method with the FDA plug-in at 224 px (default BYOL)."""
    method = str(option(ctx, "method", "byol"))
    size = 224
    backbone = create_backbone("small_cnn")
    views = create_method(method, backbone).view_configs(size, backbone.mean, backbone.std)
    left, right = create_plugin("fda").view_configs(views)
    rows = [
        {"augmentation": "Random Resized Crop",
         "values": f"{size} x {size}, area {_fmt(left.crop_scale)}, aspect {_fmt(left.crop_ratio)} (log-uniform)",
         "p (left)": 1.0, "p (right)": 1.0},
        {"augmentation": "Color jitter",
         "values": f"brightness {left.brightness}, contrast {left.contrast}, saturation {left.saturation}, hue {left.hue}",
         "p (left)": left.jitter_prob, "p (right)": right.jitter_prob},
        {"augmentation": "Grayscale", "values": "N/A", "p (left)": left.gray_prob, "p (right)": right.gray_prob},
        {"augmentation": "Horizontal flip", "values": "N/A", "p (left)": left.hflip_prob, "p (right)": right.hflip_prob},
        {"augmentation": "Gaussian blur", "values": f"sigma {_fmt(left.blur_sigma)}",
         "p (left)": left.blur_prob, "p (right)": right.blur_prob},
        {"augmentation": "Solarize", "values": "threshold 0.5", "p (left)": left.solarize_prob,
         "p (right)": right.solarize_prob},
    ]
    lf, rf = left.fda, right.fda
    for name, rng_key, prob_key, label in (
        ("Amplitude rescale", "amplitude_range", "amplitude_prob", "m, n = {}"),
        ("Phase shift", "phase_range", "phase_prob", "p, q = {}"),
        ("Random frequency mask", "mask_range", "mask_prob", "k ~ U({})"),
    ):
        rows.append({"augmentation": name, "values": label.format(_fmt(getattr(lf, rng_key))),
                     "p (left)": getattr(lf, prob_key), "p (right)": getattr(rf, prob_key) if rf else 0.0})
    rows.append({"augmentation": "Gaussian mixture mask", "values": f"c = {lf.gmm_count}, sigma ~ U({_fmt(lf.gmm_sigma)})",
                 "p (left)": lf.gmm_prob, "p (right)": rf.gmm_prob if rf else 0.0})
    return RecipeResult(rows=rows, protocol={"method": method, "size": size, "views": "method.view_configs + fda plug-in"},
                        notes=f"views of {method} + the fda plug-in at {size} px as the engine builds them; the "
                              "paper's table lists no solarisation (our BYOL views keep BYOL's 0 / 0.2)")

"""The one training loop: any registered SSL recipe on any data source.

Built on Lightning Fabric (CPU, one or several GPUs, mixed precision) with our
own pieces where they make training exact or fast:

* Data order is a pure function of ``(seed, epoch)`` and view randomness a pure
  function of ``(seed, step)``, so ``resume`` continues exactly where a killed
  run stopped: the next batch, the same views, the same learning rate.
* Images are moved to the device once as uint8 and the views are made there
  (``replens.augment.views``).
* Checkpoints are plain tensors/numbers written atomically with ``torch.save``
  and read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm.auto import tqdm

from replens.augment.views import ViewConfig, ViewPipeline, override_view
from replens.data.base import BadImageGuard, ImageSource, collate_samples
from replens.runs import atomic_write, atomic_write_json
from replens.schedules import lr_at


@dataclass
class TrainConfig:
    """Configuration of one SSL training run.

    Attributes:
        method: Registered SSL method (``replens list``).
        backbone: Registered backbone name.
        backbone_args: Keyword arguments of the backbone (e.g. ``{"stem": "cifar"}``).
        image_size: View side in pixels.
        epochs: Passes over the data.
        max_steps: Stop after this many optimiser steps (None: epochs decide).
        batch_size: Images per step (each gives ``n_views`` views).
        optimizer: ``adamw``, ``sgd`` or ``lars``.
        lr: Peak learning rate.
        weight_decay: Weight decay.
        momentum: SGD/LARS momentum.
        warmup_epochs: Linear warm-up length, then cosine decay to 0.
        init_from: Backbone weights to start from: a ``backbone.safetensors``
            written by a run, any weights file ``replens.models.load_weights``
            reads, or a training ``checkpoint.pt`` (its backbone is taken).
        plugins: Training plug-ins (``replens list``), e.g. ``["ddm", "fda"]``.
        plugin_args: Per plug-in keyword arguments, e.g. ``{"ddm": {"prefix_dim": 16}}``.
        channels_last: Use channels-last memory format (faster convolutions on GPUs).
        compile: Wrap the model in ``torch.compile``.
        online_probe: Train a linear classifier on the detached representation
            alongside (when labels exist) and log its running accuracy.
        knn_every: Epochs between kNN monitor evaluations (needs ``monitor``; 0: off).
        tensorboard: Also log to ``run_dir/tensorboard``.
        method_args: Keyword arguments of the method's constructor (e.g.
            ``{"temperature": 0.2}``; see each recipe's docstring).
        view_args: Overrides of every view's distributions
            (:class:`~replens.augment.views.ViewConfig` fields), e.g.
            ``{"crop_scale": [0.3, 1.0], "gray_prob": 0.0}``; applied to the
            recipe's views before plug-ins change them.
        num_workers: DataLoader workers.
        accelerator: ``auto``, ``cpu`` or ``cuda``.
        devices: Devices for Fabric.
        precision: Fabric precision (``32-true``, ``bf16-mixed``, ``16-mixed``).
        checkpoint_every: Steps between checkpoints (0: only at the end).
        log_every: Steps between metric lines.
        seed: Seed of data order, views and initialisation.
    """

    method: str = "simclr"
    backbone: str = "small_cnn"
    backbone_args: dict[str, Any] = field(default_factory=dict)
    image_size: int = 32
    epochs: int = 10
    max_steps: int | None = None
    batch_size: int = 256
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 1e-4
    momentum: float = 0.9
    warmup_epochs: float = 1.0
    method_args: dict[str, Any] = field(default_factory=dict)
    view_args: dict[str, Any] = field(default_factory=dict)
    init_from: str | None = None
    plugins: list[str] = field(default_factory=list)
    plugin_args: dict[str, Any] = field(default_factory=dict)
    channels_last: bool = False
    compile: bool = False
    online_probe: bool = True
    knn_every: int = 1
    tensorboard: bool = False
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int = 1
    precision: str = "32-true"
    checkpoint_every: int = 500
    log_every: int = 10
    seed: int = 0


def _epoch_batches(n: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    perm = torch.randperm(n, generator=g).tolist()
    return [perm[i : i + batch_size] for i in range(0, n - batch_size + 1, batch_size)]


def _make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    if config.optimizer == "lars":
        from lightly.utils.lars import LARS

        return LARS(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer {config.optimizer!r}; choose adamw, sgd or lars")


def _save_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict, plugins: list[Any]
) -> None:
    extra = {p.name: p.extra_state() for p in plugins}
    payload = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "state": state, "plugins": extra}
    atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _unwrap(model: torch.nn.Module) -> Any:
    """The recipe inside Fabric / DDP / torch.compile wrappers."""
    while True:
        for attr in ("_forward_module", "module", "_orig_mod"):
            inner = getattr(model, attr, None)
            if isinstance(inner, torch.nn.Module) and inner is not model:
                model = inner
                break
        else:
            return model


def _init_backbone(backbone: torch.nn.Module, path: str | Path) -> None:
    """Load starting weights: a training checkpoint's backbone, or a weights file."""
    from replens.models import load_weights

    if str(path).endswith(".pt"):
        ckpt = load_checkpoint(path)
        if isinstance(ckpt, dict) and "model" in ckpt and "state" in ckpt:
            state = {k[len("backbone.") :]: v for k, v in ckpt["model"].items() if k.startswith("backbone.")}
            missing, unexpected = backbone.load_state_dict(state, strict=False)
            if missing or unexpected:
                raise KeyError(
                    f"{path}: backbone keys do not match: missing {missing[:5]}, unexpected {unexpected[:5]}"
                )
            return
    load_weights(backbone, path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a training checkpoint safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _base_backbone(backbone: torch.nn.Module) -> torch.nn.Module:
    """The plain encoder inside plug-in wrappers (a wrapper exposes it as ``base_backbone``)."""
    while isinstance(getattr(backbone, "base_backbone", None), torch.nn.Module):
        backbone = backbone.base_backbone
    return backbone


@torch.no_grad()
def _knn_monitor(
    backbone: torch.nn.Module,
    bank: ImageSource,
    queries: ImageSource,
    pipeline: ViewPipeline,
    device: torch.device,
    batch_size: int,
) -> float:
    """kNN top-1 (%) of ``queries`` against ``bank`` with the current encoder (centre views, no augmentation)."""
    from replens.evaluate import knn_predict

    was_training = backbone.training
    backbone.eval()
    feats = []
    for src in (bank, queries):
        loader = torch.utils.data.DataLoader(src, batch_size=batch_size, collate_fn=collate_samples)
        rows, labels = [], []
        for b in loader:
            x = b["image"].to(device)
            if not len(x):
                continue
            rows.append(backbone(pipeline.apply(x, pipeline.sample(len(x), device=device))).float().cpu())
            labels.append(b["label"])
        feats.append((torch.cat(rows).numpy(), torch.cat(labels).numpy()))
    backbone.train(was_training)
    (bx, by), (qx, qy) = feats
    keep = by >= 0
    pred = knn_predict(bx[keep], by[keep], qx, device=device)
    return float(100.0 * (pred == qy).mean())


def train(
    config: TrainConfig,
    source: ImageSource,
    run_dir: str | Path,
    *,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
    monitor: tuple[ImageSource, ImageSource] | None = None,
) -> dict[str, Any]:
    """Train ``config.method`` on ``source``; write checkpoints and metrics.

    With ``devices > 1`` Fabric runs DDP: each global batch of
    ``batch_size`` images is split evenly across the processes (the data order
    does not depend on the process count), each process draws its own views,
    batch norm is synchronised on GPUs, and only rank 0 writes files. From the CLI, Fabric re-launches the same command per
    process.

    A method that learns from labels (``needs_labels``, e.g. ``supervised``)
    gets each batch's class ids on the device and ``num_classes`` from the
    source; its heads live in ``checkpoint.pt``, ``backbone.safetensors`` is
    the plain encoder as for every method.

    Args:
        config: The run's configuration.
        source: Training images (``replens.data`` protocol).
        run_dir: Folder for ``checkpoint.pt``, ``metrics.jsonl`` and the final
            ``backbone.safetensors``.
        resume: Continue from ``run_dir/checkpoint.pt`` when it exists.
        progress: Show a progress bar.
        stop_after: Return after this many steps in this call (tests of resume).
        on_step: Called with (step, metrics) after every step.
        monitor: ``(bank, queries)`` sources for a kNN accuracy monitor run
            every ``config.knn_every`` epochs and at the end.

    Returns:
        Summary: steps, final loss, images/s, monitors, paths; and
        ``"backbone"``, the trained encoder module.

    Raises:
        ValueError: A labelled method on a source with unlabelled samples or
            fewer than 2 classes (the message names the source).
    """
    from lightning.fabric import Fabric

    from replens.models import create_backbone
    from replens.ssl import create_method, create_plugin, method_class

    run_dir = Path(run_dir)
    strategy = "ddp" if config.devices > 1 else "auto"
    fabric = Fabric(
        accelerator=config.accelerator, devices=config.devices, strategy=strategy, precision=config.precision
    )
    if config.devices > 1:
        fabric.launch()
    world, rank = fabric.world_size, fabric.global_rank
    if config.batch_size % world:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the {world} processes")
    is_main = fabric.is_global_zero
    if is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    fabric.seed_everything(config.seed, verbose=False)
    plugins = [create_plugin(name, **config.plugin_args.get(name, {})) for name in config.plugins]
    backbone = create_backbone(config.backbone, **config.backbone_args)
    if config.init_from:
        _init_backbone(backbone, config.init_from)
    mean, std = backbone.mean, backbone.std
    for plugin in plugins:
        backbone = plugin.wrap_backbone(backbone)
    method_args = dict(config.method_args)
    if world > 1 and config.method in ("simclr", "barlow_twins", "vicreg"):
        method_args.setdefault("gather_distributed", True)
    labels_all = np.asarray(source.labels)
    num_classes = int(labels_all.max()) + 1 if len(labels_all) and labels_all.max() >= 0 else 0
    needs_labels = bool(method_class(config.method).needs_labels)
    if needs_labels:
        unlabelled = int((labels_all < 0).sum())
        if unlabelled or num_classes < 2:
            raise ValueError(
                f"method {config.method!r} learns from labels, but the source {source.describe()} has "
                + (f"{unlabelled} unlabelled samples" if unlabelled else f"{num_classes} class(es)")
                + "; give a labelled source with at least 2 classes"
            )
        method_args.setdefault("num_classes", num_classes)
    model = create_method(config.method, backbone, **method_args)
    if world > 1 and fabric.device.type == "cuda":  # SyncBatchNorm has no CPU kernels
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    view_configs = [override_view(v, config.view_args) for v in model.view_configs(config.image_size, mean, std)]
    for plugin in plugins:
        view_configs = plugin.view_configs(view_configs)
    pipelines = [ViewPipeline(v) for v in view_configs]
    data_info = {
        "num_domains": len(source.domain_names),
        "domains": np.asarray(source.domains),
        "labels": labels_all,
        "num_samples": len(source),
        "epochs": config.epochs,
    }
    for plugin in plugins:
        plugin.setup(model, data_info)
    model.plugins = torch.nn.ModuleList(plugins)
    if config.online_probe and num_classes > 1:
        # solo-learn style online linear probe on the detached representation, trained by the same optimiser
        model.online_probe = torch.nn.Linear(int(_base_backbone(backbone).feature_dim), num_classes)
    private = {id(p) for plugin in plugins for p in plugin.private_parameters()}
    optimizer = _make_optimizer(config, [p for p in model.parameters() if p.requires_grad and id(p) not in private])
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    n = len(source)
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the dataset ({n} samples)")
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    warmup = int(config.warmup_epochs * steps_per_epoch)

    step = 0
    ckpt_path = run_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["state"]["step"])
        for plugin in plugins:
            plugin.load_extra_state(ckpt.get("plugins", {}).get(plugin.name, {}))
    raw_model = model
    if config.compile:
        model = torch.compile(model)
    model, optimizer = fabric.setup(model, optimizer)
    device = fabric.device
    metrics_path = run_dir / "metrics.jsonl"
    if is_main:
        if step == 0:
            metrics_path.write_text("")
        else:  # drop lines logged after the checkpoint we resume from
            lines = [ln for ln in metrics_path.read_text().splitlines() if ln and json.loads(ln)["step"] <= step]
            atomic_write(metrics_path, lambda tmp: tmp.write_text("".join(ln + "\n" for ln in lines)))
    writer = None
    if config.tensorboard and is_main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))

    per_rank = config.batch_size // world

    def batches() -> Iterator[dict[str, Any]]:
        epoch, offset = divmod(step, steps_per_epoch)
        while True:
            plan = [
                b[rank * per_rank : (rank + 1) * per_rank]
                for b in _epoch_batches(n, config.batch_size, config.seed, epoch)[offset:]
            ]
            loader = torch.utils.data.DataLoader(
                source,
                batch_sampler=plan,
                collate_fn=collate_samples,
                num_workers=config.num_workers,
                pin_memory=device.type == "cuda",
            )
            yield from loader
            epoch, offset = epoch + 1, 0

    raw = raw_model
    guard = BadImageGuard(max_bad_fraction=getattr(source, "max_bad_fraction", 0.01))
    view_gen = torch.Generator(device=device)
    bar = tqdm(
        total=total, initial=step, disable=not (progress and is_main), desc=f"train {config.method}", unit="step"
    )
    t0, seen, last_loss, calls = time.perf_counter(), 0, float("nan"), 0
    monitors: dict[str, float] = {}
    eval_pipe = ViewPipeline(
        ViewConfig(
            size=config.image_size,
            crop_scale=(1.0, 1.0),
            crop_ratio=(1.0, 1.0),
            hflip_prob=0.0,
            jitter_prob=0.0,
            gray_prob=0.0,
            mean=mean,
            std=std,
        )
    )
    model.train()
    log = open(metrics_path, "a", encoding="utf-8") if is_main else None
    try:
        for batch in batches():
            if step >= total or (stop_after is not None and calls >= stop_after):
                break
            guard.update(batch)
            images = batch["image"].to(device, non_blocking=True)
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, warmup, config.lr)
            epoch = step // steps_per_epoch
            raw.on_step_start(step, total, epoch)
            views = []
            for k, pipe in enumerate(pipelines):
                view_gen.manual_seed(config.seed * 1_000_003 + step * 16 + k + 7919 * rank)
                view = pipe(images, view_gen)
                views.append(view.contiguous(memory_format=torch.channels_last) if config.channels_last else view)
            dev_batch = {
                **batch,
                "label": batch["label"].to(device),
                "domain": batch["domain"].to(device),
                "index": batch["index"].to(device),
            }
            out = model(views, dev_batch["label"]) if needs_labels else model(views)
            loss, terms = out["loss"], {}
            for plugin in plugins:
                for key, value in plugin.loss(out, dev_batch, step).items():
                    terms[f"{plugin.name}/{key}"] = value
                    loss = loss + value
            probe_acc = None
            if hasattr(raw, "online_probe"):
                labelled = dev_batch["label"] >= 0
                if bool(labelled.any()):
                    logits = raw.online_probe(out["representation"][labelled].float())
                    probe_loss = torch.nn.functional.cross_entropy(logits, dev_batch["label"][labelled])
                    loss = loss + probe_loss
                    probe_acc = float((logits.argmax(1) == dev_batch["label"][labelled]).float().mean()) * 100
            optimizer.zero_grad(set_to_none=True)
            fabric.backward(loss)
            optimizer.step()
            raw.on_step_end(step, total)
            extra = {}
            for plugin in plugins:
                extra.update(
                    {f"{plugin.name}/{k}": v for k, v in plugin.after_step(step, total, out, dev_batch).items()}
                )
            step, calls, seen = step + 1, calls + 1, seen + images.shape[0] * world
            last_loss = float(out["loss"].detach()) + sum(float(v.detach()) for v in terms.values())
            if not math.isfinite(last_loss):
                raise FloatingPointError(f"loss became {last_loss} at step {step}; lower the learning rate")
            record = {
                "step": step,
                "epoch": epoch,
                "loss": last_loss,
                "ssl_loss": float(out["loss"].detach()),
                "lr": optimizer.param_groups[0]["lr"],
                **{k: float(v.detach()) for k, v in terms.items()},
                **extra,
            }
            if probe_acc is not None:
                record["online_probe_acc"] = probe_acc
            end_of_epoch = step % steps_per_epoch == 0 or step == total
            if (
                monitor is not None
                and end_of_epoch
                and config.knn_every
                and ((step // steps_per_epoch) % config.knn_every == 0 or step == total)
            ):
                monitors["knn_acc"] = _knn_monitor(
                    _base_backbone(raw.backbone), monitor[0], monitor[1], eval_pipe, device, config.batch_size
                )
                record["knn_acc"] = monitors["knn_acc"]
            if is_main and (step % config.log_every == 0 or step == total or "knn_acc" in record):
                log.write(json.dumps(record) + "\n")
                log.flush()
                if writer is not None:
                    for key, value in record.items():
                        if key != "step":
                            writer.add_scalar(key, value, step)
            if on_step is not None:
                on_step(step, record)
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}")
            if (config.checkpoint_every and step % config.checkpoint_every == 0) or step == total:
                if is_main:
                    _save_checkpoint(ckpt_path, raw, optimizer, {"step": step, "config": asdict(config)}, plugins)
                fabric.barrier()
    finally:
        bar.close()
        if log is not None:
            log.close()
        if writer is not None:
            writer.close()
    guard.finish()
    elapsed = time.perf_counter() - t0
    backbone_path = run_dir / "backbone.safetensors"
    encoder = _base_backbone(raw.backbone)
    if step >= total and is_main:
        state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
        atomic_write(backbone_path, lambda tmp: save_file(state, str(tmp), metadata={"backbone": config.backbone}))
    summary = {
        "steps": step,
        "total_steps": total,
        "finished": step >= total,
        "final_loss": last_loss,
        "images_per_s": seen / elapsed if elapsed > 0 else float("nan"),
        "bad_images": len(guard.bad_names),
        "world_size": world,
        **monitors,
        "checkpoint": str(ckpt_path),
        "backbone_weights": str(backbone_path) if step >= total else None,
    }
    if is_main:
        atomic_write_json(run_dir / "train_summary.json", summary)
    return {**summary, "backbone": encoder}

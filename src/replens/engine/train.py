"""The one training loop: any registered SSL recipe on any data source.

Built on Lightning Fabric (CPU, one or several GPUs, mixed precision) with our
own pieces where they make training exact or fast:

* Data order is a pure function of ``(seed, epoch)`` and view randomness a pure
  function of ``(seed, step)``, so ``resume`` continues exactly where a killed
  run stopped: the next batch, the same views, the same learning rate.
* Images are moved to the device once as uint8 and the views are made there
  (``replens.augment.views``); on CUDA the next step's copy and views are
  queued on a side stream while the current model step runs
  (:class:`~replens.augment.views.ViewFeed`), with the same views.
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

from replens.augment.views import ViewConfig, ViewFeed, ViewPipeline, override_view
from replens.config import require
from replens.data.base import BadImageGuard, ImageSource, collate_samples
from replens.engine.loop import (
    epoch_batches,
    finite_loss,
    open_metrics_log,
    save_training_checkpoint,
    set_learning_rate,
    write_record,
)
from replens.evaluate import knn_predict
from replens.models import create_backbone, load_weights
from replens.models.weights import WeightsError, read_raw
from replens.runs import atomic_write, atomic_write_json
from replens.ssl import create_method, create_plugin, method_entry


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

    def __post_init__(self) -> None:
        """Check ranges before any work (a bad value is a one-line error naming its key)."""
        for key in ("epochs", "batch_size", "image_size", "log_every", "devices"):
            value = getattr(self, key)
            require(isinstance(value, int) and value >= 1, key, value, "a positive integer")
        for key in ("checkpoint_every", "num_workers", "knn_every"):
            value = getattr(self, key)
            require(isinstance(value, int) and value >= 0, key, value, "a non-negative integer")
        require(self.max_steps is None or self.max_steps >= 1, "max_steps", self.max_steps, "a positive integer")
        require(math.isfinite(self.lr) and self.lr > 0, "lr", self.lr, "a positive finite number")
        for key in ("weight_decay", "momentum", "warmup_epochs"):
            value = getattr(self, key)
            require(math.isfinite(value) and value >= 0, key, value, "a non-negative finite number")
        override_view(ViewConfig(size=self.image_size), self.view_args)  # unknown fields and ranges


def _overlap_views(device: torch.device) -> bool:
    """Whether the loop makes the next step's views ahead, during the model step (CUDA: on a side stream)."""
    return device.type == "cuda"


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
    save_training_checkpoint(path, payload)


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
    if str(path).endswith(".pt"):
        ckpt = read_raw(path)
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
    """Read a training checkpoint safely (``weights_only=True``).

    Raises:
        replens.models.WeightsError: Missing, truncated or foreign file (one line naming it).
    """
    ckpt = read_raw(path)
    if not isinstance(ckpt, dict) or not {"model", "optimizer", "state"} <= set(ckpt):
        raise WeightsError(f"{path} is not a replens training checkpoint (it has no model, optimizer and state)")
    return ckpt


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


@dataclass
class _Parts:
    """What :func:`_build` makes: the recipe with its plug-ins, views, probe and optimiser."""

    model: torch.nn.Module
    plugins: list[Any]
    optimizer: torch.optim.Optimizer
    pipelines: list[ViewPipeline]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    needs_labels: bool


@dataclass
class _Schedule:
    """Steps of the run: per epoch, in all, of warm-up."""

    steps_per_epoch: int
    total: int
    warmup: int


@dataclass
class _Progress:
    """What the loop counts while it runs."""

    step: int
    calls: int = 0
    seen: int = 0
    last_loss: float = float("nan")
    t0: float = field(default_factory=time.perf_counter)
    monitors: dict[str, float] = field(default_factory=dict)


def _launch(config: TrainConfig, run_dir: Path) -> Any:
    """Fabric for the run (DDP launched with ``devices > 1``), seeded; rank 0 makes ``run_dir``."""
    from lightning.fabric import Fabric

    strategy = "ddp" if config.devices > 1 else "auto"
    fabric = Fabric(
        accelerator=config.accelerator, devices=config.devices, strategy=strategy, precision=config.precision
    )
    if config.devices > 1:
        fabric.launch()
    if config.batch_size % fabric.world_size:
        raise ValueError(f"batch_size={config.batch_size} is not divisible by the {fabric.world_size} processes")
    if fabric.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
    fabric.seed_everything(config.seed, verbose=False)
    return fabric


def _method_args(config: TrainConfig, source: ImageSource, world: int) -> tuple[dict[str, Any], bool, int]:
    """The recipe's keyword arguments from its registry entry: gathering across processes, the labels it needs.

    Returns:
        ``(method_args, needs_labels, num_classes)``.
    """
    method_args = dict(config.method_args)
    method = method_entry(config.method)
    if world > 1 and method.gathers:
        method_args.setdefault("gather_distributed", True)
    labels_all = np.asarray(source.labels)
    num_classes = int(labels_all.max()) + 1 if len(labels_all) and labels_all.max() >= 0 else 0
    if method.needs_labels:
        unlabelled = int((labels_all < 0).sum())
        if unlabelled or num_classes < 2:
            raise ValueError(
                f"method {config.method!r} learns from labels, but the source {source.describe()} has "
                + (f"{unlabelled} unlabelled samples" if unlabelled else f"{num_classes} class(es)")
                + "; give a labelled source with at least 2 classes"
            )
        method_args.setdefault("num_classes", num_classes)
    return method_args, method.needs_labels, num_classes


def _build(config: TrainConfig, source: ImageSource, fabric: Any) -> _Parts:
    """Plug-ins, backbone, recipe, views, online probe and optimiser, in the order that fixes their seeds."""
    world = fabric.world_size
    plugins = [create_plugin(name, **config.plugin_args.get(name, {})) for name in config.plugins]
    backbone = create_backbone(config.backbone, **config.backbone_args)
    if config.init_from:
        _init_backbone(backbone, config.init_from)
    mean, std = backbone.mean, backbone.std
    for plugin in plugins:
        backbone = plugin.wrap_backbone(backbone)
    method_args, needs_labels, num_classes = _method_args(config, source, world)
    model = create_method(config.method, backbone, **method_args)
    if world > 1 and fabric.device.type == "cuda":  # SyncBatchNorm has no CPU kernels
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    view_configs = [override_view(v, config.view_args) for v in model.view_configs(config.image_size, mean, std)]
    for plugin in plugins:
        view_configs = plugin.view_configs(view_configs)
    data_info = {
        "num_domains": len(source.domain_names),
        "domains": np.asarray(source.domains),
        "labels": np.asarray(source.labels),
        "num_samples": len(source),
        "epochs": config.epochs,
    }
    pipelines = [ViewPipeline(v) for v in view_configs]
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
    return _Parts(model, plugins, optimizer, pipelines, mean, std, needs_labels)


def _schedule(config: TrainConfig, n: int) -> _Schedule:
    steps_per_epoch = n // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"batch_size={config.batch_size} is larger than the dataset ({n} samples)")
    total = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total = min(total, config.max_steps)
    return _Schedule(steps_per_epoch, total, int(config.warmup_epochs * steps_per_epoch))


def _resume(ckpt_path: Path, parts: _Parts) -> int:
    """Load ``checkpoint.pt`` into the model, optimiser and plug-ins; the step it was written at."""
    ckpt = load_checkpoint(ckpt_path)
    try:
        parts.model.load_state_dict(ckpt["model"])
        parts.optimizer.load_state_dict(ckpt["optimizer"])
        step = int(ckpt["state"]["step"])
    except (RuntimeError, ValueError, KeyError, TypeError) as exc:
        raise WeightsError(f"{ckpt_path} does not fit this run's model: {' '.join(str(exc).split())[:300]}") from None
    for plugin in parts.plugins:
        plugin.load_extra_state(ckpt.get("plugins", {}).get(plugin.name, {}))
    return step


def _batches(
    source: ImageSource, config: TrainConfig, schedule: _Schedule, start: int, rank: int, world: int, device: Any
) -> Iterator[dict[str, Any]]:
    """This process's share of every global batch from step ``start`` on, in the order fixed by ``(seed, epoch)``."""
    per_rank = config.batch_size // world
    epoch, offset = divmod(start, schedule.steps_per_epoch)
    while True:
        plan = [
            b[rank * per_rank : (rank + 1) * per_rank]
            for b in epoch_batches(len(source), config.batch_size, config.seed, epoch)[offset:]
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


def _view_maker(
    config: TrainConfig, pipelines: list[ViewPipeline], device: Any, rank: int
) -> Callable[[torch.Tensor, int], list[torch.Tensor]]:
    """``make_views(images, step)``: each view's randomness a pure function of ``(seed, step, view, rank)``."""
    view_gen = torch.Generator(device=device)

    def make_views(images: torch.Tensor, at_step: int) -> list[torch.Tensor]:
        views = []
        for k, pipe in enumerate(pipelines):
            view_gen.manual_seed(config.seed * 1_000_003 + at_step * 16 + k + 7919 * rank)
            view = pipe(images, view_gen)
            views.append(view.contiguous(memory_format=torch.channels_last) if config.channels_last else view)
        return views

    return make_views


def _centre_views(config: TrainConfig, mean: tuple[float, ...], std: tuple[float, ...]) -> ViewPipeline:
    """The kNN monitor's views: the whole image, no augmentation."""
    return ViewPipeline(
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


def _plugin_losses(
    plugins: list[Any], out: dict[str, torch.Tensor], batch: dict[str, Any], step: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The recipe's loss plus every plug-in's terms, and the terms by ``plugin/name``."""
    loss, terms = out["loss"], {}
    for plugin in plugins:
        for key, value in plugin.loss(out, batch, step).items():
            terms[f"{plugin.name}/{key}"] = value
            loss = loss + value
    return loss, terms


def _online_probe_loss(
    raw: Any, out: dict[str, torch.Tensor], batch: dict[str, Any]
) -> tuple[torch.Tensor | None, float | None]:
    """Cross-entropy of the online probe on the detached representation of labelled samples, and its accuracy (%)."""
    if not hasattr(raw, "online_probe"):
        return None, None
    labelled = batch["label"] >= 0
    if not bool(labelled.any()):
        return None, None
    logits = raw.online_probe(out["representation"][labelled].float())
    probe_loss = torch.nn.functional.cross_entropy(logits, batch["label"][labelled])
    return probe_loss, float((logits.argmax(1) == batch["label"][labelled]).float().mean()) * 100


def _after_step(plugins: list[Any], step: int, total: int, out: dict[str, Any], batch: dict[str, Any]) -> dict:
    """What every plug-in's ``after_step`` reports, by ``plugin/name``."""
    extra = {}
    for plugin in plugins:
        extra.update({f"{plugin.name}/{k}": v for k, v in plugin.after_step(step, total, out, batch).items()})
    return extra


def _knn_due(config: TrainConfig, schedule: _Schedule, step: int) -> bool:
    """Whether the kNN monitor runs after ``step`` (every ``knn_every`` epochs and at the end)."""
    end_of_epoch = step % schedule.steps_per_epoch == 0 or step == schedule.total
    return bool(
        end_of_epoch
        and config.knn_every
        and ((step // schedule.steps_per_epoch) % config.knn_every == 0 or step == schedule.total)
    )


def _open_logs(config: TrainConfig, run_dir: Path, step: int, is_main: bool) -> tuple[Any, Any]:
    """``(metrics.jsonl handle, TensorBoard writer)`` on rank 0 (``None`` elsewhere or when off)."""
    if not is_main:
        return None, None
    log = open_metrics_log(run_dir / "metrics.jsonl", step)
    writer = None
    if config.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir / "tensorboard"))
    return log, writer


def _log_record(log: Any, writer: Any, record: dict[str, Any]) -> None:
    write_record(log, record)
    if writer is not None:
        for key, value in record.items():
            if key != "step":
                writer.add_scalar(key, value, record["step"])


def _export(
    config: TrainConfig, run_dir: Path, raw: Any, progress: _Progress, schedule: _Schedule, guard: Any, world: int,
    is_main: bool,
) -> dict[str, Any]:
    """Write ``backbone.safetensors`` (a finished run) and ``train_summary.json`` on rank 0; the summary."""
    elapsed = time.perf_counter() - progress.t0
    backbone_path = run_dir / "backbone.safetensors"
    encoder = _base_backbone(raw.backbone)
    finished = progress.step >= schedule.total
    if finished and is_main:
        state = {k: v.detach().contiguous().cpu() for k, v in encoder.state_dict().items()}
        header = {"backbone": config.backbone}
        if config.backbone_args:  # the architecture, so create_backbone(name, weights=...) rebuilds it
            header["backbone_args"] = json.dumps(config.backbone_args, sort_keys=True)
        atomic_write(backbone_path, lambda tmp: save_file(state, str(tmp), metadata=header))
    summary = {
        "steps": progress.step,
        "total_steps": schedule.total,
        "finished": finished,
        "final_loss": progress.last_loss,
        "images_per_s": progress.seen / elapsed if elapsed > 0 else float("nan"),
        "bad_images": len(guard.bad_names),
        "world_size": world,
        **progress.monitors,
        "checkpoint": str(run_dir / "checkpoint.pt"),
        "backbone_weights": str(backbone_path) if finished else None,
    }
    if is_main:
        atomic_write_json(run_dir / "train_summary.json", summary)
    return {**summary, "backbone": encoder}


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

    The run is :func:`_launch`, :func:`_build`, :func:`_schedule`, :func:`_resume`,
    then :class:`_Loop` (one :meth:`_Loop.step` per optimiser step: plug-in
    hooks, online probe, monitors, logging, checkpoint) and :func:`_export`.

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
    run_dir = Path(run_dir)
    fabric = _launch(config, run_dir)
    parts = _build(config, source, fabric)
    schedule = _schedule(config, len(source))
    ckpt_path = run_dir / "checkpoint.pt"
    step = _resume(ckpt_path, parts) if resume and ckpt_path.exists() else 0
    loop = _Loop(config, source, run_dir, fabric, parts, schedule, step, monitor)
    loop.run(progress=progress, stop_after=stop_after, on_step=on_step)
    return _export(config, run_dir, loop.raw, loop.progress, schedule, loop.guard, loop.world, loop.is_main)


class _Loop:
    """The optimiser steps of one run, on the Fabric-wrapped model."""

    def __init__(
        self, config: TrainConfig, source: ImageSource, run_dir: Path, fabric: Any, parts: _Parts,
        schedule: _Schedule, step: int, monitor: tuple[ImageSource, ImageSource] | None,
    ) -> None:
        self.config, self.run_dir, self.fabric, self.parts, self.schedule = config, run_dir, fabric, parts, schedule
        self.monitor = monitor
        self.world, self.rank, self.is_main = fabric.world_size, fabric.global_rank, fabric.is_global_zero
        self.raw = parts.model
        model = torch.compile(parts.model) if config.compile else parts.model
        self.model, self.optimizer = fabric.setup(model, parts.optimizer)
        self.device = fabric.device
        self.log, self.writer = _open_logs(config, run_dir, step, self.is_main)
        self.guard = BadImageGuard(max_bad_fraction=getattr(source, "max_bad_fraction", 0.01))
        self.progress = _Progress(step)
        self.eval_pipe = _centre_views(config, parts.mean, parts.std)
        batches = _batches(source, config, schedule, step, self.rank, self.world, self.device)
        make_views = _view_maker(config, parts.pipelines, self.device, self.rank)
        self.feed = ViewFeed(batches, make_views, self.device, overlap=_overlap_views(self.device))

    def run(
        self, *, progress: bool, stop_after: int | None, on_step: Callable[[int, dict[str, float]], None] | None
    ) -> None:
        """Steps until the schedule's end (or ``stop_after`` calls); logs, bars and writers closed in every case."""
        state, total = self.progress, self.schedule.total
        bar = tqdm(
            total=total, initial=state.step, disable=not (progress and self.is_main),
            desc=f"train {self.config.method}", unit="step",
        )
        self.model.train()
        try:
            while state.step < total and (stop_after is None or state.calls < stop_after):
                record = self.step(prepare_next=stop_after is None or state.calls + 1 < stop_after)
                if on_step is not None:
                    on_step(state.step, record)
                bar.update(1)
                bar.set_postfix(loss=f"{state.last_loss:.3f}")
                self.checkpoint()
        finally:
            bar.close()
            if self.log is not None:
                self.log.close()
            if self.writer is not None:
                self.writer.close()
        self.guard.finish()

    def step(self, *, prepare_next: bool) -> dict[str, Any]:
        """One optimiser step: views, recipe loss and plug-in terms, online probe, update, hooks, record."""
        config, raw, plugins, state = self.config, self.raw, self.parts.plugins, self.progress
        step, total = state.step, self.schedule.total
        batch, images, views = self.feed.take(step)
        self.guard.update(batch)
        set_learning_rate(self.optimizer, step, total, self.schedule.warmup, config.lr)
        epoch = step // self.schedule.steps_per_epoch
        raw.on_step_start(step, total, epoch)
        dev_batch = {**batch, **{key: batch[key].to(self.device) for key in ("label", "domain", "index")}}
        out = self.model(views, dev_batch["label"]) if self.parts.needs_labels else self.model(views)
        loss, terms = _plugin_losses(plugins, out, dev_batch, step)
        probe_loss, probe_acc = _online_probe_loss(raw, out, dev_batch)
        if probe_loss is not None:
            loss = loss + probe_loss
        self.optimizer.zero_grad(set_to_none=True)
        self.fabric.backward(loss)
        self.optimizer.step()
        if self.feed.overlap and step + 1 < total and prepare_next:
            self.feed.prepare(step + 1)  # the next views run while this step's model work does
        raw.on_step_end(step, total)
        extra = _after_step(plugins, step, total, out, dev_batch)
        state.step, state.calls, state.seen = step + 1, state.calls + 1, state.seen + images.shape[0] * self.world
        state.last_loss = finite_loss(
            float(out["loss"].detach()) + sum(float(v.detach()) for v in terms.values()), state.step
        )
        record = {
            "step": state.step,
            "epoch": epoch,
            "loss": state.last_loss,
            "ssl_loss": float(out["loss"].detach()),
            "lr": self.optimizer.param_groups[0]["lr"],
            **{k: float(v.detach()) for k, v in terms.items()},
            **extra,
        }
        if probe_acc is not None:
            record["online_probe_acc"] = probe_acc
        self.monitors(record)
        if self.is_main and (state.step % config.log_every == 0 or state.step == total or "knn_acc" in record):
            _log_record(self.log, self.writer, record)
        return record

    def monitors(self, record: dict[str, Any]) -> None:
        """The kNN monitor when due (its accuracy goes into ``record`` and the summary)."""
        if self.monitor is None or not _knn_due(self.config, self.schedule, self.progress.step):
            return
        bank, queries = self.monitor
        encoder = _base_backbone(self.raw.backbone)
        knn = _knn_monitor(encoder, bank, queries, self.eval_pipe, self.device, self.config.batch_size)
        self.progress.monitors["knn_acc"] = record["knn_acc"] = knn

    def checkpoint(self) -> None:
        """``checkpoint.pt`` every ``checkpoint_every`` steps and at the end (rank 0 writes, every rank waits)."""
        step, every = self.progress.step, self.config.checkpoint_every
        if (every and step % every == 0) or step == self.schedule.total:
            if self.is_main:
                state = {"step": step, "config": asdict(self.config)}
                _save_checkpoint(self.run_dir / "checkpoint.pt", self.raw, self.optimizer, state, self.parts.plugins)
            self.fabric.barrier()

"""CLIP-style training of the Visual Token Encoder and its baselines (paper sections 6.4.2, 6.5.1).

One loop trains every image side of :mod:`replens.tokens.model` against the
VL model's text tower, fine-tuned alongside, with open_clip's ``ClipLoss``
(the symmetric InfoNCE of CLIP over the batch), AdamW and a linear warm-up
followed by cosine decay (the paper: warm-up for a tenth of training).

* Every step draws one caption per image at random (the paper samples 1 of
  COCO's 5 captions); the draw, the data order and dropout are pure functions
  of ``(seed, step)``, so ``resume`` continues exactly where a run stopped.
* Checkpoints (``checkpoint.pt``) hold plain tensors and numbers, are written
  atomically and load with ``torch.load(weights_only=True)``; the finished
  model is ``model.safetensors`` (:func:`~replens.tokens.model.load_token_model`).
* Every ``eval_every`` steps the held-out retrieval recall and the mean
  diagonal / off-diagonal image-text similarity are logged (Figure 6.4).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from replens.engine import loop
from replens.runs import atomic_write_json
from replens.schedules import lr_at
from replens.tokens.encoder import TokenEncoderConfig, preset_config
from replens.tokens.model import ENCODERS, DualEncoder, build_dual_encoder, save_token_model
from replens.tokens.scoring import PairData, retrieval_metrics
from replens.vl.model import VLModel

__all__ = ["TokenTrainConfig", "build_model_for", "load_training_checkpoint", "lr_at", "train_token_model"]


@dataclass
class TokenTrainConfig:
    """One training run.

    Attributes:
        encoder: Image side (:data:`~replens.tokens.model.ENCODERS`).
        preset: Architecture preset (:data:`~replens.tokens.encoder.PRESETS`).
        width: Override the preset's width.
        layers: Override the preset's layers.
        heads: Override the preset's heads.
        mlp_ratio: Feed-forward size over width.
        dropout: Transformer dropout.
        pool: Token encoder pooling (``mean`` or ``image``).
        box_embedding: Token encoder box embedding (see :mod:`replens.tokens.encoder`).
        patch_size: ViT patch side.
        image_size: ViT input side (None: the images' side).
        steps: Optimiser steps.
        batch_size: Image-caption pairs per step (the paper: 256).
        lr: Peak learning rate of the image side.
        text_lr: Peak learning rate of the text tower and temperature (None: ``lr``).
        weight_decay: AdamW weight decay (matrices only).
        warmup_fraction: Fraction of steps of linear warm-up (the paper: 10 of 100 epochs).
        eval_every: Steps between held-out evaluations (0: only at the end).
        eval_caption: Which caption of each held-out image is the retrieval query.
        max_eval: Held-out images used by the evaluations.
        log_every: Steps between loss lines in ``metrics.jsonl``.
        num_workers: Background processes that assemble batches (token padding,
            image reads) while the model trains (0: in the training process).
        checkpoint_every: Steps between checkpoints (0: only at the end).
        seed: Seed of initialisation, data order and caption draws.
        device: Training device.
    """

    encoder: str = "tokens"
    preset: str = "cpu"
    width: int | None = None
    layers: int | None = None
    heads: int | None = None
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pool: str = "mean"
    box_embedding: bool = True
    patch_size: int = 4
    image_size: int | None = None
    steps: int = 1000
    batch_size: int = 128
    lr: float = 5e-4
    text_lr: float | None = None
    weight_decay: float = 0.05
    warmup_fraction: float = 0.1
    eval_every: int = 100
    eval_caption: int = 0
    max_eval: int = 1000
    log_every: int = 10
    num_workers: int = 0
    checkpoint_every: int = 200
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {self.encoder!r}; choose from {sorted(ENCODERS)}")
        if self.steps < 1 or self.batch_size < 2:
            raise ValueError("steps must be >= 1 and batch_size >= 2 (a contrastive batch)")

    def encoder_config(self) -> TokenEncoderConfig:
        """The architecture (preset plus overrides)."""
        return preset_config(
            self.preset,
            width=self.width,
            layers=self.layers,
            heads=self.heads,
            mlp_ratio=self.mlp_ratio,
            dropout=self.dropout,
            pool=self.pool,
            box_embedding=self.box_embedding,
        )


class _Indices(torch.utils.data.Dataset):
    """Dataset of indices: the collate function assembles a whole batch at once."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> int:
        return index


class _Collate:
    def __init__(self, data: PairData, uses_tokens: bool, context: int) -> None:
        self.data, self.uses_tokens, self.context = data, uses_tokens, context

    def __call__(self, indices: list[int]) -> tuple[list[int], dict[str, Any]]:
        return indices, self.data.inputs(self.uses_tokens, indices, self.context)


def _batches(data: PairData, config: TokenTrainConfig, uses_tokens: bool, context: int, start: int,
             steps_per_epoch: int) -> Iterator[tuple[list[int], dict[str, Any]]]:
    """Training batches from step ``start`` on, in the order fixed by ``(seed, epoch)``."""
    epoch, offset = divmod(start, steps_per_epoch)
    collate = _Collate(data, uses_tokens, context)
    while True:
        plan = loop.epoch_batches(len(data), config.batch_size, config.seed, epoch)[offset:]
        if config.num_workers:
            loader = torch.utils.data.DataLoader(
                _Indices(len(data)), batch_sampler=plan, collate_fn=collate, num_workers=config.num_workers,
                pin_memory=config.device.startswith("cuda"),
            )
            yield from loader
        else:
            yield from (collate(b) for b in plan)
        epoch, offset = epoch + 1, 0


def _clone_vl(vl: Any) -> Any:
    """A copy of a VL model with its own weights (the tokenizer, large and read-only, is shared)."""
    clone = VLModel(
        copy.deepcopy(vl.model),
        vl.tokenizer,
        image_size=vl.image_size,
        mean=vl.mean,
        std=vl.std,
        name=vl.name,
        config=vl.config,
        fingerprint=vl.fingerprint,
    )
    return clone.to(vl.device)


def build_model_for(config: TokenTrainConfig, vl: Any, data: PairData) -> tuple[DualEncoder, dict[str, Any]]:
    """Build the model of ``config`` for ``data`` (a copy of ``vl`` is fine-tuned, not ``vl``).

    Returns:
        ``(model, arch)`` where ``arch`` holds the keyword arguments that rebuild it
        (``config``, ``dims``, ``image_size``, ``patch_size``).
    """
    enc_config = config.encoder_config()
    dims = data.tokens.dims if config.encoder in ("tokens", "tokens-no-attn") else None
    image_size = config.image_size
    if config.encoder == "vit" and image_size is None:
        image_size = int(data.images([0]).shape[-1])
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        model = build_dual_encoder(
            config.encoder, _clone_vl(vl), enc_config, dims=dims, image_size=image_size,
            patch_size=config.patch_size,
        )
    return model, {"config": enc_config, "dims": dims, "image_size": image_size, "patch_size": config.patch_size}


def _optimizer(model: DualEncoder, config: TokenTrainConfig) -> torch.optim.AdamW:
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.trainable_parameters():
        is_text = name.startswith("vl.") and model.kind != "vl-image"
        decay = p.ndim >= 2 and "type_embedding" not in name and "positional_embedding" not in name
        groups.setdefault((is_text, decay), []).append(p)
    text_lr = config.text_lr if config.text_lr is not None else config.lr
    param_groups = [
        {
            "params": ps,
            "weight_decay": config.weight_decay if decay else 0.0,
            "peak_lr": text_lr if is_text else config.lr,
        }
        for (is_text, decay), ps in sorted(groups.items())
    ]
    # foreach: one multi-tensor kernel per group instead of a Python loop over parameters
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=(0.9, 0.98), eps=1e-6, foreach=True)


def load_training_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read ``checkpoint.pt`` safely (``weights_only=True``)."""
    return torch.load(path, map_location="cpu", weights_only=True)


def _check_training_data(config: TokenTrainConfig, data: PairData) -> None:
    """Reject a training set smaller than a batch or with an image without captions."""
    if len(data) < config.batch_size:
        raise ValueError(f"batch_size={config.batch_size} is larger than the training set ({len(data)} pairs)")
    if any(not caps for caps in data.captions):
        bad = next(i for i, caps in enumerate(data.captions) if not caps)
        raise ValueError(f"training image {data.tokens.names[bad]!r} has no caption")


@dataclass
class _CaptionBank:
    """Every distinct training caption tokenised once, and each image's captions as indices into it."""

    tokens: torch.Tensor
    per_image: list[list[int]]

    @classmethod
    def build(cls, model: DualEncoder, data: PairData) -> _CaptionBank:
        captions = sorted({c for caps in data.captions for c in caps})
        caption_id = {c: k for k, c in enumerate(captions)}
        return cls(model.vl.tokenize(captions), [[caption_id[c] for c in caps] for caps in data.captions])

    def draw(self, batch_idx: list[int], seed: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """One caption per image, a function of ``(seed, step)``: the distinct ones and where each image's is."""
        rng = np.random.default_rng([seed, step])
        chosen = np.array([self.per_image[i][rng.integers(len(self.per_image[i]))] for i in batch_idx])
        return np.unique(chosen, return_inverse=True)


def _resume_step(path: Path, config: TokenTrainConfig, model: DualEncoder, optimizer: torch.optim.Optimizer) -> int:
    """Load ``path`` into ``model`` and ``optimizer`` and return its step (0 when there is no checkpoint).

    Raises:
        ValueError: The checkpoint was written under another configuration (``steps`` and ``device`` may change).
    """
    if not path.exists():
        return 0
    ckpt = load_training_checkpoint(path)
    if ckpt["config"] != asdict(config):
        changed = sorted(k for k in ckpt["config"] if ckpt["config"][k] != asdict(config).get(k))
        if [k for k in changed if k not in ("steps", "device")]:
            raise ValueError(f"cannot resume {path}: the configuration changed ({changed})")
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"])


@dataclass
class _Trainer:
    """What one training run works with; :meth:`step` and :meth:`record` are its loop body."""

    config: TokenTrainConfig
    model: DualEncoder
    optimizer: torch.optim.AdamW
    loss_fn: Any
    bank: _CaptionBank
    val_data: PairData | None
    step_no: int = 0
    calls: int = 0
    seen: int = 0
    last_loss: float = float("nan")
    last_eval: dict[str, float] = field(default_factory=dict)

    def step(self, batch_idx: list[int], inputs: dict[str, Any]) -> None:
        """One optimiser step on a batch (captions, dropout and learning rate fixed by ``(seed, step)``)."""
        config, model, step, device = self.config, self.model, self.step_no, torch.device(self.config.device)
        distinct, where = self.bank.draw(batch_idx, config.seed, step)
        loop.set_learning_rate(self.optimizer, step, config.steps, int(config.warmup_fraction * config.steps))
        torch.manual_seed(config.seed * 1_000_003 + step)  # dropout is a function of (seed, step)
        inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
        image_features = model.encode_image(**inputs)
        text_features = model.encode_text(self.bank.tokens[torch.from_numpy(distinct)].to(device))
        text_features = text_features[torch.from_numpy(where).to(device)]
        loss = self.loss_fn(image_features, text_features, model.logit_scale.exp())
        self.last_loss = loop.clip_update(self.optimizer, loss, model.logit_scale, step)
        self.step_no, self.calls, self.seen = step + 1, self.calls + 1, self.seen + len(batch_idx)

    def record(self) -> dict[str, Any]:
        """The metrics record of the step just taken (empty when neither a log nor an evaluation is due)."""
        config, step = self.config, self.step_no
        record: dict[str, Any] = {}
        if loop.due(step, config.log_every, config.steps):
            record = {"step": step, "loss": self.last_loss, "lr": self.optimizer.param_groups[0]["lr"],
                      "logit_scale": float(self.model.logit_scale.detach().exp())}
        if self.val_data is not None and loop.due(step, config.eval_every, config.steps):
            res = retrieval_metrics(self.model, self.val_data, caption_index=config.eval_caption,
                                    max_items=config.max_eval)
            self.last_eval = {k: v for k, v in res.items() if not k.startswith("n_")}
            self.model.train()
            record = {"step": step, "loss": self.last_loss, **record, **self.last_eval}
        return record

    def save_checkpoint(self, path: Path) -> None:
        payload = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step_no,
                   "config": asdict(self.config)}
        loop.save_training_checkpoint(path, payload)


def _run_steps(trainer: _Trainer, data: PairData, run_dir: Path, context: int, *, progress: bool,
               stop_after: int | None, on_log: Callable[[dict[str, Any]], None] | None) -> None:
    """Train from ``trainer.step_no`` to the end (or for ``stop_after`` steps), logging and checkpointing."""
    config = trainer.config
    bar = tqdm(total=config.steps, initial=trainer.step_no, desc=f"train {config.encoder}", unit="step",
               disable=not progress)
    log = loop.open_metrics_log(run_dir / "metrics.jsonl", trainer.step_no)
    try:
        batches = _batches(data, config, trainer.model.uses_tokens, context, trainer.step_no,
                           len(data) // config.batch_size)
        while trainer.step_no < config.steps and (stop_after is None or trainer.calls < stop_after):
            trainer.step(*next(batches))
            record = trainer.record()
            if record:
                loop.write_record(log, record)
                if on_log is not None:
                    on_log(record)
            bar.update(1)
            bar.set_postfix(loss=f"{trainer.last_loss:.3f}")
            if loop.due(trainer.step_no, config.checkpoint_every, config.steps):
                trainer.save_checkpoint(run_dir / "checkpoint.pt")
    finally:
        bar.close()
        log.close()


def _summary(trainer: _Trainer, run_dir: Path, elapsed: float, model_path: Path | None) -> dict[str, Any]:
    """The run's ``train_summary.json``."""
    model = trainer.model
    return {
        "encoder": trainer.config.encoder,
        "steps": trainer.step_no,
        "total_steps": trainer.config.steps,
        "finished": trainer.step_no >= trainer.config.steps,
        "final_loss": trainer.last_loss,
        "samples_per_s": trainer.seen / elapsed if elapsed > 0 else float("nan"),
        "seconds": elapsed,
        "parameters": {
            "image_side": sum(p.numel() for n_, p in model.trainable_parameters() if not n_.startswith("vl.")
                              or model.kind == "vl-image"),
            "trainable": sum(p.numel() for _, p in model.trainable_parameters()),
        },
        "eval": trainer.last_eval,
        "checkpoint": str(run_dir / "checkpoint.pt"),
        "model_path": str(model_path) if model_path is not None else None,
    }


def train_token_model(
    config: TokenTrainConfig,
    train_data: PairData,
    vl: Any,
    run_dir: str | Path,
    *,
    val_data: PairData | None = None,
    vl_spec: str | None = None,
    resume: bool = False,
    progress: bool = True,
    stop_after: int | None = None,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    extra_meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train one image side and the text tower with the CLIP loss.

    Args:
        config: The run.
        train_data: Training pairs (a token cache; images for image encoders).
        vl: The VL model whose text tower is fine-tuned (copied first).
        run_dir: Output folder (``checkpoint.pt``, ``metrics.jsonl``,
            ``model.safetensors``, ``train_summary.json``).
        val_data: Held-out pairs for the periodic evaluations.
        vl_spec: How ``vl`` was loaded (stored to rebuild open_clip models without a config).
        resume: Continue from ``run_dir/checkpoint.pt`` when it exists.
        progress: Show a tqdm bar.
        stop_after: Return after this many steps in this call (tests of resume).
        on_log: Called with every metrics record.
        extra_meta: More metadata for ``model.safetensors`` (e.g. the token cache it was trained on).

    Returns:
        The summary (also written to ``train_summary.json``) with ``model``
        (the trained :class:`DualEncoder`) added.
    """
    from open_clip import ClipLoss  # open_clip is a heavy import, paid only when training

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_training_data(config, train_data)
    model, arch = build_model_for(config, vl, train_data)
    model.to(torch.device(config.device)).train()
    optimizer = _optimizer(model, config)
    trainer = _Trainer(config, model, optimizer, ClipLoss(), _CaptionBank.build(model, train_data), val_data)
    if resume:
        trainer.step_no = _resume_step(run_dir / "checkpoint.pt", config, model, optimizer)
    t0 = time.perf_counter()
    _run_steps(trainer, train_data, run_dir, arch["config"].context_length, progress=progress,
               stop_after=stop_after, on_log=on_log)
    elapsed = time.perf_counter() - t0
    model.eval()
    model_path = None
    if trainer.step_no >= config.steps:
        model_path = run_dir / "model.safetensors"
        save_token_model(
            model_path, model, arch["config"], dims=arch["dims"], image_size=arch["image_size"],
            patch_size=arch["patch_size"], vl_spec=vl_spec,
            extra={"train_config": asdict(config), **(extra_meta or {})},
        )
    summary = _summary(trainer, run_dir, elapsed, model_path)
    atomic_write_json(run_dir / "train_summary.json", summary)
    return {**summary, "model": model}

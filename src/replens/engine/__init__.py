"""The one training loop (Lightning Fabric), checkpoints and resume."""

from replens.engine.train import TrainConfig, load_checkpoint, lr_at, train

__all__ = ["TrainConfig", "load_checkpoint", "lr_at", "train"]

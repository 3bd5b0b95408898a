"""The one training loop (Lightning Fabric), checkpoints and resume."""

from replens.engine.result import TrainResult, train_encoder
from replens.engine.train import TrainConfig, load_checkpoint, train
from replens.schedules import lr_at

__all__ = ["TrainConfig", "TrainResult", "load_checkpoint", "lr_at", "train", "train_encoder"]

"""Training: objectives, the Trainer, checkpoints, metrics and distributed helpers."""

from flowkit.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from flowkit.train.config import TrainConfig
from flowkit.train.loading import load_flow
from flowkit.train.objectives import BitsPerDim, bits_per_dim
from flowkit.train.trainer import NonFiniteError, Trainer, TrainResult

__all__ = [
    "BitsPerDim",
    "CheckpointError",
    "NonFiniteError",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "bits_per_dim",
    "load_checkpoint",
    "load_flow",
    "save_checkpoint",
]

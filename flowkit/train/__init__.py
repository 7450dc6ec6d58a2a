"""Training: objectives, the Trainer and its state, checkpoints and run directories."""

from flowkit.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from flowkit.train.config import ConfigError, TrainConfig
from flowkit.train.objectives import BitsPerDim, NatsPerExample
from flowkit.train.quick import fit
from flowkit.train.rundir import RunExistsError, RunLockedError
from flowkit.train.samples import write_sample_grid
from flowkit.train.state import TrainState
from flowkit.train.trainer import (
    NonFiniteError,
    ResumeMismatchError,
    Trainer,
    TrainingInterrupted,
    TrainResult,
)

__all__ = [
    "BitsPerDim",
    "CheckpointError",
    "ConfigError",
    "NatsPerExample",
    "NonFiniteError",
    "ResumeMismatchError",
    "RunExistsError",
    "RunLockedError",
    "TrainConfig",
    "TrainResult",
    "TrainState",
    "Trainer",
    "TrainingInterrupted",
    "fit",
    "load_checkpoint",
    "save_checkpoint",
    "write_sample_grid",
]

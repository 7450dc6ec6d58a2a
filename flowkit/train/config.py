"""Training hyper-parameters as a frozen dataclass; presets and the command line only fill it in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["OPTIMIZERS", "TrainConfig"]

OPTIMIZERS = ("adamax", "adam")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a flow on images. Defaults follow Glow's official ``train.py`` unless noted.

    Attributes:
        data: Dataset: ``"fashion-mnist-small"`` (bundled), or a path understood by
            ``flowkit.data.load_dataset`` (CIFAR batches, idx files, ImageNet npz, image folder/tar).
        output: Directory for checkpoints, samples, metrics and the bits/dim curve.
        n_bits: Bits per pixel kept from the data (8; 5 for the paper's qualitative models).
        pad: Zero pixels added on each side of every image (2 turns 28x28 MNIST into 32x32, as
            the official data loader does).
        batch_size: Global minibatch size, split across processes (official 64 per GPU; Table 4
            lists 512 over 8 GPUs for CIFAR-10).
        test_batch_size: Batch size for evaluation (does not change the result).
        init_batch_size: Images for data-dependent initialisation (official ``n_batch_init`` 256).
        epochs: Passes over the training set.
        max_steps: Stop after this many optimizer steps (None: run all epochs).
        optimizer: ``"adamax"`` (official code default) or ``"adam"`` (the paper's text).
        lr: Base learning rate (0.001 in the paper and the official code).
        beta1: First-moment decay (0.9).
        polyak_epochs: The second-moment decay and the weight average's decay are
            ``1 - 1 / (steps_per_epoch * polyak_epochs)``, as the official code sets ``beta2``.
        warmup_epochs: Linear learning-rate warm-up length in epochs (official 10).
        weight_decay: Decoupled weight decay (official default: off).
        grad_clip: Clip the global gradient norm to this value (None: no clipping, as official).
        ema: Evaluate and sample with the Polyak (exponential moving) average of the weights.
        eval_every: Evaluate test bits/dim every this many epochs.
        sample_every: Write sample grids every this many epochs.
        temperatures: Temperatures of the sample grids.
        num_samples: Images per sample grid.
        checkpoint_every: Also checkpoint every this many steps (None: at epoch ends only).
        log_every: Log training metrics every this many steps.
        max_nonfinite: Stop after this many consecutive steps with a non-finite loss or gradient.
        num_train: Use only the first this many training images (None: all).
        num_test: Use only the first this many test images (None: all).
        seed: Seed of data order, dequantisation noise and initialisation batch.
        device: ``"auto"`` (the process's GPU under torchrun, else the CPU), ``"cpu"`` or ``"cuda"``.
        tensorboard: Also write TensorBoard event files.
        progress: Show tqdm progress bars.
    """

    data: str = "fashion-mnist-small"
    output: str = "runs/glow"
    n_bits: int = 8
    pad: int = 0
    batch_size: int = 64
    test_batch_size: int = 256
    init_batch_size: int = 256
    epochs: int = 10
    max_steps: int | None = None
    optimizer: str = "adamax"
    lr: float = 1e-3
    beta1: float = 0.9
    polyak_epochs: float = 1.0
    warmup_epochs: float = 10.0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    ema: bool = True
    eval_every: int = 1
    sample_every: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
    num_samples: int = 64
    checkpoint_every: int | None = None
    log_every: int = 10
    max_nonfinite: int = 10
    num_train: int | None = None
    num_test: int | None = None
    seed: int = 0
    device: str = "auto"
    tensorboard: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(
                f"TrainConfig expects optimizer in {OPTIMIZERS}, got {self.optimizer!r}"
            )
        if not 1 <= self.n_bits <= 8:
            raise ValueError(f"TrainConfig expects 1 <= n_bits <= 8, got {self.n_bits}")
        for name in ("batch_size", "test_batch_size", "init_batch_size", "epochs", "log_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig expects {name} >= 1, got {getattr(self, name)}")
        if self.max_nonfinite < 1:
            raise ValueError(f"TrainConfig expects max_nonfinite >= 1, got {self.max_nonfinite}")
        object.__setattr__(self, "temperatures", tuple(float(t) for t in self.temperatures))

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for checkpoints and metrics)."""
        return dataclasses.asdict(self)

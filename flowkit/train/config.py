"""Training hyper-parameters as a frozen dataclass; presets and the command line only fill it in."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flowkit._checks import check_float, check_int
from flowkit.errors import FlowkitError

__all__ = [
    "LR_DECAYS",
    "OPTIMIZERS",
    "PRECISIONS",
    "RESUMABLE_SETTINGS",
    "ConfigError",
    "TrainConfig",
]

OPTIMIZERS = ("adamax", "adam", "adamw")

# The dtype the model's networks compute in under autocast (see TrainConfig.precision).
PRECISIONS = ("float32", "bfloat16", "float16")

# What the learning rate does after its warm-up (see flowkit.train.schedule).
LR_DECAYS = ("constant", "cosine", "linear")

# Glow's official warm-up, in epochs, when neither warmup_epochs nor warmup_steps is given.
DEFAULT_WARMUP_EPOCHS = 10.0

# Settings a resumed run may change: they steer how long and how visibly the run goes on, not what
# it computes step by step. Everything else (data, model, batch size, seed, optimizer, schedule)
# must match the checkpoint, or the resumed run would not be the run it claims to continue.
# The learning rate may change: the schedule is recomputed from the new peak at the resumed step.
# Under a decaying schedule, epochs and max_steps may change only where the last step (the end of
# the decay) stays the same; the trainer checks that.
RESUMABLE_SETTINGS = frozenset(
    {
        "output",
        "lr",
        "epochs",
        "max_steps",
        "max_minutes",
        "grad_clip",
        "eval_every",
        "sample_every",
        "temperatures",
        "num_samples",
        "checkpoint_every",
        "checkpoint_seconds",
        "log_every",
        "max_nonfinite",
        "num_test",
        "patience",
        "test_batch_size",
        "device",
        "tensorboard",
        "progress",
        "compile",
        "grad_accumulation",
    }
)


class ConfigError(FlowkitError, ValueError):
    """A setting has the wrong type or a value outside its allowed range."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train a flow. Defaults follow Glow's official ``train.py`` unless noted.

    Attributes:
        data: Dataset: ``"fashion-mnist-small"`` (bundled), or a path understood by
            ``flowkit.data.load_dataset`` (CIFAR batches, idx files, ImageNet npz, image
            folder/tar).
        output: Directory for checkpoints, samples, metrics and the learning curve.
        pad: Zero pixels added on each side of every image (2 turns 28x28 MNIST into 32x32, as
            the official data loader does).
        batch_size: Global minibatch size, split across processes (official 64 per GPU; Table 4
            lists 512 over 8 GPUs for CIFAR-10).
        test_batch_size: Batch size for evaluation (does not change the result).
        init_batch_size: Examples for data-dependent initialisation (official ``n_batch_init`` 256).
        epochs: Passes over the training set.
        max_steps: Stop after this many optimizer steps (None: run all epochs).
        max_minutes: Stop after this many minutes of wall-clock time, counted over resumes, then
            evaluate and checkpoint as at the end of an epoch (None: no budget).
        optimizer: ``"adamax"`` (official code default), ``"adam"`` (the paper's text) or
            ``"adamw"`` (Adam with decoupled weight decay, Loshchilov & Hutter 2019).
        lr: Peak learning rate (0.001 in the paper and the official code), reached at the end of
            the warm-up. A resumed run may change it: the schedule is then recomputed from the
            new peak at the resumed step (no schedule state is kept in checkpoints).
        beta1: First-moment decay (0.9).
        beta2: Second-moment decay; None takes ``1 - 1 / (steps_per_epoch * polyak_epochs)``,
            as the official code sets it (TarFlow's official run: 0.95).
        polyak_epochs: The weight average's decay (and ``beta2`` unless given) is
            ``1 - 1 / (steps_per_epoch * polyak_epochs)``, as the official code sets ``beta2``.
        warmup_epochs: Linear learning-rate warm-up from 0, in epochs (official 10; 0 for none).
            None (the default): 10 epochs, or none when ``warmup_steps`` is given.
        warmup_steps: The warm-up in optimizer steps instead; give ``warmup_epochs`` or
            ``warmup_steps``, not both (None: use ``warmup_epochs``).
        lr_decay: The learning rate after the warm-up: ``"constant"`` (default), ``"cosine"`` or
            ``"linear"`` decay from the peak at the end of the warm-up to
            ``min_lr_ratio * lr`` at the run's last step. The last step is ``max_steps`` or
            ``epochs`` times the steps per epoch, whichever comes first; a ``max_minutes``
            budget is not known in steps and does not shorten the decay. See
            :class:`flowkit.train.schedule.LearningRateSchedule`.
        min_lr_ratio: The decay's floor as a fraction of ``lr`` (0.0).
        weight_decay: Decoupled weight decay: each step shrinks the weights by
            ``lr * weight_decay`` apart from the gradient (AdamW). Only with
            ``optimizer="adamw"``: Adam's and Adamax's ``weight_decay`` is an L2 penalty in the
            gradient, so a non-zero value with them is refused (official Glow: off).
        grad_clip: Clip the global gradient norm to this value (None: no clipping, as official).
        ema: Evaluate and sample with the Polyak (exponential moving) average of the weights.
        ema_warmup: Warm the average's decay up as ``min(decay, (1 + n) / (10 + n))`` after ``n``
            updates (the schedule of TensorFlow's ``ExponentialMovingAverage(num_updates=)``), so
            the average does not lag behind in short runs; False keeps the constant decay of the
            official code.
        augment_shift: Random translations of the training images by up to this fraction of
            their height and width, bilinear with replicated edges, as the official loader's
            ``--dal 1`` (0.1 for the official CIFAR-10 and MNIST runs; 0: off). Never applied
            to evaluation.
        augment_flip: Also mirror training images left to right at random (off officially).
        noise_std: Standard deviation of Gaussian noise added to the (dequantised) training
            inputs, in the model's units (images span ``[-1/2, 1/2]``); TarFlow's training noise.
            Evaluation sees no such noise. 0: off.
        eval_every: Evaluate on the test set every this many epochs.
        sample_every: Write sample grids every this many epochs.
        temperatures: Temperatures of the sample grids.
        num_samples: Images per sample grid.
        checkpoint_every: Also checkpoint every this many steps (None: at epoch ends only).
        checkpoint_seconds: Checkpoint at an epoch end only if this many seconds passed since
            the last checkpoint (the first epoch end, Ctrl-C and the end of the run always
            write one), so that tiny epochs do not rewrite the file every few steps; 0: at
            every epoch end.
        log_every: Log training metrics every this many steps.
        max_nonfinite: Stop after this many consecutive steps with a non-finite loss or gradient.
        num_train: Use only the first this many training examples (None: all).
        num_test: Use only the first this many test examples (None: all).
        val_fraction: Share of the training examples held out as a validation set (seeded by
            ``seed``), evaluated at every evaluation; the weights with the best validation value
            are kept in the checkpoint (0: no validation set, unless validation data is given).
        patience: Stop when this many epochs passed without a better validation value (early
            stopping; needs a validation set). None: run every epoch.
        seed: Seed of data order, dequantisation noise, initialisation batch and validation split.
        device: ``"auto"`` (the process's GPU under torchrun, else the CPU), ``"cpu"``, ``"cuda"``
            or ``"cuda:N"``.
        precision: ``"float32"`` (default), ``"bfloat16"`` or ``"float16"``: the model runs
            under ``torch.autocast`` in that dtype, so its networks (convolutions, linear layers,
            attention) compute in half precision while the weights, the optimizer and the weight
            average stay float32. The flow itself stays float32: every bijector returns its
            output and log-determinant in its input's dtype (invertible convolutions and linear
            maps run outside autocast, conditioner outputs are cast back), so log-densities and
            the loss are accumulated in float32. ``"float16"`` scales the loss with
            ``torch.amp.GradScaler`` (a step whose scaled gradients overflow is skipped and the
            scale lowered, as torch does; such steps are not counted as non-finite). Evaluation,
            sampling and the saved model are float32.
        compile: Run the training step's model through ``torch.compile`` (the first steps are
            slow while it compiles; the checkpoint holds the uncompiled model's weights).
        grad_accumulation: Split each batch into this many micro-batches, run one after the
            other, and step once on their averaged gradients: the same update as the whole
            batch (up to rounding), with the activation memory of one micro-batch.
            ``batch_size`` must be divisible by it times the number of processes.
        tensorboard: Also write TensorBoard event files.
        progress: Show tqdm progress bars.
    """

    data: str = "fashion-mnist-small"
    output: str = "runs/glow"
    pad: int = 0
    batch_size: int = 64
    test_batch_size: int = 256
    init_batch_size: int = 256
    epochs: int = 10
    max_steps: int | None = None
    max_minutes: float | None = None
    optimizer: str = "adamax"
    lr: float = 1e-3
    beta1: float = 0.9
    beta2: float | None = None
    polyak_epochs: float = 1.0
    warmup_epochs: float | None = None
    warmup_steps: int | None = None
    lr_decay: str = "constant"
    min_lr_ratio: float = 0.0
    weight_decay: float = 0.0
    grad_clip: float | None = None
    ema: bool = True
    ema_warmup: bool = True
    augment_shift: float = 0.0
    augment_flip: bool = False
    noise_std: float = 0.0
    eval_every: int = 1
    sample_every: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.5, 0.7, 0.8, 0.9, 1.0)
    num_samples: int = 64
    checkpoint_every: int | None = None
    checkpoint_seconds: float = 30.0
    log_every: int = 10
    max_nonfinite: int = 10
    num_train: int | None = None
    num_test: int | None = None
    val_fraction: float = 0.0
    patience: int | None = None
    seed: int = 0
    device: str = "auto"
    tensorboard: bool = False
    progress: bool = True
    precision: str = "float32"
    compile: bool = False
    grad_accumulation: int = 1

    def __post_init__(self) -> None:
        try:
            self._check()
        except (TypeError, ValueError) as error:
            raise ConfigError(str(error)) from None

    def _check(self) -> None:
        self._check_choices()
        self._check_numbers()
        for name in ("ema", "ema_warmup", "augment_flip", "tensorboard", "progress", "compile"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"TrainConfig expects {name} as true or false, got {getattr(self, name)!r}"
                )
        object.__setattr__(self, "temperatures", _temperatures(self.temperatures))
        self._check_optimizer()

    def _check_choices(self) -> None:
        """The settings that name one of a few options."""
        owner = "TrainConfig"
        for name in ("data", "output", "optimizer", "lr_decay", "device", "precision"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise ConfigError(f"{owner} expects {name} as a non-empty string, got {value!r}")
        for name, choices in (
            ("optimizer", OPTIMIZERS),
            ("lr_decay", LR_DECAYS),
            ("precision", PRECISIONS),
        ):
            if getattr(self, name) not in choices:
                raise ConfigError(
                    f"{owner} expects {name} in {choices}, got {getattr(self, name)!r}"
                )
        if self.device not in ("auto", "cpu", "cuda") and not _is_cuda_index(self.device):
            raise ConfigError(
                f"{owner} expects device 'auto', 'cpu', 'cuda' or 'cuda:N', got {self.device!r}"
            )

    def _check_numbers(self) -> None:
        """Counts, sizes, rates and fractions, each in its range."""
        owner = "TrainConfig"
        check_int(owner, "pad", self.pad, 0)
        check_int(owner, "seed", self.seed, 0)
        for name in (
            "batch_size",
            "test_batch_size",
            "init_batch_size",
            "epochs",
            "eval_every",
            "sample_every",
            "num_samples",
            "log_every",
            "max_nonfinite",
            "grad_accumulation",
        ):
            check_int(owner, name, getattr(self, name), 1)
        for name in ("max_steps", "checkpoint_every", "num_train", "num_test", "patience"):
            check_int(owner, name, getattr(self, name), 1, optional=True)
        check_int(owner, "warmup_steps", self.warmup_steps, 0, optional=True)
        check_float(owner, "lr", self.lr, 0.0, exclusive_minimum=True)
        check_float(owner, "beta1", self.beta1, 0.0, 1.0, exclusive_maximum=True)
        check_float(owner, "polyak_epochs", self.polyak_epochs, 0.0, exclusive_minimum=True)
        check_float(owner, "beta2", self.beta2, 0.0, 1.0, exclusive_maximum=True, optional=True)
        check_float(owner, "warmup_epochs", self.warmup_epochs, 0.0, optional=True)
        check_float(owner, "min_lr_ratio", self.min_lr_ratio, 0.0, 1.0)
        check_float(owner, "weight_decay", self.weight_decay, 0.0)
        check_float(owner, "augment_shift", self.augment_shift, 0.0, 1.0, exclusive_maximum=True)
        check_float(owner, "noise_std", self.noise_std, 0.0)
        check_float(owner, "checkpoint_seconds", self.checkpoint_seconds, 0.0)
        check_float(owner, "val_fraction", self.val_fraction, 0.0, 1.0, exclusive_maximum=True)
        for name in ("grad_clip", "max_minutes"):
            check_float(
                owner, name, getattr(self, name), 0.0, exclusive_minimum=True, optional=True
            )

    def _check_optimizer(self) -> None:
        """Settings of the optimizer and schedule that only make sense together."""
        if self.weight_decay and self.optimizer != "adamw":
            raise ConfigError(
                f"TrainConfig: weight_decay={self.weight_decay} with optimizer "
                f"{self.optimizer!r} would be an L2 penalty in the gradient, not decoupled "
                "weight decay; use optimizer 'adamw' (--optimizer adamw) or weight_decay 0"
            )
        if self.warmup_steps and self.warmup_epochs:
            raise ConfigError(
                f"TrainConfig expects the warm-up as warmup_epochs or warmup_steps, got both "
                f"(warmup_epochs={self.warmup_epochs}, warmup_steps={self.warmup_steps}); "
                "leave one out or set it to 0"
            )
        if self.warmup_epochs is None:
            # Unset: the official 10 epochs, unless the warm-up is given in steps.
            epochs = DEFAULT_WARMUP_EPOCHS if self.warmup_steps is None else 0.0
            object.__setattr__(self, "warmup_epochs", epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict view (for checkpoints, config.json and metrics)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Rebuild a config from :meth:`to_dict`'s output, naming unknown or bad entries."""
        if not isinstance(values, Mapping):
            raise ConfigError(
                f"TrainConfig expects a mapping of settings, got {type(values).__name__}"
            )
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown train setting(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**values)
        except TypeError as error:  # a value of the wrong kind deep in a comparison
            raise ConfigError(f"bad train settings: {error}") from None

    def differences(self, other: TrainConfig) -> dict[str, tuple[Any, Any]]:
        """Settings whose values differ from ``other``'s, as ``name: (other's, self's)``."""
        mine, theirs = self.to_dict(), other.to_dict()
        return {name: (theirs[name], mine[name]) for name in mine if mine[name] != theirs[name]}


def _is_cuda_index(device: str) -> bool:
    prefix, _, index = device.partition(":")
    return prefix == "cuda" and index.isdigit()


def _temperatures(values: Any) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(
            "TrainConfig expects temperatures as a list of numbers (e.g. [0.7, 1.0]), got "
            f"{values!r}"
        )
    result = []
    for value in values:
        result.append(check_float("TrainConfig", "each temperature", value, 0.0))
    if not result:
        raise ConfigError("TrainConfig expects at least one temperature, got an empty list")
    return tuple(result)

"""Training data views: batches, dequantisation, sharding over processes, and evaluation."""

from __future__ import annotations

from collections.abc import Sized
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from flowkit.distributions import Dequantized, Flow
from flowkit.distributions.standardized import StandardizedFlow
from flowkit.train.distributed import Process, all_reduce_sum

__all__ = [
    "ImageTrainingData",
    "TrainingData",
    "VectorTrainingData",
    "as_training_data",
    "image_model",
    "load_image_splits",
]

# Evaluation noise is drawn per block of this many images from a seed of its own, so the result does
# not depend on the batch size or the number of processes.
EVAL_NOISE_BLOCK = 256
EVAL_SEED = 1234
# Values per tensor that a training set's fingerprint hashes (a resumed run must see the same data).
FINGERPRINT_VALUES = 1 << 20


class TrainingData:
    """Common interface of the training data views (see :func:`as_training_data`)."""

    is_image = False
    conditional = False
    # Gaussian noise added to training batches only (TarFlow's training noise); see TrainConfig.
    noise_std = 0.0
    # Probability of replacing a training label by the null class -1 (Flow.training_label_dropout).
    label_dropout = 0.0

    def __len__(self) -> int:
        raise NotImplementedError

    def _training_noise(self, shape: torch.Size, generator: torch.Generator) -> Tensor | None:
        """Gaussian training noise for a whole global batch from ``generator`` (None when off)."""
        if self.noise_std <= 0:
            return None
        return self.noise_std * torch.randn(shape, generator=generator)

    def check_against(self, flow: Flow | Dequantized, what: str) -> None:
        """Raise a ValueError if the examples do not fit the flow's event shape or context."""
        raise NotImplementedError

    def initialize(self, model: nn.Module, size: int, seed: int, device: torch.device) -> None:
        """Data-dependent initialisation of ``model`` from a random batch of ``size`` examples.

        The batch is the same on every process (and :func:`flowkit.initialize` broadcasts rank
        0's result under ``torch.distributed``).
        """
        raise NotImplementedError

    def batch(self, index: Tensor, generator: torch.Generator, process: Process) -> tuple:
        """This process's shard of the global batch ``index``: the model's positional inputs."""
        raise NotImplementedError

    def sample_context(self, count: int, device: torch.device) -> Tensor | None:
        """The context of ``count`` samples for the sample grids, or None."""
        raise NotImplementedError

    def evaluate(
        self,
        flow: Flow | Dequantized,
        batch_size: int,
        process: Process,
        *,
        dtype: torch.dtype | None = None,
        num_samples: int = 1,
    ) -> float:
        """The test objective over the whole set, summed over processes in float64.

        ``num_samples`` > 1 asks images for the importance-weighted bound over that many
        dequantisation draws.
        """
        raise NotImplementedError

    def fingerprint(self) -> str:
        """A digest of the examples (and labels or context), to tell a resumed run's data apart.

        Shapes, dtypes and evenly spaced values of each tensor (fewer than twice
        ``FINGERPRINT_VALUES``) are hashed, so a large dataset costs neither a copy nor a pass over
        all of it at start-up.
        """
        import hashlib

        digest = hashlib.sha1()
        for tensor in self._tensors():
            digest.update(str((tuple(tensor.shape), str(tensor.dtype))).encode())
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // FINGERPRINT_VALUES)
            digest.update(flat[::step].cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def _tensors(self) -> list[Tensor]:
        raise NotImplementedError

    def take(self, indices: Tensor) -> TrainingData:
        """The examples at ``indices`` as a new view of the same kind."""
        raise NotImplementedError

    def _init_index(self, size: int, seed: int) -> tuple[Tensor, torch.Generator]:
        # The generator goes on to draw the batch's dequantisation noise, where there is any.
        generator = torch.Generator().manual_seed(seed + 2)
        return torch.randperm(len(self), generator=generator)[: min(size, len(self))], generator

    def _eval_ranges(self, batch_size: int, process: Process) -> list[tuple[int, int]]:
        """This process's ``(start, stop)`` slices of the set, ``batch_size`` examples each."""
        starts = list(range(0, len(self), batch_size))[process.rank :: process.world_size]
        return [(start, min(start + batch_size, len(self))) for start in starts]

    def epoch_batches(self, epoch: int, batch_size: int, seed: int) -> Tensor:
        """Global batches of indices for ``epoch``.

        A seeded permutation of the set, cut into rows of ``batch_size``; the last partial batch
        is dropped.
        """
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(self), generator=generator)
        count = len(self) // batch_size
        return order[: count * batch_size].view(count, batch_size)

    def _shard(self, value: Tensor, process: Process) -> Tensor:
        return value[process.rank :: process.world_size] if process.distributed else value


class ImageTrainingData(TrainingData):
    """uint8 images ``(N, C, H, W)`` with optional labels, as the image model's integers.

    The model (a :class:`~flowkit.distributions.Dequantized`, given to :meth:`check_against`)
    says how many bits the images keep and draws their dequantisation noise.
    """

    is_image = True
    # Training-time augmentation (see TrainConfig.augment_shift / augment_flip); never evaluation.
    augment_shift = 0.0
    augment_flip = False
    model: Dequantized

    def __init__(self, images: Tensor, labels: Tensor | None) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return self.images.shape[0]

    def _tensors(self) -> list[Tensor]:
        return [self.images] + ([] if self.labels is None else [self.labels])

    def take(self, indices: Tensor) -> ImageTrainingData:
        """The images (and labels) at ``indices``, as a new view with the same settings."""
        labels = None if self.labels is None else self.labels[indices]
        return ImageTrainingData(self.images[indices], labels)

    def check_against(self, flow: Flow | Dequantized, what: str) -> None:
        """Raise a ValueError if the images or labels do not fit the flow's shape or classes.

        The view then reads the images as the model's integers (a plain flow: 8-bit uniform
        dequantisation).
        """
        self.model = image_model(flow)
        self.model.levels(self.images[:0])  # images the model's bits can describe
        shape = tuple(self.images.shape[1:])
        if shape != tuple(flow.event_shape):
            raise ValueError(
                f"the {what} images have shape {shape} (C, H, W) but the model expects "
                f"{tuple(flow.event_shape)}; choose a preset or input_shape that matches the data"
            )
        self.conditional = flow.context_shape is not None
        if not self.conditional:
            return
        inner = flow.flow if isinstance(flow, Dequantized) else flow
        self.label_dropout = inner.training_label_dropout or 0.0
        if self.labels is None:
            raise ValueError(f"the model is class-conditional but the {what} data has no labels")
        num_classes = flow.num_classes
        if num_classes is not None and int(self.labels.max()) >= num_classes:
            raise ValueError(
                f"the {what} labels go up to {int(self.labels.max())} but the model has "
                f"{num_classes} classes"
            )

    def _inputs(
        self, index: Tensor, generator: torch.Generator, *, augment: bool = False
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
        """Reduced integer images, their uniform noise, labels, and training noise (or None).

        Drawn from ``generator`` in this order: augmentation, dequantisation noise, training
        noise, label dropout (all but the second only for training batches, and only when
        switched on).
        """
        from flowkit.data.augment import augment_images

        images = self.images[index]
        if augment:
            images = augment_images(
                images, shift=self.augment_shift, flip=self.augment_flip, generator=generator
            )
        levels = self.model.levels(images)
        noise = self.model.noise(levels.shape, generator=generator)
        perturbation = self._training_noise(levels.shape, generator) if augment else None
        labels = self._labels(index)
        if augment and labels is not None and self.label_dropout > 0:
            # Once per example, for the whole model: the official classifier-free training.
            dropped = torch.rand(labels.shape, generator=generator) < self.label_dropout
            labels = labels.long().masked_fill(dropped, -1)
        return levels, noise, labels, perturbation

    def _labels(self, index: Tensor | slice) -> Tensor | None:
        """The labels at ``index`` when the model is class-conditional, else None."""
        # check_against has made sure that a class-conditional set has labels.
        if not self.conditional or self.labels is None:
            return None
        return self.labels[index]

    def initialize(self, model: nn.Module, size: int, seed: int, device: torch.device) -> None:
        """Initialise the image model (its flow and any dequantizer) from dequantised images."""
        from flowkit.initialization import initialize

        assert isinstance(model, Dequantized), "the Trainer passes the Dequantized image model"
        index, generator = self._init_index(size, seed)
        levels, noise, labels, _ = self._inputs(index, generator)
        initialize(
            _WithNoise(model, noise.to(device)),
            levels.to(device),
            None if labels is None else labels.to(device),
        )

    def batch(self, index: Tensor, generator: torch.Generator, process: Process) -> tuple:
        """This process's shard of the global batch: ``(levels, noise, labels, training noise)``.

        Augmentation, dequantisation noise and training noise are drawn for the whole batch, so
        they do not depend on the number of processes; absent entries are None.
        """
        inputs = self._inputs(index, generator, augment=True)
        return tuple(
            None if t is None else self._shard(t, process).to(process.device, non_blocking=True)
            for t in inputs
        )

    def sample_context(self, count: int, device: torch.device) -> Tensor | None:
        """Labels for a class-conditional sample grid: classes in turn, row by row."""
        if not self.conditional or self.labels is None:
            return None
        num_classes = int(self.labels.max()) + 1
        return (torch.arange(count) % num_classes).to(device)

    def _eval_noise(self, model: Dequantized, start: int, stop: int, draws: int) -> list[Tensor]:
        """``draws`` fixed noise tensors for images ``start:stop``, independent of batching."""
        pieces: list[list[Tensor]] = [[] for _ in range(draws)]
        first, last = start // EVAL_NOISE_BLOCK, (stop - 1) // EVAL_NOISE_BLOCK
        shape = tuple(self.images.shape[1:])
        for block in range(first, last + 1):
            lo, hi = block * EVAL_NOISE_BLOCK, min((block + 1) * EVAL_NOISE_BLOCK, len(self))
            generator = torch.Generator().manual_seed(EVAL_SEED + block)
            for draw in range(draws):
                noise = model.noise((hi - lo, *shape), generator=generator)
                pieces[draw].append(noise[max(start, lo) - lo : min(stop, hi) - lo])
        return [torch.cat(draw) for draw in pieces]

    @torch.no_grad()
    def evaluate(
        self,
        flow: Flow | Dequantized,
        batch_size: int,
        process: Process,
        *,
        dtype: torch.dtype | None = None,
        num_samples: int = 1,
    ) -> float:
        """Mean bits/dim over the set (fixed noise), summed over processes in float64.

        The model's :meth:`~flowkit.distributions.Dequantized.log_prob` bound on the discrete
        probability (a plain flow: the likelihood of the model this view was checked against,
        around it); with ``num_samples`` > 1 the importance-weighted bound. ``dtype`` is the
        model's own (the noise follows it).
        """
        model = image_model(flow, self.model)
        total = torch.zeros((), dtype=torch.float64, device=process.device)
        for start, stop in self._eval_ranges(batch_size, process):
            levels = model.levels(self.images[start:stop]).to(process.device)
            labels = self._labels(slice(start, stop))
            if labels is not None:
                labels = labels.to(process.device)
            draws = self._eval_noise(model, start, stop, num_samples)
            noise = [draw.to(process.device) for draw in draws]
            log_prob = model.log_prob(levels, labels, noise=noise).double()
            total += model.to_bits_per_dim(log_prob).sum()
        return float(all_reduce_sum(total, process)) / len(self)


class _WithNoise(nn.Module):
    """A Dequantized model with its dequantisation noise fixed: ``forward(levels, context)``."""

    def __init__(self, model: Dequantized, noise: Tensor) -> None:
        super().__init__()
        self.model = model
        self.noise = noise

    def forward(self, levels: Tensor, context: Tensor | None = None) -> Tensor:
        return self.model.latent_and_log_prob(levels, context, noise=self.noise)[1]


def image_model(flow: Flow | Dequantized, like: Dequantized | None = None) -> Dequantized:
    """The discrete image model of ``flow``: itself if it is a Dequantized.

    A plain flow gets ``like``'s discrete likelihood around it (the weight average of a trained
    model), or 8-bit uniform dequantisation without ``like``.
    """
    if isinstance(flow, Dequantized):
        return flow
    return Dequantized(flow) if like is None else like.with_flow(flow)


class VectorTrainingData(TrainingData):
    """Float examples ``(N, *event_shape)`` with an optional context ``(N, *context_shape)``."""

    def __init__(self, values: Tensor, context: Tensor | None) -> None:
        self.values = values
        self.context = context

    def __len__(self) -> int:
        return self.values.shape[0]

    def _tensors(self) -> list[Tensor]:
        return [self.values] + ([] if self.context is None else [self.context])

    def take(self, indices: Tensor) -> VectorTrainingData:
        """The examples (and context) at ``indices``, as a new view."""
        context = None if self.context is None else self.context[indices]
        return VectorTrainingData(self.values[indices], context)

    def check_against(self, flow: Flow | Dequantized, what: str) -> None:
        """Raise a ValueError if the examples do not fit the flow's event shape or context."""
        if tuple(self.values.shape[1:]) != tuple(flow.event_shape):
            raise ValueError(
                f"the {what} examples have event shape {tuple(self.values.shape[1:])} but the "
                f"model expects {tuple(flow.event_shape)}"
            )
        self.conditional = flow.context_shape is not None
        if self.conditional and self.context is None:
            raise ValueError(f"the model is conditional but the {what} data has no context")
        if not self.conditional and self.context is not None:
            raise ValueError(
                f"the {what} data has a context but the model is unconditional; build the flow "
                "with context features, or pass the values alone"
            )
        # Tables and numpy arrays come as float64; the examples take the flow's precision, as
        # images do when they are scaled. A standardised flow takes float64 itself: it scales in
        # float64 before its own precision applies.
        dtype = next((p.dtype for p in flow.parameters() if p.is_floating_point()), None)
        if isinstance(flow, StandardizedFlow):
            dtype = torch.float64
        if dtype is not None:
            self.values = self.values.to(dtype)
            if self.context is not None and self.context.is_floating_point():
                self.context = self.context.to(dtype)

    def _inputs(self, index: Tensor) -> tuple:
        # check_against has made sure that a conditional set has a context.
        if self.conditional and self.context is not None:
            return self.values[index], self.context[index]
        return (self.values[index],)

    def initialize(self, model: nn.Module, size: int, seed: int, device: torch.device) -> None:
        """Initialise the flow from a random batch of examples (and context)."""
        from flowkit.initialization import initialize

        index, _ = self._init_index(size, seed)
        x, *context = self._inputs(index)
        initialize(model, x.to(device), context[0].to(device) if context else None)

    def batch(self, index: Tensor, generator: torch.Generator, process: Process) -> tuple:
        """This process's shard of the global batch ``index``: the examples and any context."""
        x, *context = self._inputs(index)
        noise = self._training_noise(x.shape, generator)
        inputs = (x if noise is None else x + noise.to(x.dtype), *context)
        return tuple(self._shard(t, process).to(process.device) for t in inputs)

    def sample_context(self, count: int, device: torch.device) -> Tensor | None:
        """None: vector data has no sample grids, so none needs a context."""
        return None

    @torch.no_grad()
    def evaluate(
        self,
        flow: Flow | Dequantized,
        batch_size: int,
        process: Process,
        *,
        dtype: torch.dtype | None = None,
        num_samples: int = 1,
    ) -> float:
        """Mean negative log-likelihood in nats, summed over processes in float64."""
        if num_samples != 1 or not isinstance(flow, Flow):
            raise ValueError("vector data is evaluated by a Flow with one sample per example")
        total = torch.zeros((), dtype=torch.float64, device=process.device)
        for start, stop in self._eval_ranges(batch_size, process):
            index = torch.arange(start, stop)
            inputs = [t.to(process.device) for t in self._inputs(index)]
            if dtype is not None and not isinstance(flow, StandardizedFlow):
                inputs[0] = inputs[0].to(dtype)
            total += (-flow.log_prob(*inputs)).double().sum()
        return float(all_reduce_sum(total, process)) / len(self)


def as_training_data(data: Any, limit: int | None = None) -> TrainingData:
    """Wrap the data the Trainer accepts in the view it trains on.

    Accepted: :class:`~flowkit.data.ImageData` (uint8 images and optional labels), a float tensor
    or array of vectors, a ``(values, context)`` pair (the context of a conditional flow; integer
    labels with images), or a ``torch.utils.data.Dataset``/``DataLoader`` whose items are
    examples or ``(example, context)`` pairs. A Dataset is read once into memory, so that every
    epoch's order, the evaluation noise and a resumed run are exactly reproducible.
    """
    if isinstance(data, TrainingData):
        return data
    data = _materialise(data)
    if hasattr(data, "images") and hasattr(data, "labels"):
        return _image_view(data.images, data.labels, limit)
    context = None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data, context = data
        if isinstance(data, Tensor) and data.dtype == torch.uint8:
            labels = None if context is None else torch.as_tensor(context).long()
            return _tensor_images(data, labels, limit)
    if isinstance(data, Tensor) and data.dtype == torch.uint8 and data.dim() == 4:
        return _tensor_images(data, None, limit)
    return _vector_view(data, context, limit)


def _tensor_images(images: Tensor, labels: Tensor | None, limit: int | None) -> ImageTrainingData:
    from flowkit.data import ImageData  # checks the images' shape and the labels' length

    data = ImageData(images, labels, "tensor")
    return _image_view(data.images, data.labels, limit)


def _image_view(images: Tensor, labels: Tensor | None, limit: int | None) -> ImageTrainingData:
    if limit is not None:
        images, labels = images[:limit], None if labels is None else labels[:limit]
    if images.dtype != torch.uint8:
        raise TypeError(f"image data must be uint8, got {images.dtype}")
    return ImageTrainingData(images, labels)


def _vector_view(data: Any, context: Any, limit: int | None) -> VectorTrainingData:
    values = torch.as_tensor(np.asarray(data) if not isinstance(data, Tensor) else data)
    if not values.is_floating_point():
        raise TypeError(
            f"vector training data must be floating point, got {values.dtype}; images must come as "
            "flowkit.data.ImageData"
        )
    if context is not None:
        context = torch.as_tensor(context)
        if context.shape[0] != values.shape[0]:
            raise ValueError(
                f"context has {context.shape[0]} rows but the data has {values.shape[0]}"
            )
    if limit is not None:
        values = values[:limit]
        context = None if context is None else context[:limit]
    return VectorTrainingData(values, context)


def _materialise(data: Any) -> Any:
    """A Dataset or DataLoader as stacked tensors ``values`` or ``(values, context)``."""
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        data = data.dataset
    if not isinstance(data, Dataset):
        return data
    if not isinstance(data, Sized):
        raise TypeError("the Trainer needs a Dataset with a length (a map-style Dataset)")
    count = len(data)
    if count == 0:
        raise ValueError("the Dataset is empty")
    items = [data[index] for index in range(count)]
    if isinstance(items[0], (tuple, list)):
        if len(items[0]) != 2:
            raise ValueError(
                f"Dataset items must be an example or an (example, context) pair, got "
                f"{len(items[0])} entries"
            )
        values = torch.stack([torch.as_tensor(item[0]) for item in items])
        context = torch.stack([torch.as_tensor(item[1]) for item in items])
        return values, context
    return torch.stack([torch.as_tensor(item) for item in items])


def load_image_splits(
    source: str,
    splits: tuple[str, ...] = ("train", "test"),
    *,
    test_source: str | None = None,
    test_split: str | None = None,
    test_fraction: float | None = None,
    seed: int = 0,
    pad: int = 0,
) -> tuple[Any, ...]:
    """The images of a run's ``splits`` (``"train"``, ``"test"``), each padded by ``pad``.

    Training reads them with the settings it then records with the run, and eval, sample and
    interpolate read them back from that record, so they find exactly the same images:

    - ``test_fraction``: the test images are this share of ``source``'s training images, held out
      with ``seed``; the training images are the rest;
    - ``test_source``: the test images are its test split when ``test_split`` is ``"test"``, all
      its images when it is ``"all"`` (not given: its test split if it has one);
    - otherwise ``source``'s own splits.
    """
    import dataclasses

    import torch.nn.functional as F

    from flowkit.data import has_test_split, load_dataset, split_images

    held_out: dict[str, Any] = {}
    if test_fraction is not None:
        train, test = split_images(load_dataset(source, split="train"), test_fraction, seed)
        held_out = {"train": train, "test": test}

    def read(split: str) -> Any:
        if split in held_out:
            return held_out[split]
        if split == "test" and test_source:
            which = test_split or ("test" if has_test_split(test_source) else "all")
            return load_dataset(test_source, split="test" if which == "test" else "train")
        return load_dataset(source, split=split)

    images = [read(split) for split in splits]
    if pad:
        images = [
            dataclasses.replace(part, images=F.pad(part.images, (pad,) * 4).contiguous())
            for part in images
        ]
    return tuple(images)

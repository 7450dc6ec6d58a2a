"""What the reproduction experiments share: datasets, records, options, worker processes, training.

Datasets are read once by the driver (Fashion-MNIST's idx files, the CIFAR-10 JPEG archive, or
small synthetic images in ``--quick`` mode when the files are missing) and cached as one torch file
per dataset in the output directory, so that worker processes start without decoding 60,000 JPEGs.
Records are JSON lines appended as they come, so an interrupted experiment resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT

__all__ = [
    "DATASETS",
    "DEFAULT_PATHS",
    "FIGURES",
    "SHARED_DATA",
    "append_record",
    "dataset_path",
    "evaluate_bpd",
    "load_prepared",
    "parse_options",
    "prepare_dataset",
    "read_records",
    "synthetic_images",
    "train_config",
    "train_in_chunks",
    "worker_env",
]

DATASETS = ("fashion-mnist", "cifar10")
SHARED_DATA = Path(ROOT).parent / "shared" / "data"
DEFAULT_PATHS = {
    "fashion-mnist": SHARED_DATA / "fashion-mnist",
    "cifar10": SHARED_DATA / "cifar10-jpeg.tar.gz",
}
# Where the full runs put the figures the documentation shows.
FIGURES = Path(ROOT) / "docs" / "images" / "reproduce"
# Image shape and class count of each dataset, also those of its synthetic stand-in.
SHAPES = {"fashion-mnist": (1, 28, 28), "cifar10": (3, 32, 32)}
NUM_CLASSES = 10
# Seed of the dequantisation noise of every evaluation below: every model and library is scored on
# the same continuous test points.
EVAL_NOISE_SEED = 1234


def dataset_path(name: str, given: str | None, quick: bool) -> Path | None:
    """The dataset's location: ``given``, else the shared default when it exists.

    Returns None (synthetic data) only in quick mode, when the files are missing or ``given`` is
    ``"synthetic"``; a full run without the files is an error.
    """
    if given == "synthetic" and quick:
        return None
    if given is not None:
        path = Path(given).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"{name}: {path} does not exist")
        return path
    if DEFAULT_PATHS[name].exists():
        return DEFAULT_PATHS[name]
    if quick:
        return None
    option = "--fashion-mnist DIR" if name == "fashion-mnist" else "--cifar10 PATH"
    raise FileNotFoundError(
        f"{name}: no data at the default {DEFAULT_PATHS[name]}; give its location with {option}"
    )


def synthetic_images(name: str, count: int, seed: int) -> tuple[Any, Any]:
    """Labelled uint8 images of ``name``'s shape: a class-dependent stripe pattern plus noise."""
    import torch

    channels, height, width = SHAPES[name]
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, NUM_CLASSES, (count,), generator=generator)
    rows = torch.arange(height).view(1, 1, height, 1).float()
    frequency = (labels.float() + 1.0).view(-1, 1, 1, 1)
    pattern = 0.5 + 0.4 * torch.sin(rows * frequency * math.pi / height)
    noise = 0.1 * torch.randn(count, channels, height, width, generator=generator)
    images = ((pattern + noise).clamp(0.0, 1.0) * 255).round().to(torch.uint8)
    return images.contiguous(), labels


def prepare_dataset(
    name: str, source: Path | None, cache_dir: Path, *, quick: bool
) -> tuple[Path, str]:
    """Read ``name``'s train and test splits once and cache them as ``cache_dir/<name>.pt``.

    Quick mode keeps 512 training and 256 test images. Returns the cache path and a description
    of where the data came from (kept in the cache, so a changed source rebuilds it).
    """
    import torch

    described = "synthetic" if source is None else str(source.resolve())
    described += " (quick subset)" if quick else ""
    cache = cache_dir / f"{name}.pt"
    if cache.exists() and torch.load(cache, weights_only=True)["source"] == described:
        return cache, described
    if source is None:
        train = synthetic_images(name, 512, seed=0)
        test = synthetic_images(name, 256, seed=1)
    else:
        from flowkit.data import load_dataset

        splits = [load_dataset(source, split=split) for split in ("train", "test")]
        for split in splits:
            if split.labels is None or tuple(split.images.shape[1:]) != SHAPES[name]:
                raise ValueError(
                    f"{name}: expected labelled images of shape {SHAPES[name]}, got {split!r}"
                )
        keep = (512, 256) if quick else (None, None)
        train, test = ((s.images[:n], s.labels[:n]) for s, n in zip(splits, keep))
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".tmp")
    torch.save(
        {
            "source": described,
            "train_images": train[0].contiguous(),
            "train_labels": train[1],
            "test_images": test[0].contiguous(),
            "test_labels": test[1],
        },
        partial,
    )
    partial.replace(cache)
    return cache, described


def load_prepared(cache: str | os.PathLike[str]) -> tuple[Any, Any]:
    """The cached train and test splits as :class:`flowkit.data.ImageData`."""
    import torch

    from flowkit.data import ImageData

    saved = torch.load(cache, weights_only=True)
    return tuple(
        ImageData(saved[f"{split}_images"], saved[f"{split}_labels"], f"{cache} ({split})")
        for split in ("train", "test")
    )


def append_record(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line (the file and its folder are created when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """Every record of a JSON-lines file (none when it is missing); torn lines are skipped."""
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def parse_options(items: Iterable[str] | None, what: str) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as JSON, else kept as strings) into a dict."""
    options: dict[str, Any] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"{what} expects KEY=VALUE, got {item!r}")
        try:
            options[key] = json.loads(text)
        except json.JSONDecodeError:
            options[key] = text
    return options


def train_config(base: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """A :class:`~flowkit.train.TrainConfig` from the experiment's settings and the user's ones.

    Lists become tuples (``temperatures`` from JSON); unknown fields are a ConfigError naming them.
    """
    from flowkit.train import TrainConfig

    values = {**base, **overrides}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    return TrainConfig.from_dict(values)


def train_in_chunks(
    flow: Any,
    config: Any,
    train: Any,
    test: Any,
    stops: list[dict[str, Any]],
    *,
    model_name: str = "glow",
    model_config: Any = None,
    after: Callable[[Any, dict[str, Any]], None] | None = None,
) -> Any:
    """Train with :class:`~flowkit.train.Trainer` up to each limit of ``stops`` in turn.

    Each stop (``{"max_steps": n}`` or ``{"max_minutes": m}``) resumes the run in
    ``config.output`` and trains on to that limit, where the trainer evaluates and checkpoints as
    at an epoch end, so the run's ``metrics.jsonl`` holds a test point per stop. Resuming is exact
    on the CPU, so the chunks train the same model as one call would. ``after(trainer, stop)`` runs
    after each chunk (outside the run's clock). A run that stopped half-way continues from its
    checkpoint. ``model_name`` is the model's registered family, for the checkpoint. Returns the
    last trainer.
    """
    import dataclasses

    from flowkit.train import Trainer

    trainer = None
    for stop in stops:
        chunk = dataclasses.replace(config, **stop)
        trainer = Trainer(
            flow, chunk, train, test, model_name=model_name, model_config=model_config
        )
        trainer.fit(resume=True)
        if after is not None:
            after(trainer, stop)
    return trainer


def evaluate_bpd(
    log_prob: Callable[[Any, Any], Any],
    images: Any,
    labels: Any = None,
    *,
    n_bits: int = 8,
    shift: float = 0.0,
    batch_size: int = 500,
) -> float:
    """Mean bits/dim of uint8 ``images`` under ``log_prob(x, labels)``, with fixed noise.

    Inputs are dequantised into ``[-0.5, 0.5)`` (flowkit's convention) plus ``shift`` (0.5 gives
    normflows' ``[0, 1)``); a shift does not change a density, so every library is scored on the
    same continuous points.
    """
    import torch

    from flowkit.data import to_model_input

    generator = torch.Generator().manual_seed(EVAL_NOISE_SEED)
    x = to_model_input(images, n_bits, generator=generator) + shift
    num_dims = math.prod(images.shape[1:])
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            part = slice(start, start + batch_size)
            context = None if labels is None else labels[part]
            # Peers' densities are not flowkit models: the bound Dequantized forms for its own,
            # log p(x) minus the bin constant nD log 2, in bits per dimension.
            log_bound = log_prob(x[part], context) - num_dims * n_bits * math.log(2.0)
            values = -log_bound / (num_dims * math.log(2.0))
            total += float(values.double().sum())
    return total / len(images)


def worker_env(threads: int | None) -> dict[str, str]:
    """The environment of a worker: this checkout importable, ``threads`` intra-op threads."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, env.get("PYTHONPATH")) if p)
    if threads is not None:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            env[name] = str(threads)
    return env

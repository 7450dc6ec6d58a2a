"""One density-estimation measurement in this process: train on a toy density, test, time the steps.

Usage: ``python -m benchmarks.density_measure '<json spec>'`` (or ``-`` to read it from stdin);
prints one JSON line. :mod:`benchmarks.density` starts one such process per (dataset, model,
library), so that no library's warm caches or allocator state reach another's.

Spec fields: ``library``, ``architecture`` (see :class:`benchmarks.density_models.Architecture`,
its ``width`` flowkit's), ``dataset``, ``train_size``, ``test_size``, ``data_seed``, ``seed``,
``batch``, ``steps``, ``warmup`` (steps left out of the timing), ``learning_rate`` (Adam's,
decayed to zero along a cosine), ``threads``, ``device``, ``curve_points`` (how many losses of the
run the record keeps).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

if __package__ in (None, ""):
    # Run as a script: make the repository root (holding benchmarks/ and flowkit/) importable.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch
from torch import Tensor

from benchmarks.common import measurement_main, resolve_device
from benchmarks.density_models import (
    LIBRARIES,
    Architecture,
    build_density_model,
    matched_width,
    trainable_parameters,
)
from benchmarks.meters import max_rss_mib, meters_for
from benchmarks.models import library_version

__all__ = ["DATASETS", "Dataset", "load_dataset", "main", "measure"]

# Log-probabilities of the test set are computed in chunks of this many points (no grad).
EVAL_CHUNK = 8192


@dataclass(frozen=True)
class Dataset:
    """A toy density: how to sample it, and its true log-density where it is known."""

    sample: Callable[[int, torch.Generator], Tensor]
    log_density: Callable[[Tensor], Tensor] | None


def _checkerboard_log_density(x: Tensor) -> Tensor:
    from flowkit.data import checkerboard

    # Uniform on the dark half of the board; every sample lies on a dark cell. Read off the
    # generator's defaults (4 x 4 cells on [-4, 4]^2, so 8 dark cells of area 4).
    defaults = checkerboard.__kwdefaults__
    squares, half_width = defaults["squares"], defaults["half_width"]
    dark = (squares * squares + 1) // 2
    area = (2 * half_width / squares) ** 2
    return torch.full(x.shape[:-1], -math.log(dark * area), dtype=torch.float64)


def _datasets() -> dict[str, Dataset]:
    from flowkit.data import (
        checkerboard,
        eight_gaussians,
        eight_gaussians_mixture,
        gaussian_mixture_10d,
        mixture_10d,
        two_moons,
    )

    return {
        "two-moons": Dataset(lambda n, g: two_moons(n, generator=g), None),
        "checkerboard": Dataset(
            lambda n, g: checkerboard(n, generator=g), _checkerboard_log_density
        ),
        "eight-gaussians": Dataset(
            lambda n, g: eight_gaussians(n, generator=g), eight_gaussians_mixture().log_prob
        ),
        "mixture-10d": Dataset(
            lambda n, g: gaussian_mixture_10d(n, generator=g), mixture_10d().log_prob
        ),
    }


# The datasets and their dimensions.
DATASETS = {"two-moons": 2, "checkerboard": 2, "eight-gaussians": 2, "mixture-10d": 10}


def load_dataset(spec: dict[str, Any]) -> tuple[Tensor, Tensor, Dataset]:
    """The train and test tensors of ``spec`` (float32), identical for every library."""
    datasets = _datasets()
    name = spec["dataset"]
    if name not in datasets:
        raise ValueError(f"unknown dataset {name!r}; expected one of {list(DATASETS)}")
    dataset = datasets[name]
    seed = spec["data_seed"]
    train = dataset.sample(spec["train_size"], torch.Generator().manual_seed(seed))
    test = dataset.sample(spec["test_size"], torch.Generator().manual_seed(seed + 1))
    return train, test, dataset


def _fingerprint(x: Tensor) -> list[float]:
    # Equal for equal tensors; the report checks that every library saw the same data.
    values = x.to(torch.float64)
    return [float(values.sum()), float(values.square().sum())]


def _test_log_likelihood(model: Any, test: Tensor) -> tuple[float, float]:
    """Mean and standard error of the model's log-density over ``test`` (standardised units)."""
    model.module.eval()
    with torch.no_grad():
        values = torch.cat([model.log_prob(chunk) for chunk in test.split(EVAL_CHUNK)])
    values = values.to(torch.float64)
    return float(values.mean()), float(values.std() / math.sqrt(values.numel()))


def _train(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    torch.set_num_threads(int(spec["threads"]))
    train, test, dataset = load_dataset(spec)
    # Standardise with the training set's statistics (the same affine map for every library):
    # the splines cover [-B, B] only. The log-likelihood of the original data is the model's
    # minus sum(log std), the log-determinant of the map.
    mean, std = train.mean(0), train.std(0)
    log_det = -float(std.to(torch.float64).log().sum())
    train_std = ((train - mean) / std).to(device)
    test_std = ((test - mean) / std).to(device)

    arch = Architecture.from_dict(spec["architecture"])
    if arch.features != train.shape[-1]:
        raise ValueError(
            f"architecture has {arch.features} features, dataset {spec['dataset']} has "
            f"{train.shape[-1]}"
        )
    torch.manual_seed(spec["seed"])
    target = trainable_parameters(build_density_model("flowkit", arch).module)
    width, parameters = arch.width, target
    if spec["library"] != "flowkit":
        width, parameters = matched_width(spec["library"], arch, target)
    used = Architecture(**{**arch.to_dict(), "width": width})
    torch.manual_seed(spec["seed"])
    model = build_density_model(spec["library"], used)
    model.module.to(device)
    if trainable_parameters(model.module) != parameters:
        raise RuntimeError("the parameter count changed between two builds of the same model")

    # Minibatch indices come from their own generator: every library sees the same batches.
    batches = torch.Generator().manual_seed(spec["seed"] + 1)
    batch_size, steps = spec["batch"], spec["steps"]

    def next_batch() -> Tensor:
        index = torch.randint(train_std.shape[0], (batch_size,), generator=batches)
        return train_std[index.to(device)]

    model.initialize(next_batch())
    optimizer = torch.optim.Adam(model.module.parameters(), lr=spec["learning_rate"])
    # Cosine decay to zero (as in the Neural Spline Flows experiments): the final test score then
    # reflects the fit rather than where the last noisy steps happened to land.
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    timer, _ = meters_for(device.type)
    seconds: list[float] = []
    losses: list[float] = []
    first_non_finite = None
    model.module.train()
    for index in range(steps):
        x = next_batch()
        timer.start()
        optimizer.zero_grad(set_to_none=True)
        loss = -model.log_prob(x).mean()
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        elapsed = timer.stop()
        schedule.step()
        if index >= spec["warmup"]:
            seconds.append(elapsed)
        losses.append(value)
        if not math.isfinite(value):
            # Parameters are now NaN or infinite; further steps would only burn time.
            first_non_finite = index
            break
    mean_ll, standard_error = _test_log_likelihood(model, test_std)
    every = max(1, len(losses) // max(1, spec["curve_points"]))
    true_ll = None
    if dataset.log_density is not None:
        true_ll = float(dataset.log_density(test).to(torch.float64).mean())
    return {
        "parameters": parameters,
        "target_parameters": target,
        "parameter_ratio": parameters / target,
        "width": width,
        "architecture": used.to_dict(),
        "steps_done": len(losses),
        "timed_steps": len(seconds),
        "median_step_seconds": statistics.median(seconds) if seconds else None,
        "mean_step_seconds": statistics.fmean(seconds) if seconds else None,
        "train_seconds": sum(seconds),
        "loss_finite": first_non_finite is None,
        "first_non_finite_step": first_non_finite,
        "final_loss": losses[-1] if losses else None,
        "loss_curve": [[i, losses[i]] for i in range(0, len(losses), every)],
        "test_log_likelihood": mean_ll + log_det,
        "test_log_likelihood_stderr": standard_error,
        "true_test_log_likelihood": true_ll,
        "standardisation_log_det": log_det,
        "train_fingerprint": _fingerprint(train),
        "test_fingerprint": _fingerprint(test),
    }


def _environment(spec: dict[str, Any], device: torch.device) -> dict[str, Any]:
    environment = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": str(device),
        "pid": os.getpid(),
        "libraries": {name: library_version(name) for name in LIBRARIES},
        "library_version": library_version(spec["library"]),
    }
    if device.type == "cuda":
        environment["device_name"] = torch.cuda.get_device_name(device)
    return environment


def measure(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the measurement ``spec`` in this process; return its record (``ok``, ``result``)."""
    if spec.get("library") not in LIBRARIES:
        raise ValueError(
            f"spec 'library' must be one of {list(LIBRARIES)}, got {spec.get('library')!r}"
        )
    device = resolve_device(spec.get("device", "auto"))
    result = _train(spec, device)
    return {
        "ok": True,
        "spec": spec,
        "environment": _environment(spec, device),
        "max_rss_mib": max_rss_mib(),
        "result": result,
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point: the spec is the first argument (JSON text, or ``-`` to read it from stdin)."""
    return measurement_main(argv, measure, "benchmarks.density_measure")


if __name__ == "__main__":
    sys.exit(main())

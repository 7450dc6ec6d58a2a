"""Pictures of a run: the learning curve, and a 2-D model's density beside its data."""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import torch
from torch import Tensor

from flowkit.distributions import Flow

__all__ = ["plot_curve", "plot_density_2d"]

# Grid points per axis of the density picture.
DENSITY_GRID = 200


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        warnings.warn(
            'plots need matplotlib (pip install "flowkit-torch[plot]"); skipping them', stacklevel=3
        )
        return None
    return plt


def plot_curve(
    records: list[dict[str, Any]],
    path: str | os.PathLike,
    *,
    key: str = "bpd",
    ylabel: str = "bits / dim",
) -> bool:
    """Plot ``train_<key>`` (running mean), ``val_<key>`` and ``test_<key>`` against the step.

    The validation curve appears for runs with a validation set, with the best evaluation marked.

    Returns False, with a warning, when matplotlib is missing.
    """
    plt = _pyplot()
    if plt is None:
        return False
    train = [(r["step"], r[f"train_{key}"]) for r in records if _finite(r.get(f"train_{key}"))]
    test = [(r["step"], r[f"test_{key}"]) for r in records if _finite(r.get(f"test_{key}"))]
    validation = [(r["step"], r[f"val_{key}"]) for r in records if _finite(r.get(f"val_{key}"))]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    if train:
        axes.plot(*zip(*train), label="train (running mean)", color="tab:blue", alpha=0.8)
    if test:
        axes.plot(*zip(*test), "o-", label="test", color="tab:orange")
    if validation:
        axes.plot(*zip(*validation), ".-", label="validation", color="tab:green")
        step, _ = min(validation, key=lambda point: point[1])
        axes.axvline(step, color="tab:green", alpha=0.4, linestyle="--", label="best validation")
    axes.set_xlabel("step")
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if train or test or validation:  # a run whose every value was non-finite has nothing to label
        axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


@torch.no_grad()
def plot_density_2d(flow: Flow, data: Tensor, path: str | os.PathLike, *, seed: int = 0) -> bool:
    """Draw a 2-D flow's density on a grid, its samples and the data side by side, into a PNG.

    The grid spans the data's range with a 10% margin; samples are as many as data points (at
    most 2,000), drawn from ``seed``. Returns False, with a warning, when matplotlib is missing.
    """
    plt = _pyplot()
    if plt is None:
        return False
    data = data.detach().double().cpu()[:2000]
    low, high = data.min(0).values, data.max(0).values
    margin = 0.1 * (high - low).clamp_min(1e-6)
    low, high = low - margin, high + margin
    xs = torch.linspace(float(low[0]), float(high[0]), DENSITY_GRID)
    ys = torch.linspace(float(low[1]), float(high[1]), DENSITY_GRID)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    parameter = next(flow.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    device = parameter.device if parameter is not None else torch.device("cpu")
    density = flow.log_prob(grid.to(device, dtype)).exp().reshape(DENSITY_GRID, DENSITY_GRID).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        samples = flow.sample(len(data)).double().cpu()
    figure, axes = plt.subplots(1, 3, figsize=(12, 4), dpi=100, sharex=True, sharey=True)
    extent = (float(low[0]), float(high[0]), float(low[1]), float(high[1]))
    axes[0].imshow(
        torch.nan_to_num(density).numpy(),
        origin="lower",
        extent=extent,
        aspect="auto",
        cmap="viridis",
    )
    axes[0].set_title("model density")
    axes[1].scatter(samples[:, 0], samples[:, 1], s=2, alpha=0.5, color="tab:orange")
    axes[1].set_title("model samples")
    axes[2].scatter(data[:, 0], data[:, 1], s=2, alpha=0.5, color="tab:blue")
    axes[2].set_title("data")
    for ax in axes:
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)

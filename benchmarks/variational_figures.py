"""The figures of docs/flows/variational.md: GMM-40 samples and effective sample size by step.

    nice python -m benchmarks.variational_figures

Trains, at seed 0 and with the settings of ``benchmarks.variational`` (2,000 steps, batch 128),
the reverse KL and FAB on GMM-40 and the reverse KL, alpha = 2 and FAB on Neal's funnel, then
writes two PNG files into docs/images/: ``variational-gmm40-samples.png`` (1,000 flow samples
over the target's log-density contours, one panel per objective) and ``variational-ess.png``
(the ESS fraction of each step's 128 flow samples, as ``fit`` records it, in a running mean over
50 steps; a dot at the end marks the ESS fraction over 10,000 samples). Needs ``matplotlib``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from benchmarks.variational import TARGETS, run
from flowkit.variational.targets import GaussianMixture

IMAGES = Path(__file__).resolve().parent.parent / "docs" / "images"
STEPS = 2000
BATCH_SIZE = 128
SEED = 0
# Steps in the running mean of the per-step ESS fraction (one batch's ESS is noisy).
WINDOW = 50
SAMPLES_SHOWN = 1000
RUNS = {"gmm40": ("reverse_kl", "fab"), "funnel": ("reverse_kl", "alpha_2", "fab")}
LABELS = {"reverse_kl": "reverse KL", "alpha_2": "alpha = 2", "fab": "FAB"}
TITLES = {"gmm40": "GMM-40 (2-D, 40 modes)", "funnel": "Neal's funnel (10-D)"}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--output", type=Path, default=IMAGES)
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    torch.set_num_threads(1)
    results = {
        (target, method): run(target, method, args.steps, SEED, BATCH_SIZE)
        for target, methods in RUNS.items()
        for method in methods
    }
    args.output.mkdir(parents=True, exist_ok=True)
    _samples_figure(results, args.output / "variational-gmm40-samples.png")
    _ess_figure(results, args.output / "variational-ess.png")


def _samples_figure(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    target = TARGETS["gmm40"]()
    assert isinstance(target, GaussianMixture)
    grid = torch.linspace(-50.0, 50.0, 300, dtype=torch.float64)
    x, y = torch.meshgrid(grid, grid, indexing="xy")
    log_p = target(torch.stack([x, y], dim=-1)).clamp(min=-60.0)
    figure, axes = plt.subplots(1, 2, figsize=(9.6, 4.8), sharey=True, layout="constrained")
    for axis, method in zip(axes, RUNS["gmm40"], strict=True):
        record, history = results["gmm40", method]
        torch.manual_seed(3000 + SEED)
        with torch.no_grad():
            samples = history.flow.sample(SAMPLES_SHOWN)
        axis.contour(x, y, log_p, levels=12, cmap="Greys", linewidths=0.6)
        axis.scatter(samples[:, 0], samples[:, 1], s=3, alpha=0.5, color="tab:blue")
        axis.set(xlim=(-50, 50), ylim=(-50, 50), aspect="equal")
        axis.set_title(
            f"{LABELS[method]}: {record['modes_10']} of 40 modes, ESS {100 * record['ess']:.1f} %"
        )
    figure.suptitle(f"GMM-40, {SAMPLES_SHOWN} flow samples after {record['steps']} steps (seed 0)")
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _ess_figure(results: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10.0, 4.0), layout="constrained")
    for axis, (target, methods) in zip(axes, RUNS.items(), strict=True):
        for method in methods:
            record, history = results[target, method]
            ess = torch.tensor(history.ess_fractions, dtype=torch.float64)
            kernel = torch.full((1, 1, WINDOW), 1.0 / WINDOW, dtype=torch.float64)
            smooth = torch.nn.functional.conv1d(ess[None, None], kernel)[0, 0]
            steps = torch.arange(WINDOW, len(ess) + 1)
            (line,) = axis.plot(steps, smooth, label=LABELS[method], linewidth=1.2)
            axis.plot(len(ess), record["ess"], "o", color=line.get_color())
        axis.set(
            title=TITLES[target],
            xlabel="step",
            ylabel="ESS fraction",
            ylim=(0, 1.02),
            xlim=(0, None),
        )
        axis.legend(loc="upper left")
    figure.savefig(path, dpi=100)
    plt.close(figure)


if __name__ == "__main__":
    main()

"""Glow's qualitative results from one class-conditional model per dataset.

(a) Samples across temperatures (Figure 8) with a quality proxy per temperature: the bits/dim of
the quantised samples under the sampling model itself and under an evaluator model of the same
architecture trained on the test split, beside the samples' pixel standard deviation; (b) one row
of samples per class (Figure 10); (c) interpolation between the latents of two test images of one
class (Figure 5); (d) manipulation along a class-difference direction (Figure 6 uses CelebA's
attributes; here: mean latent of class A minus that of class B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.reproduce.common import (
    SHAPES,
    evaluate_bpd,
    load_prepared,
    train_config,
    train_in_chunks,
)
from benchmarks.reproduce.plot import Panel, Series, plot_panels

__all__ = [
    "FULL",
    "MANIPULATIONS",
    "QUICK",
    "TEMPERATURES",
    "SampleSizes",
    "render_table",
    "run_dataset",
    "write_figure",
]

TEMPERATURES = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
# Class-conditional samples at the paper's temperature for them (Figure 10).
CLASS_TEMPERATURE = 0.75
# (source class B, target class A) per dataset: Sneaker -> Ankle boot, cat -> dog.
MANIPULATIONS = {"fashion-mnist": (7, 9), "cifar10": (3, 5)}
ALPHAS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class SampleSizes:
    """The model (additive coupling and 5-bit data, as the paper's qualitative models) and scale."""

    K: int = 8
    L: int = 2
    hidden_channels: int = 64
    n_bits: int = 5
    batch_size: int = 64
    steps: int = 2000
    lr: float = 1e-3
    warmup_steps: int = 200
    num_train: int | None = None
    num_score: int = 500
    per_class: int = 1000
    pairs: int = 4
    interpolation_steps: int = 8


FULL = SampleSizes()
QUICK = SampleSizes(
    K=1,
    hidden_channels=8,
    batch_size=16,
    steps=4,
    warmup_steps=2,
    num_train=128,
    num_score=20,
    per_class=8,
    pairs=2,
    interpolation_steps=4,
)


def _train(
    name: str, train: Any, sizes: SampleSizes, dataset: str, output: Path, options: dict
) -> Any:
    from flowkit.distributions import Dequantized
    from flowkit.presets.glow import GlowConfig, build_glow

    config = GlowConfig(
        K=sizes.K,
        L=sizes.L,
        coupling="additive",
        input_shape=SHAPES[dataset],
        hidden_channels=sizes.hidden_channels,
        num_classes=10,
        seed=0,
        **options["model"],
    )
    # The paper's qualitative models see 5-bit images: the bits are the model's.
    flow = Dequantized(build_glow(config), sizes.n_bits)
    used = min(len(train), sizes.num_train or len(train))
    steps_per_epoch = used // sizes.batch_size
    base = {
        "data": dataset,
        "output": str(output / name),
        "batch_size": sizes.batch_size,
        "init_batch_size": min(256, used),
        "epochs": math.ceil(sizes.steps / steps_per_epoch) + 1,
        "lr": sizes.lr,
        "warmup_epochs": sizes.warmup_steps / steps_per_epoch,
        # An average over the last tenth of the run, so the initial weights have faded from it.
        "polyak_epochs": max(sizes.steps / 10, 1) / steps_per_epoch,
        "eval_every": 10**6,
        "sample_every": 10**6,
        "temperatures": (CLASS_TEMPERATURE,),
        "num_samples": 20,
        "num_train": sizes.num_train,
        "device": "cpu",
        "progress": False,
    }
    settings = train_config(base, options["train"])
    trainer = train_in_chunks(
        flow, settings, train, None, [{"max_steps": sizes.steps}], model_config=config
    )
    averaged = trainer.averaged_flow
    averaged.eval()
    return averaged


def _sample(flow: Any, labels: Any, temperature: float, seed: int) -> tuple[Any, int]:
    """Samples as uint8-ready model values (non-finite values zeroed) and their count."""
    import torch

    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        x = flow.sample(context=labels, temperature=temperature).float()
    bad = ~torch.isfinite(x)
    return x.masked_fill(bad, 0.0), int(bad.sum())


def _model_input(images: Any, n_bits: int) -> Any:
    """Bin centres of uint8 images in model space (no noise: encoded for pictures)."""
    from flowkit.data import to_model_input

    return to_model_input(images, n_bits, dequantize=False) + 0.5 / 2**n_bits


def run_dataset(
    dataset: str, cache: Path, sizes: SampleSizes, output: Path, figures: Path, options: dict
) -> list[dict[str, Any]]:
    """Train (or resume) both models, write the four grids; return a record per temperature."""
    import torch

    from flowkit.data import save_image_grid, to_uint8
    from flowkit.latent import attribute_direction, interpolate, manipulate

    train, test = load_prepared(cache)
    n_bits = sizes.n_bits
    work = output / dataset
    model = _train("model", train, sizes, dataset, work, options)
    evaluator = _train("evaluator", test, sizes, dataset, work, options)

    # (a) Temperatures: the same noise at every temperature, one column per class.
    classes = torch.arange(10)
    rows = [to_uint8(_sample(model, classes, t, seed=0)[0], n_bits) for t in TEMPERATURES]
    save_image_grid(torch.cat(rows), figures / f"samples-{dataset}-temperatures.png", nrow=10)
    score_labels = torch.arange(sizes.num_score) % 10
    records = []
    for temperature in TEMPERATURES:
        values, nonfinite = _sample(model, score_labels, temperature, seed=1)
        images = to_uint8(values, n_bits)
        records.append(
            {
                "dataset": dataset,
                "temperature": temperature,
                "model_bpd": evaluate_bpd(model.log_prob, images, score_labels, n_bits=n_bits),
                "evaluator_bpd": evaluate_bpd(
                    evaluator.log_prob, images, score_labels, n_bits=n_bits
                ),
                "pixel_std": float(images.float().div(255).std()),
                "nonfinite": nonfinite,
                "num_samples": sizes.num_score,
            }
        )
    real = train.images[: sizes.num_score]
    real_labels = train.labels[: sizes.num_score]
    records.append(
        {
            "dataset": dataset,
            "temperature": None,
            "model_bpd": evaluate_bpd(model.log_prob, real, real_labels, n_bits=n_bits),
            "evaluator_bpd": evaluate_bpd(evaluator.log_prob, real, real_labels, n_bits=n_bits),
            "pixel_std": float(to_uint8(_model_input(real, n_bits), n_bits).float().div(255).std()),
            "nonfinite": 0,
            "num_samples": len(real),
        }
    )

    # (b) One row per class.
    labels = classes.repeat_interleave(10)
    values, _ = _sample(model, labels, CLASS_TEMPERATURE, seed=2)
    save_image_grid(to_uint8(values, n_bits), figures / f"samples-{dataset}-classes.png", nrow=10)

    # (c) Interpolation between two test images of one class, encoded with that class.
    rows = []
    for pair in range(sizes.pairs):
        label = pair % 10
        index = (test.labels == label).nonzero().flatten()[:2]
        x_a, x_b = _model_input(test.images[index], n_bits)
        path = interpolate(
            model, x_a, x_b, steps=sizes.interpolation_steps, context=torch.tensor(label)
        )
        rows.append(to_uint8(path, n_bits))
    save_image_grid(
        torch.cat(rows),
        figures / f"samples-{dataset}-interpolation.png",
        nrow=sizes.interpolation_steps,
    )

    # (d) Manipulation: direction = mean latent of class A - mean latent of class B (training
    # images), every latent taken under class B's context, added to test images of class B.
    source, target = MANIPULATIONS[dataset]
    chosen = [(train.labels == c).nonzero().flatten()[: sizes.per_class] for c in (target, source)]
    index = torch.cat(chosen)
    x = _model_input(train.images[index], n_bits)
    context = torch.full((len(index),), source)
    direction = attribute_direction(model, x, train.labels[index] == target, context=context)
    rows = []
    for position in (test.labels == source).nonzero().flatten()[: sizes.pairs]:
        x = _model_input(test.images[position], n_bits)
        moved = manipulate(model, x, direction, ALPHAS, context=torch.tensor(source))
        rows.append(to_uint8(moved, n_bits))
    save_image_grid(
        torch.cat(rows), figures / f"samples-{dataset}-manipulation.png", nrow=len(ALPHAS)
    )
    return records


def render_table(records: list[dict[str, Any]], n_bits: int) -> str:
    """Markdown: per dataset, the quality proxy at each temperature, and the real images' values."""
    lines = ["## Samples: effect of temperature (Glow, Figure 8)", ""]
    for dataset in sorted({r["dataset"] for r in records}):
        lines += [
            f"### {dataset}",
            "",
            f"Bits/dim ({n_bits}-bit) of quantised class-conditional samples under the sampling "
            "model and under an evaluator trained on the test split; pixel standard deviation "
            "in [0, 1].",
            "",
            "| temperature | sampling model bits/dim | evaluator bits/dim | pixel std | "
            "non-finite values |",
            "|---|---|---|---|---|",
        ]
        for r in records:
            if r["dataset"] != dataset:
                continue
            name = "real images" if r["temperature"] is None else f"{r['temperature']:.2f}"
            lines.append(
                f"| {name} | {r['model_bpd']:.4f} | {r['evaluator_bpd']:.4f} | "
                f"{r['pixel_std']:.4f} | {r['nonfinite']} |"
            )
        lines.append("")
    return "\n".join(lines)


def write_figure(records: list[dict[str, Any]], dataset: str, path: Path) -> Path:
    """Bits/dim and pixel standard deviation against temperature; the real images' level dashed."""
    rows = [r for r in records if r["dataset"] == dataset and r["temperature"] is not None]
    real = next(r for r in records if r["dataset"] == dataset and r["temperature"] is None)
    temps = [r["temperature"] for r in rows]
    ends = [temps[0], temps[-1]]

    def level(key: str) -> list[float]:
        return [real[key], real[key]]

    bpd = Panel(
        f"{dataset}: samples' bits/dim",
        "temperature",
        "bits/dim",
        [
            Series("sampling model", temps, [r["model_bpd"] for r in rows]),
            Series("evaluator", temps, [r["evaluator_bpd"] for r in rows]),
            Series("real, evaluator", ends, level("evaluator_bpd"), dashed=True),
        ],
    )
    spread = Panel(
        f"{dataset}: pixel standard deviation",
        "temperature",
        "pixel std",
        [
            Series("samples", temps, [r["pixel_std"] for r in rows]),
            Series("real images", ends, level("pixel_std"), dashed=True),
        ],
    )
    return plot_panels(path, [bpd, spread])

"""Named training runs for the command line: a model family, its settings and training settings.

Importing this module does not import torch, so ``flowkit presets`` lists them at once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["RUN_PRESETS", "RunPreset", "augmentation_of", "get_run_preset"]


@dataclass(frozen=True)
class RunPreset:
    """A named run: the model family, settings for its config and for ``TrainConfig``, and sources.

    Attributes:
        name: The name given to ``flowkit train --preset``.
        description: One line for ``flowkit presets``.
        model: Settings of the model family's config (vector models get ``features`` and
            ``context_features`` from the data).
        train: Settings of :class:`~flowkit.train.TrainConfig`.
        source: Where the settings come from (paper table, official code, our choice).
        model_name: The model family in :mod:`flowkit.presets.registry`.
    """

    name: str
    description: str
    model: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    model_name: str = "glow"


# Tables: Adam at 1e-3 without warm-up, as the MAF and NSF papers train on the UCI sets, with
# their protocol: a validation set of 10% of the training rows, evaluated every epoch, early
# stopping after 30 epochs without improvement (the MAF paper's patience) and the best
# validation weights kept. The caps only bound a run that keeps improving: 1000 epochs, and
# 100,000 steps (about 85 epochs of a 300,000-row table at batch 256). Tables with fewer than
# 4 x 256 training rows get smaller batches (4 an epoch).
TABLE_LENGTH = (
    "up to 1000 epochs or 100,000 steps, stopping after 30 epochs without a better validation "
    "NLL (10% of the training rows); the best validation weights are kept"
)
_TABLE_TRAINING: Mapping[str, Any] = MappingProxyType(
    dict(
        optimizer="adam",
        batch_size=256,
        epochs=1000,
        max_steps=100_000,
        val_fraction=0.1,
        patience=30,
        lr=1e-3,
        warmup_epochs=0.0,
        test_batch_size=1024,
        init_batch_size=1024,
        log_every=20,
    )
)

# The official loader's random translations (--dal 1, its default for CIFAR-10 and MNIST): up to
# a tenth of the width and height. The official ImageNet, LSUN and CelebA-HQ runs read TFRecords
# without augmentation.
OFFICIAL_SHIFT = 0.1

# The runs on the bundled Fashion-MNIST subset ("-small"): a few CPU minutes each, warm-up over
# half an epoch, grids of 64 samples.
_SMALL_TRAINING: Mapping[str, Any] = MappingProxyType(
    dict(
        data="fashion-mnist-small",
        batch_size=64,
        epochs=8,
        lr=1e-3,
        warmup_epochs=0.5,
        test_batch_size=500,
        temperatures=(0.7, 1.0),
        num_samples=64,
    )
)

# What the Glow runs on full datasets share: the paper's learning rate, and 100 epochs.
_GLOW_PAPER_TRAINING: Mapping[str, Any] = MappingProxyType(dict(epochs=100, lr=1e-3))


def _run(
    name: str,
    description: str,
    *,
    model: dict[str, Any],
    source: str,
    model_name: str = "glow",
    defaults: Mapping[str, Any] = MappingProxyType({}),
    train: Mapping[str, Any] = MappingProxyType({}),
) -> RunPreset:
    """A preset writing to ``runs/NAME``, training with ``defaults`` updated by ``train``."""
    settings = {**defaults, "output": f"runs/{name}", **train}
    return RunPreset(
        name, description, model=model, train=settings, source=source, model_name=model_name
    )


# Paper Table 4 (likelihood results) and Table 5 (5-bit qualitative results); the official code's
# choices where the paper is silent (Adamax, learn_top, warm-up 10 epochs, width 512, edge bias).
RUN_PRESETS: dict[str, RunPreset] = {
    preset.name: preset
    for preset in [
        _run(
            "glow-small",
            "Small Glow on the bundled Fashion-MNIST subset; minutes on a laptop CPU",
            # Seeded weights: the README's main job gives the same numbers on every run.
            model=dict(
                K=12, L=2, input_shape=(1, 28, 28), hidden_channels=96, coupling="affine", seed=0
            ),
            defaults=_SMALL_TRAINING,
            train=dict(
                lr=2e-3, init_batch_size=256, temperatures=(0.0, 0.5, 0.7, 1.0), log_every=10
            ),
            source="our choice: the smallest Glow that learns visibly in a few CPU minutes",
        ),
        _run(
            "glow-mnist",
            "Glow on MNIST-like 28x28 grey images padded to 32x32 (as the official data loader)",
            model=dict(K=16, L=3, input_shape=(1, 32, 32), hidden_channels=512, coupling="affine"),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(pad=2, batch_size=64, augment_shift=OFFICIAL_SHIFT),
            source=(
                "official data loader: pads MNIST to 32x32, random shifts (--dal 1); depth and "
                "width are our choice"
            ),
        ),
        _run(
            "glow-cifar10",
            "Paper Table 4: CIFAR-10 32x32, L=3, K=32, affine, LU 1x1 convolutions, width 512",
            model=dict(K=32, L=3, input_shape=(3, 32, 32), hidden_channels=512, coupling="affine"),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(batch_size=512, epochs=1000, augment_shift=OFFICIAL_SHIFT),
            source=(
                "paper Table 4 (batch 512 over 8 GPUs); Adamax, warm-up, learn_top and random "
                "shifts (--dal 1) from the official code"
            ),
        ),
        _run(
            "glow-imagenet32",
            "Paper Table 4: ImageNet 32x32, L=3, K=48, affine",
            model=dict(K=48, L=3, input_shape=(3, 32, 32), hidden_channels=512, coupling="affine"),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(batch_size=512),
            source="paper Table 4",
        ),
        _run(
            "glow-imagenet64",
            "Paper Table 4: ImageNet 64x64, L=4, K=48, affine",
            model=dict(K=48, L=4, input_shape=(3, 64, 64), hidden_channels=512, coupling="affine"),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(batch_size=128),
            source="paper Table 4",
        ),
        _run(
            "glow-lsun64",
            "Paper Table 4: LSUN 64x64 (8-bit), L=4, K=48, affine",
            model=dict(K=48, L=4, input_shape=(3, 64, 64), hidden_channels=512, coupling="affine"),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(batch_size=128),
            source="paper Table 4",
        ),
        _run(
            "glow-celeba256",
            "Paper Table 5: CelebA-HQ 256x256, 5-bit, L=6, K=32, additive",
            # n_bits: the bits of the image model (its Dequantized), not a training setting.
            model=dict(
                K=32,
                L=6,
                input_shape=(3, 256, 256),
                hidden_channels=512,
                coupling="additive",
                n_bits=5,
            ),
            defaults=_GLOW_PAPER_TRAINING,
            train=dict(batch_size=40),
            source=(
                "paper Table 5 and the official README's CelebA-HQ command (n_bits_x 5, learntop)"
            ),
        ),
        _run(
            "realnvp-small",
            "Small RealNVP (multi-scale, checkerboard and channel couplings) on the bundled subset",
            model=dict(input_shape=(1, 28, 28), levels=3, hidden_channels=16, blocks=2),
            defaults=_SMALL_TRAINING,
            train=dict(optimizer="adam"),
            source="our choice; architecture from Dinh et al. 2017 at a CPU-sized width",
            model_name="realnvp",
        ),
        _run(
            "flowpp-small",
            "Small Flow++ (learned dequantization, logistic-mixture couplings with attention) on "
            "the bundled Fashion-MNIST subset",
            model=dict(
                input_shape=(1, 28, 28),
                filters=16,
                components=4,
                blocks=1,
                heads=2,
                dropout=0.0,
                couplings=(2, 2, 2),
                dequantizer_couplings=2,
                dequantizer_filters=16,
                dequantizer_blocks=1,
                feature_channels=8,
                feature_blocks=1,
                seed=0,
            ),
            defaults=_SMALL_TRAINING,
            train=dict(
                optimizer="adam",
                epochs=2,
                grad_clip=1.0,
                init_batch_size=256,
                temperatures=(1.0,),
                log_every=10,
            ),
            source=(
                "our choice: Flow++'s layout at a CPU-sized width, one block per network, two "
                "couplings per stage; Adam and gradient clipping at 1 as the official code"
            ),
            model_name="flowpp",
        ),
        _run(
            "flowpp-cifar10",
            "Flow++ CIFAR-10 (31.4M parameters): 32 logistics, 10 conv-attn blocks of width 96, "
            "dropout 0.2, variational dequantization",
            model=dict(
                input_shape=(3, 32, 32),
                filters=96,
                components=32,
                blocks=10,
                heads=4,
                dropout=0.2,
                couplings=(4, 2, 3),
                dequantizer_couplings=4,
                dequantizer_filters=96,
                dequantizer_blocks=2,
                feature_channels=32,
                feature_blocks=3,
                seed=0,
            ),
            train=dict(
                optimizer="adam",
                batch_size=64,
                init_batch_size=128,
                epochs=1000,
                lr=3e-4,
                # 2000 steps of linear warm-up at batch 64 on CIFAR-10's 50,000 images.
                warmup_epochs=2.56,
                grad_clip=1.0,
                temperatures=(1.0,),
            ),
            source=(
                "official code flows/run_cifar.py (Adam, peak learning rate 3e-4 after 2000 "
                "warm-up steps, batch 64, initialisation batch 128, dropout 0.2, gradient norm "
                "clipped at 1, EMA of the weights); the training length is our choice"
            ),
            model_name="flowpp",
        ),
        _run(
            "tarflow-small",
            "Small TarFlow (7x7 patches, 4 causal transformer blocks) on the bundled subset",
            model=dict(
                input_shape=(1, 28, 28),
                patch_size=7,
                channels=64,
                blocks=4,
                layers_per_block=2,
                seed=0,
                noise_std=0.05,
            ),
            defaults=_SMALL_TRAINING,
            train=dict(optimizer="adam"),
            source=(
                "our choice: the paper's architecture at a CPU-sized width, depth and sequence "
                "(one attention head of 64 channels, the official head width); the paper's data "
                "range [-1, 1] and noise (0.05 in that range)"
            ),
            model_name="tarflow",
        ),
        _run(
            "tarflow-imagenet64",
            "TarFlow on ImageNet 64x64: 2x2 patches, 8 blocks of 8 layers, width 768",
            model=dict(
                input_shape=(3, 64, 64),
                patch_size=2,
                channels=768,
                blocks=8,
                layers_per_block=8,
                noise_std=0.05,
            ),
            # The official train.py: AdamW with betas (0.9, 0.95) and weight decay 1e-4; its
            # learning-rate schedule (utils.CosineLRSchedule) rises linearly over the first
            # epoch's steps, then follows a cosine to 1e-6 (1 % of the peak 1e-4) at the last
            # step of the last epoch; its data loader flips images left to right at random; it
            # keeps no average of the weights. Its warm-up starts from 1e-6 rather than 0.
            train=dict(
                optimizer="adamw",
                beta1=0.9,
                beta2=0.95,
                weight_decay=1e-4,
                batch_size=256,
                epochs=200,
                lr=1e-4,
                warmup_epochs=1.0,
                lr_decay="cosine",
                min_lr_ratio=0.01,
                augment_flip=True,
                ema=False,
            ),
            source=(
                "official code's ImageNet 64x64 generation command (github.com/apple/ml-tarflow "
                "README: patch 2, channels 768, blocks 8, layers 8, noise 0.05 on [-1, 1] images, "
                "batch 256, 200 epochs, lr 1e-4) and train.py (AdamW, betas 0.9 and 0.95, weight "
                "decay 1e-4, one epoch of warm-up then cosine decay to 1e-6, random horizontal "
                "flips, no weight average; heads of 64 channels)"
            ),
            model_name="tarflow",
        ),
        _run(
            "nsf",
            "Neural spline flow (autoregressive) for a table: CSV, .npy or .npz via --data; "
            + TABLE_LENGTH,
            model=dict(
                transforms=5,
                bins=8,
                tail_bound=5.0,
                hidden_features=(128, 128),
                autoregressive=True,
            ),
            defaults=_TABLE_TRAINING,
            source=(
                "Durkan et al. 2019 (RQ-NSF (AR), their best on the UCI tables); sizes and Adam at "
                "1e-3 as in their UCI runs; splines on [-5, 5] (our choice: skewed columns reach "
                "past 3 standard deviations; benchmarks/tabular.py)"
            ),
            model_name="nsf",
        ),
        _run(
            "naf",
            "Neural autoregressive flow (deep sigmoidal) for a table: CSV, .npy or .npz via "
            "--data; " + TABLE_LENGTH,
            model=dict(transforms=3, transformer="dsf", sigmoids=16, hidden_features=(128, 128)),
            defaults=_TABLE_TRAINING,
            source=(
                "Huang et al. 2018 (MADE conditioners, DSF transformers of 16 sigmoids); sizes and "
                "Adam at 1e-3 as the other table presets (our choice)"
            ),
            model_name="naf",
        ),
        _run(
            "umnn",
            "Unconstrained monotonic neural network flow for a table: CSV, .npy or .npz via "
            "--data; " + TABLE_LENGTH,
            model=dict(
                transforms=3,
                signal=8,
                integrand_features=(32, 32),
                nodes=33,
                hidden_features=(128, 128),
            ),
            defaults=_TABLE_TRAINING,
            source=(
                "Wehenkel & Louppe 2019 (MADE conditioners, integrand network of the embedding, "
                "Clenshaw-Curtis quadrature); sizes and Adam at 1e-3 as the other table presets "
                "(our choice)"
            ),
            model_name="umnn",
        ),
        _run(
            "resflow",
            "Residual flow for a table: CSV, .npy or .npz via --data; " + TABLE_LENGTH,
            model=dict(blocks=5, hidden_features=(128, 128), coefficient=0.97),
            defaults=_TABLE_TRAINING,
            source=(
                "Chen et al. 2019 (LipSwish, Lipschitz 0.97, Russian-roulette log-determinant with "
                "geometric p = 0.5 and two exact terms, ActNorm between blocks); widths and Adam "
                "at 1e-3 as the other table presets (our choice)"
            ),
            model_name="resflow",
        ),
        _run(
            "ncsf",
            "Neural circular spline flow for a table of angles in radians in [-pi, pi) (not "
            "standardised): CSV, .npy or .npz via --data; " + TABLE_LENGTH,
            model=dict(transforms=4, bins=8, hidden_features=(128, 128)),
            defaults=_TABLE_TRAINING,
            source=(
                "Rezende et al. 2020 (circular rational-quadratic spline couplings, uniform base "
                "on the torus); sizes and Adam at 1e-3 as the nsf preset"
            ),
            model_name="ncsf",
        ),
        _run(
            "cnf",
            "Continuous normalizing flow (FFJORD) for a table: CSV, .npy or .npz via --data; "
            "--set model.objective=flow_matching trains it by flow matching (add "
            "model.coupling=ot for minibatch optimal-transport pairs); " + TABLE_LENGTH,
            model=dict(hidden_features=(64, 64), method="dopri5", rtol=1e-5, atol=1e-5),
            defaults=_TABLE_TRAINING,
            source=(
                "Grathwohl et al. 2019 (FFJORD: dopri5 at 1e-5, exact trace for small tables; "
                "the field ELU as zuko's CNF, FFJORD's was softplus); flow matching: Lipman et "
                "al. 2023, its OT coupling: Tong et al. 2024; Adam at 1e-3 as the other table "
                "presets"
            ),
            model_name="cnf",
        ),
        _run(
            "maf",
            "Masked autoregressive flow for a table: CSV, .npy or .npz via --data; " + TABLE_LENGTH,
            model=dict(transforms=5, hidden_features=(128, 128)),
            defaults=_TABLE_TRAINING,
            source="Papamakarios et al. 2017 (MAF 5); Adam at 1e-3",
            model_name="maf",
        ),
        _run(
            "realnvp-tabular",
            "RealNVP couplings for a table: CSV, .npy or .npz via --data; " + TABLE_LENGTH,
            model=dict(transforms=5, hidden_features=(128, 128), normalization="act"),
            defaults=_TABLE_TRAINING,
            source="Dinh et al. 2017 couplings; ActNorm instead of batch norm (no train/eval gap)",
            model_name="realnvp-tabular",
        ),
    ]
}


def augmentation_of(preset: RunPreset) -> str:
    """The training augmentation a run preset turns on, in words (``"none"`` when off)."""
    parts = []
    shift = preset.train.get("augment_shift", 0.0)
    if shift:
        parts.append(f"random shifts up to {shift:g} of the size")
    if preset.train.get("augment_flip", False):
        parts.append("horizontal flips")
    # TarFlow's noise belongs to the model (it denoises its samples with it); other noise to train.
    noise = preset.model.get("noise_std") or preset.train.get("noise_std", 0.0)
    if noise:
        parts.append(f"Gaussian noise std {noise:g}")
    return ", ".join(parts) or "none"


def get_run_preset(name: str) -> RunPreset:
    """The preset called ``name``; a ValueError lists the known ones otherwise."""
    try:
        return RUN_PRESETS[name]
    except KeyError:
        raise ValueError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(RUN_PRESETS))}"
        ) from None

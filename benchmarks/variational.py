"""Variational objectives at equal steps on GMM-40, Neal's funnel and the 32-dimensional many-well.

    nice python -m benchmarks.variational gmm40 --steps 2000 --seeds 0,1,2
    nice python -m benchmarks.variational funnel --steps 2000 --seeds 0,1,2
    nice python -m benchmarks.variational manywell --steps 6000 --seeds 0,1,2 --batch-size 256

Each flowkit method starts from the same flow (float64, one torch thread) and trains with
``flowkit.variational.fit``. ``normflows_reverse_kl`` is normflows' reverse KL
(``NormalizingFlow.reverse_kld``) on normflows' RealNVP (``MaskedAffineFlow``, separate scale and
shift MLPs, both zero-initialised so that it too starts as its base) whose hidden width is
chosen to match flowkit's parameter count, with the same halves as masks, the same x / 20 on
GMM-40, the same Adam settings, gradient clip, batch size and steps. One JSON line per run
reports the CPU seconds, the parameter count, log Z from importance sampling with 10,000 flow
samples (its error where the target's log Z is known) with its standard error and effective
sample size, and for GMM-40 the number of modes that 10,000 flow samples reach
(``modes_1``/``modes_10``: at least 1 and at least 10 samples within 3 sigma of a mean). This
measures quality, not speed. The normflows rows need ``normflows``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.bijectors import Affine, Compose
from flowkit.distributions import Flow
from flowkit.presets import nsf, realnvp_tabular
from flowkit.variational import (
    AISConfig,
    FitResult,
    ReplayBufferConfig,
    effective_sample_size,
    fit,
    importance,
)
from flowkit.variational.targets import Funnel, GaussianMixture, ManyWell, Target, gmm40

NORMFLOWS = "normflows_reverse_kl"

TARGETS: dict[str, Callable[[], Target]] = {
    "gmm40": gmm40,
    "funnel": lambda: Funnel(10),
    "manywell": lambda: ManyWell(32),
}
METHODS: dict[str, dict[str, dict[str, Any]]] = {
    "gmm40": {
        "reverse_kl": {"objective": "reverse_kl"},
        "fab": {
            "objective": "fab",
            "ais": AISConfig(
                num_intermediate=1, transition="metropolis", step_size=5.0, adapt_step_size=False
            ),
            "buffer": ReplayBufferConfig(),
        },
        "fab_hmc": {
            "objective": "fab",
            "ais": AISConfig(num_intermediate=2, transition="hmc", step_size=1.0, leapfrog_steps=5),
            "buffer": ReplayBufferConfig(),
        },
        NORMFLOWS: {},
    },
    "funnel": {
        "reverse_kl": {"objective": "reverse_kl"},
        "alpha_2": {"objective": "alpha_2"},
        "fab": {
            "objective": "fab",
            "ais": AISConfig(num_intermediate=2, transition="hmc", step_size=0.5, leapfrog_steps=5),
            "buffer": ReplayBufferConfig(),
        },
        NORMFLOWS: {},
    },
    "manywell": {
        "reverse_kl": {"objective": "reverse_kl"},
        "alpha_2": {"objective": "alpha_2"},
        # The FAB paper's many-well settings (lollcat/fab-torch, experiments/config/many_well.yaml):
        # 4 intermediate distributions, HMC with 5 leapfrog steps from step size 1, adapted
        # towards acceptance 0.65 (here by the proportional rule, which needs a few runs where
        # FAB's 1.05 per run needs dozens), the prioritised buffer with 8 updates per AIS run,
        # at least 32 batches before the first step and at most 250; the weight adjustment
        # q_old / q clipped at 10 as in the code's other configurations (unclipped, it overflows
        # on samples whose density fell by over 709 nats and the step is skipped).
        "fab": {
            "objective": "fab",
            "ais": AISConfig(
                num_intermediate=4,
                transition="hmc",
                step_size=1.0,
                leapfrog_steps=5,
                adaptation_rate=1.0,
            ),
            "buffer": lambda batch_size: ReplayBufferConfig(
                updates_per_ais=8,
                min_length=32 * batch_size,
                capacity=250 * batch_size,
                max_adjustment=10.0,
            ),
        },
        NORMFLOWS: {},
    },
}
# The optimizer's settings per target, as the recorded runs used them.
LEARNING_RATES = {"gmm40": 1e-3, "funnel": 1e-3, "manywell": 1e-3}
GRAD_CLIP = 100.0
# The flow per target and kind: (dimension, couplings, hidden width of flowkit's two hidden
# layers); ``DEFAULT_FLOWS`` names the kind each target uses unless ``--flow`` says otherwise.
FLOWS = {
    "realnvp": {"gmm40": (2, 8, 64), "funnel": (10, 8, 64), "manywell": (32, 10, 128)},
    "nsf": {"gmm40": (2, 4, 64), "funnel": (10, 4, 64), "manywell": (32, 4, 64)},
}
# Many-well: a rational-quadratic spline turns one Gaussian coordinate into a bimodal one, which
# affine couplings can only approximate through many layers (the FAB paper's RealNVP needs about
# 2,000 times this benchmark's budget, see BENCHMARKS.md).
DEFAULT_FLOWS = {"gmm40": "realnvp", "funnel": "realnvp", "manywell": "nsf"}
# The splines' interval [-B, B] (both wells of the many-well lie inside [-2.5, 2.5]).
SPLINE_BINS = 8
SPLINE_TAIL_BOUND = 4.0
# GMM-40's means fill [-40, 40]^2: the flow divides x by this first, so that it starts as
# N(0, 20^2 I) over the box instead of N(0, I) at its centre.
GMM40_SCALE = 20.0
EVALUATION_SAMPLES = 10_000


def make_flow(target_name: str, seed: int, kind: str | None = None) -> Flow:
    """flowkit's flow of ``kind`` for the target (float64), the same for every objective."""
    kind = kind or DEFAULT_FLOWS[target_name]
    dim, couplings, hidden = FLOWS[kind][target_name]
    if kind == "nsf":
        inner = nsf(
            dim,
            transforms=couplings,
            bins=SPLINE_BINS,
            tail_bound=SPLINE_TAIL_BOUND,
            hidden_features=(hidden, hidden),
            seed=seed,
        )
    else:
        inner = realnvp_tabular(
            dim,
            transforms=couplings,
            hidden_features=(hidden, hidden),
            normalization=None,
            seed=seed,
        )
    if target_name != "gmm40":
        return inner.double()
    # Data -> latent: x / 20 first.
    bijector = Compose(Affine(shape=(2,), scale=1 / GMM40_SCALE, event_rank=1), inner.bijector)
    return Flow(inner.base, bijector).double()


def parameter_count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters() if parameter.requires_grad)


def run(
    target_name: str,
    method: str,
    steps: int,
    seed: int,
    batch_size: int,
    seconds: float | None = None,
    kind: str | None = None,
) -> tuple[dict[str, Any], FitResult | None]:
    """One training run and its evaluation: the JSON record and flowkit's fit history.

    ``seconds`` stops training after the step that passes that wall time (equal-time
    comparisons; ``steps`` is then a cap and the record says how many ran).
    """
    target = TARGETS[target_name]()
    kind = kind or DEFAULT_FLOWS[target_name]
    history = None
    if method == NORMFLOWS:
        model, cpu, wall, taken, skipped = _train_normflows(
            target_name, target, steps, seed, batch_size, seconds, kind
        )
        torch.manual_seed(2000 + seed)
        log_weights = _normflows_log_weights(model, target)
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            samples = model.sample(EVALUATION_SAMPLES)[0]
        parameters = parameter_count(model)
    else:
        flow = make_flow(target_name, seed, kind)
        start, started = time.process_time(), time.perf_counter()
        history = fit(
            flow,
            target,
            steps=steps,
            batch_size=batch_size,
            lr=LEARNING_RATES[target_name],
            grad_clip=GRAD_CLIP,
            seed=seed,
            progress=False,
            max_seconds=seconds,
            **_settings(target_name, method, batch_size),
        )
        cpu, wall = time.process_time() - start, time.perf_counter() - started
        taken, skipped = history.steps, history.skipped_steps
        log_weights = importance(flow, target, EVALUATION_SAMPLES, seed=2000 + seed).log_weights
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            samples = flow.sample(EVALUATION_SAMPLES)
        parameters = parameter_count(flow)
    log_z, log_z_se, ess = _summary(log_weights)
    record: dict[str, Any] = {
        "target": target_name,
        "method": method,
        "flow": kind,
        "steps": taken,
        "budget_s": seconds,
        "batch_size": batch_size,
        "seed": seed,
        "parameters": parameters,
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "log_z_error": round(log_z - float(target.log_z), 4) if target.log_z is not None else None,
        "log_z_se": round(log_z_se, 4),
        "ess": round(ess, 4),
        "skipped_steps": skipped,
    }
    if isinstance(target, GaussianMixture):
        record["modes_1"] = target.modes_found(samples)
        record["modes_10"] = target.modes_found(samples, minimum=10)
    return record, history


def _settings(target_name: str, method: str, batch_size: int) -> dict[str, Any]:
    """The method's arguments of ``fit``; a buffer given per batch size is built for this one."""
    settings = dict(METHODS[target_name][method])
    if callable(settings.get("buffer")):
        settings["buffer"] = settings["buffer"](batch_size)
    return settings


def _summary(log_weights: Tensor) -> tuple[float, float, float]:
    """log Z, its delta-method standard error and the ESS fraction, as ``importance`` gives them."""
    log_weights = log_weights.double()
    shift = log_weights.max()
    relative = torch.exp(log_weights - shift)
    mean = relative.mean()
    count = log_weights.shape[0]
    log_z = float(shift) + math.log(float(mean))
    log_z_se = float(relative.std()) / (math.sqrt(count) * float(mean))
    return log_z, log_z_se, float(effective_sample_size(log_weights)) / count


def _normflows_model(target_name: str, target: Target, seed: int, kind: str) -> nn.Module:
    """normflows' flow of ``kind`` with flowkit's start and (within 2 %) parameter count."""
    import normflows as nf

    dim, couplings, _ = FLOWS[kind][target_name]
    wanted = parameter_count(make_flow(target_name, seed, kind))
    build = _normflows_splines if kind == "nsf" else _normflows_realnvp
    hidden = min(
        range(4, 513), key=lambda width: abs(parameter_count(build(dim, couplings, width)) - wanted)
    )
    torch.manual_seed(seed)
    flows = build(dim, couplings, hidden)
    if target_name == "gmm40":
        flows.append(_FixedScale(GMM40_SCALE))
    base = nf.distributions.DiagGaussian(dim, trainable=False)
    return nf.NormalizingFlow(base, list(flows), _NormflowsTarget(target)).double()


def _normflows_realnvp(dim: int, couplings: int, hidden: int) -> nn.ModuleList:
    """normflows' RealNVP (latent to data) with flowkit's halves as masks, zero-initialised."""
    import normflows as nf

    # normflows' flows map latent to data; flowkit's first kept half is normflows' last masked one.
    first = torch.cat([torch.ones(dim // 2), torch.zeros(dim - dim // 2)])
    flows = nn.ModuleList()
    for k in reversed(range(couplings)):
        mask = first if k % 2 == 0 else 1 - first
        scale = nf.nets.MLP([dim, hidden, hidden, dim], init_zeros=True)
        shift = nf.nets.MLP([dim, hidden, hidden, dim], init_zeros=True)
        flows.append(nf.flows.MaskedAffineFlow(mask, shift, scale))
    return flows


def _normflows_splines(dim: int, couplings: int, hidden: int) -> nn.ModuleList:
    """normflows' rational-quadratic spline couplings (its residual conditioners, two blocks)."""
    import normflows as nf

    return nn.ModuleList(
        nf.flows.CoupledRationalQuadraticSpline(
            dim,
            2,
            hidden,
            num_bins=SPLINE_BINS,
            tail_bound=SPLINE_TAIL_BOUND,
            reverse_mask=bool(k % 2),
        )
        for k in range(couplings)
    )


class _FixedScale(nn.Module):
    """x = c z in normflows' latent-to-data convention, with its log-determinant."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        log_det = torch.full(z.shape[:1], z.shape[1] * math.log(self.scale), dtype=z.dtype)
        return self.scale * z, log_det


class _NormflowsTarget(nn.Module):
    """A flowkit target as normflows' ``NormalizingFlow.p`` (``log_prob`` is unnormalised)."""

    def __init__(self, target: Target) -> None:
        super().__init__()
        self.target = target

    def log_prob(self, x: Tensor) -> Tensor:
        return self.target(x)


def _train_normflows(
    target_name: str,
    target: Target,
    steps: int,
    seed: int,
    batch_size: int,
    seconds: float | None,
    kind: str,
) -> tuple[nn.Module, float, float, int, int]:
    """normflows' own loop: reverse_kld, skip a non-finite loss, clip, Adam.

    Returns the model, CPU and wall seconds, steps taken and steps skipped.
    """
    model = _normflows_model(target_name, target, seed, kind)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATES[target_name])
    skipped = taken = 0
    start, started = time.process_time(), time.perf_counter()
    while taken < steps and (seconds is None or time.perf_counter() - started < seconds):
        taken += 1
        optimizer.zero_grad()
        loss = model.reverse_kld(batch_size)
        if not bool(torch.isfinite(loss)):
            skipped += 1
            continue
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
    return model, time.process_time() - start, time.perf_counter() - started, taken, skipped


@torch.no_grad()
def _normflows_log_weights(model: nn.Module, target: Target) -> Tensor:
    x, log_q = model.sample(EVALUATION_SAMPLES)
    return target(x) - log_q


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(METHODS))
    parser.add_argument("--steps", type=int, default=2000, help="steps (a cap with --seconds)")
    parser.add_argument(
        "--seconds", type=float, help="train every method for this wall time (equal-time runs)"
    )
    parser.add_argument(
        "--flow", choices=sorted(FLOWS), help="the flow (default: the target's, DEFAULT_FLOWS)"
    )
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", help="comma-separated methods (default: all of the target's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = args.methods.split(",") if args.methods else list(METHODS[args.target])
    for seed in (int(seed) for seed in args.seeds.split(",")):
        for method in methods:
            record, _ = run(
                args.target, method, args.steps, seed, args.batch_size, args.seconds, args.flow
            )
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

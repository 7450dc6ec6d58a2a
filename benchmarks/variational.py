"""FAB against the reverse KL at equal steps on GMM-40 and the 32-dimensional many-well.

    nice python -m benchmarks.variational gmm40 --steps 2000 --seeds 0,1,2
    nice python -m benchmarks.variational manywell --steps 600 --seeds 0 --batch-size 256

Each method starts from the same flow (float64, one torch thread) and trains with
``flowkit.variational.fit``; one JSON line per run reports the CPU seconds, ``importance``'s log Z
(its error where the target's log Z is known) with its standard error and effective sample size
over 10,000 flow samples, and for GMM-40 the number of modes that 10,000 flow samples reach
(``modes_found``, at least 1 and at least 10 samples per mode). This measures quality, not speed.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import torch

from flowkit.bijectors import Affine, Compose
from flowkit.distributions import Flow
from flowkit.presets import realnvp_tabular
from flowkit.variational import AISConfig, ReplayBufferConfig, fit, importance
from flowkit.variational.targets import ManyWell, gmm40

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
    },
    "manywell": {
        "reverse_kl": {"objective": "reverse_kl"},
        "fab": {
            "objective": "fab",
            "ais": AISConfig(num_intermediate=4, transition="hmc", step_size=1.0, leapfrog_steps=5),
            "buffer": ReplayBufferConfig(updates_per_ais=8),
        },
        "fab_small_step": {
            "objective": "fab",
            "ais": AISConfig(num_intermediate=4, transition="hmc", step_size=0.1, leapfrog_steps=5),
            "buffer": ReplayBufferConfig(updates_per_ais=8, max_adjustment=10.0),
        },
    },
}
# The optimizer's settings per target, as the recorded runs used them.
LEARNING_RATES = {"gmm40": 1e-3, "manywell": 3e-4}
EVALUATION_SAMPLES = 10_000


def make_flow(target_name: str, seed: int) -> Flow:
    if target_name == "gmm40":
        inner = realnvp_tabular(
            2, transforms=8, hidden_features=(64, 64), normalization=None, seed=seed
        )
        # Data -> latent: x / 20 first, so the initial flow is N(0, 20^2 I) over the box.
        bijector = Compose(Affine(shape=(2,), scale=1 / 20, event_rank=1), inner.bijector)
        return Flow(inner.base, bijector).double()
    return realnvp_tabular(
        32, transforms=10, hidden_features=(128, 128), normalization=None, seed=seed
    ).double()


def run(target_name: str, method: str, steps: int, seed: int, batch_size: int) -> dict[str, Any]:
    target = gmm40() if target_name == "gmm40" else ManyWell(32)
    flow = make_flow(target_name, seed)
    start = time.process_time()
    result = fit(
        flow,
        target,
        steps=steps,
        batch_size=batch_size,
        lr=LEARNING_RATES[target_name],
        grad_clip=100.0,
        seed=seed,
        progress=False,
        **METHODS[target_name][method],
    )
    cpu = time.process_time() - start
    estimate = importance(flow, target, EVALUATION_SAMPLES, seed=2000 + seed)
    record: dict[str, Any] = {
        "target": target_name,
        "method": method,
        "steps": steps,
        "batch_size": batch_size,
        "seed": seed,
        "cpu_s": round(cpu, 1),
        "log_z_error": round(estimate.log_z - float(target.log_z), 4),
        "log_z_se": round(estimate.log_z_std_error, 4),
        "ess": round(estimate.ess_fraction, 4),
        "skipped_steps": result.skipped_steps,
    }
    if target_name == "gmm40":
        torch.manual_seed(1000 + seed)
        with torch.no_grad():
            samples = flow.sample(EVALUATION_SAMPLES)
        record["modes_1"] = target.modes_found(samples)
        record["modes_10"] = target.modes_found(samples, minimum=10)
    return record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("target", choices=sorted(METHODS))
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default: 0)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--methods", help="comma-separated methods (default: all of the target's)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    methods = args.methods.split(",") if args.methods else list(METHODS[args.target])
    for seed in (int(seed) for seed in args.seeds.split(",")):
        for method in methods:
            record = run(args.target, method, args.steps, seed, args.batch_size)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()

"""Circular spline flows on a 2-D torus toy: flowkit's ncsf against zuko's NCSF, equal steps.

Prints one JSON line per run: model, seed, parameters, test NLL (nats) and milliseconds per
training step. The toy is two coupled torsion angles whose mass straddles the +-pi seam.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch


def torsions(count: int, seed: int) -> torch.Tensor:
    """Two coupled angles: phi ~ a two-component von Mises mixture, psi around phi + 2."""
    rng = np.random.default_rng(seed)
    component = rng.random(count) < 0.6
    phi = np.where(component, rng.vonmises(3.0, 6.0, count), rng.vonmises(-1.0, 3.0, count))
    psi = np.angle(np.exp(1j * (phi + 2.0 + rng.vonmises(0.0, 10.0, count))))
    return torch.as_tensor(np.stack([phi, psi], axis=1), dtype=torch.float32)


def build(name: str, seed: int, hidden: int = 64) -> tuple[torch.nn.Module, object]:
    """The model (two hidden layers of ``hidden``) and a function giving its log-density."""
    torch.manual_seed(seed)
    if name == "zuko-ncsf":
        import zuko

        flow = zuko.flows.NCSF(2, bins=8, transforms=3, hidden_features=(hidden, hidden))
        return flow, lambda x: flow().log_prob(x)
    import flowkit

    autoregressive = name == "flowkit-ncsf-ar"
    model = flowkit.presets.ncsf(
        2, transforms=3, bins=8, hidden_features=(hidden, hidden), autoregressive=autoregressive
    )
    return model, model.log_prob


def run(name: str, seed: int, steps: int, batch: int) -> dict:
    train, test = torsions(50_000, seed), torsions(20_000, 1000 + seed)
    model, log_prob = build(name, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        rows = torch.randint(0, len(train), (batch,), generator=generator)
        loss = -log_prob(train[rows]).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        nll = -float(torch.cat([log_prob(part) for part in test.split(5000)]).mean())
    return {
        "model": name,
        "seed": seed,
        "parameters": sum(p.numel() for p in model.parameters()),
        "steps": steps,
        "batch": batch,
        "test_nll": round(nll, 4),
        "ms_per_step": round(1000 * seconds / steps, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--quick", action="store_true", help="a few steps, to check it runs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    steps = 5 if args.quick else args.steps
    for seed in args.seeds:
        for name in ("flowkit-ncsf", "flowkit-ncsf-ar", "zuko-ncsf"):
            print(json.dumps(run(name, seed, steps, args.batch)), flush=True)
    print(json.dumps({"uniform_nll": round(2 * math.log(2 * math.pi), 4)}))


if __name__ == "__main__":
    main()

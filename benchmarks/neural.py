"""flowkit's NAF and UMNN against zuko's NAF and UNAF on a 2-D toy: test NLL and time per step.

Each pair gets the same number of steps, hidden layers, optimiser, batches and data; flowkit's
conditioner width is chosen so that its trainable parameter count is as close as possible to the
zuko model's at zuko's defaults. One JSON line per run on stdout.

Usage: ``python3 benchmarks/neural.py --steps 500 --seeds 0``
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from flowkit.data.toy import eight_gaussians, two_moons
from flowkit.presets import naf, umnn

LogProb = Callable[[Tensor], Tensor]

DATASETS: dict[str, Callable[[int, torch.Generator], Tensor]] = {
    "two-moons": lambda n, g: two_moons(n, generator=g),
    "eight-gaussians": lambda n, g: eight_gaussians(n, generator=g),
}


def _parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def _zuko(kind: str, transforms: int, features: int = 2) -> tuple[nn.Module, LogProb]:
    import zuko

    make = zuko.flows.NAF if kind == "naf" else zuko.flows.UNAF
    flow = make(features=features, transforms=transforms)
    return flow, lambda x: flow().log_prob(x)


def _flowkit(
    kind: str, transforms: int, width: int, shared: bool = False, features: int = 2
) -> tuple[nn.Module, Callable[[Tensor], Tensor]]:
    if kind == "naf":
        flow = naf(features, transforms=transforms, sigmoids=16, hidden_features=(width, width))
    else:
        flow = umnn(
            features,
            transforms=transforms,
            hidden_features=(width, width),
            shared_integrand=shared,
        )
    return flow, flow.log_prob


def _matched_width(
    kind: str, transforms: int, target: int, shared: bool = False, features: int = 2
) -> int:
    widths = range(8, 257, 4)
    return min(
        widths,
        key=lambda w: abs(_parameters(_flowkit(kind, transforms, w, shared, features)[0]) - target),
    )


def run(
    library: str,
    kind: str,
    dataset: str,
    seed: int,
    steps: int,
    batch: int,
    shared: bool = False,
) -> dict:
    """Train one model; return its test NLL, parameter count and mean time per step."""
    transforms = 3
    torch.manual_seed(seed)
    zuko_flow, _ = _zuko(kind, transforms)
    target = _parameters(zuko_flow)
    width = _matched_width(kind, transforms, target, shared)
    torch.manual_seed(seed)
    if library == "zuko":
        model, log_prob = _zuko(kind, transforms)
    else:
        model, log_prob = _flowkit(kind, transforms, width, shared)
    generator = torch.Generator().manual_seed(1000 + seed)
    sample = DATASETS[dataset]
    test = sample(20_000, torch.Generator().manual_seed(99))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start = time.perf_counter()
    for _ in range(steps):
        loss = -log_prob(sample(batch, generator)).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    seconds = (time.perf_counter() - start) / steps
    with torch.no_grad():
        nll = float(torch.cat([-log_prob(chunk) for chunk in test.split(5000)]).mean())
    return {
        "library": library,
        "model": kind,
        "dataset": dataset,
        "seed": seed,
        "steps": steps,
        "batch_size": batch,
        "shared_integrand": shared if library == "flowkit" and kind == "umnn" else None,
        "parameters": _parameters(model),
        "zuko_parameters": target,
        "test_nll": nll,
        "seconds_per_step": seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--datasets", nargs="+", default=["two-moons"], choices=list(DATASETS))
    parser.add_argument("--models", nargs="+", default=["naf", "umnn"], choices=["naf", "umnn"])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--libraries", nargs="+", default=["flowkit", "zuko"], choices=["flowkit", "zuko"]
    )
    parser.add_argument(
        "--shared-integrand",
        action="store_true",
        help="flowkit's UMNN with one integrand network per step (the earlier layout)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for dataset in args.datasets:
        for kind in args.models:
            for seed in args.seeds:
                for library in args.libraries:
                    record = run(
                        library,
                        kind,
                        dataset,
                        seed,
                        args.steps,
                        args.batch_size,
                        args.shared_integrand,
                    )
                    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

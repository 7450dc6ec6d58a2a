"""Flow matching against maximum likelihood for the same continuous flow, and zuko's CNF.

On two moons (8,192 training and 1,024 test points, standardised), each run trains for a fixed
budget of training wall time (evaluation excluded) with Adam at 1e-3 and batches of 256, and
evaluates the exact test NLL (nats, in the data's units; dopri5 at 1e-5, exact trace) every
``--eval-every`` seconds of training. flowkit's runs share one architecture (``presets.cnf``, a
64-64 softplus field): by maximum likelihood (exact trace through the solve of ``--method``,
dopri5 at 1e-5 by default, FFJORD's, or rk4 with steps of 0.1) or by flow matching (no solve).
zuko's ``CNF`` (same widths, its own defaults: dopri5, exact trace) trains by maximum
likelihood. One JSON line per run:
``{"run", "seed", "budget_s", "method", "history": [[seconds, steps, test_nll], ...]}``.

    python -m benchmarks.continuous --budget 75
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import torch
from torch import Tensor

from flowkit.data.toy import two_moons
from flowkit.presets import cnf

RUNS = ("likelihood", "flow_matching", "zuko")


def _data(seed: int) -> tuple[Tensor, Tensor, float]:
    generator = torch.Generator().manual_seed(seed)
    train, test = two_moons(8192, generator=generator), two_moons(1024, generator=generator)
    mean, std = train.mean(0), train.std(0)
    return (train - mean) / std, (test - mean) / std, float(std.log().sum())


def _train(
    step: Callable[[Tensor], Tensor],
    parameters: list[Tensor],
    evaluate: Callable[[], float],
    train: Tensor,
    budget: float,
    eval_every: float,
    seed: int,
) -> list[tuple[float, int, float]]:
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    history: list[tuple[float, int, float]] = []
    elapsed, steps, next_eval = 0.0, 0, 0.0
    while elapsed < budget:
        if elapsed >= next_eval:
            history.append((round(elapsed, 2), steps, evaluate()))
            next_eval += eval_every
        start = time.perf_counter()
        batch = train[torch.randint(0, len(train), (256,), generator=generator)]
        loss = step(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        elapsed += time.perf_counter() - start
        steps += 1
    history.append((round(elapsed, 2), steps, evaluate()))
    return history


def run(name: str, seed: int, budget: float, eval_every: float, method: str = "dopri5") -> dict:
    """One run's history of (training seconds, steps, exact test NLL)."""
    train, test, log_std = _data(seed)
    torch.manual_seed(seed)
    if name == "zuko":
        import zuko

        peer = zuko.flows.CNF(2, hidden_features=(64, 64))

        def peer_nll() -> float:
            with torch.no_grad():
                return float(-peer().log_prob(test).mean()) + log_std

        history = _train(
            lambda x: -peer().log_prob(x).mean(),
            list(peer.parameters()),
            peer_nll,
            train,
            budget,
            eval_every,
            seed,
        )
    else:
        options = dict(hidden_features=(64, 64), seed=seed)
        solver = dict(method="rk4", step_size=0.1) if method == "rk4" else dict(method="dopri5")
        flow = cnf(2, objective=name, **solver, **options)
        exact = cnf(2, method="dopri5", rtol=1e-5, atol=1e-5, **options)

        def nll() -> float:
            exact.load_state_dict(flow.state_dict())
            with torch.no_grad():
                return float(-exact.log_prob(test).mean()) + log_std

        def loss(x: Tensor) -> Tensor:
            replaced = flow.training_loss(x, None)
            return replaced.loss if replaced is not None else -flow.log_prob(x).mean()

        history = _train(loss, list(flow.parameters()), nll, train, budget, eval_every, seed)
    return {"run": name, "seed": seed, "budget_s": budget, "history": history}


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print one JSON line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=75.0, help="training seconds per run")
    parser.add_argument("--eval-every", type=float, default=10.0, help="training seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--method", choices=("dopri5", "rk4"), default="dopri5")
    parser.add_argument("--quick", action="store_true", help="two seconds per run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budget = 2.0 if args.quick else args.budget
    eval_every = 1.0 if args.quick else args.eval_every
    for seed in args.seeds:
        for name in args.runs:
            record = run(name, seed, budget, eval_every, args.method)
            print(json.dumps({**record, "method": args.method}), flush=True)


if __name__ == "__main__":
    main()

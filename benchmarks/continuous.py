"""Flow matching against maximum likelihood for one continuous flow; zuko's and torchflows' CNFs.

On two moons (8,192 training and 1,024 test points, standardised), each run trains with Adam at
1e-3 and batches of 256, either for a fixed budget of training wall time (evaluation excluded),
evaluating the exact test NLL (nats, in the data's units; dopri5 at 1e-5, exact trace) every
``--eval-every`` seconds of training, or, with ``--steps``, for that many steps, evaluated at the
end. flowkit's runs share one architecture (``presets.cnf``, a 64-64 field with the preset's
activation, ELU since commit b44446d and softplus in the runs before it): by maximum likelihood
(exact trace through the solve of ``--method``, dopri5 at 1e-5 by default, FFJORD's, or rk4 with
steps of 0.1) or by flow matching (no solve). zuko's ``CNF`` (same widths, its own
defaults: dopri5, exact trace) trains by maximum likelihood. torchflows' ``FFJORD`` (a tanh field
of two hidden layers, 66 wide so that its parameter count is within 1% of flowkit's, since its
time enters as one concatenated input rather than an embedding; its own defaults: one rk4 step
across [0, 1], Hutchinson's trace with one Gaussian probe) trains by maximum likelihood on the
loss of its own ``fit``, the mean negative log-likelihood per dimension plus its regularisation.
Its test NLL is computed here from its field with the same exact solve as the others'; its own
``log_prob`` (its solver, the Hutchinson estimate) on the test set is reported beside it as
``own_estimate``. torchflows 1.2.1 forms the Hutchinson product ``e^T df/dx`` under
``torch.no_grad``, so its log-determinant passes no gradient to the field's parameters (checked:
every parameter's gradient of the log-determinant is exactly zero) and its training follows the
base log-density of the latent alone. One JSON line per run: ``{"run", "seed", "budget_s",
"steps", "parameters", "method", "history": [[seconds, steps, test_nll], ...]}`` (torchflows' also
``own_estimate``).

    python -m benchmarks.continuous --budget 75
    python -m benchmarks.continuous --steps 250 --seeds 0 1 2 --runs likelihood zuko torchflows
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from benchmarks.common import batch_jacobian
from flowkit.data.toy import two_moons
from flowkit.presets import cnf

RUNS = ("likelihood", "flow_matching", "zuko", "torchflows")


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
    total_steps: int | None = None,
) -> list[tuple[float, int, float]]:
    """Train on batches of 256 until ``budget`` seconds, or ``total_steps`` steps if given."""
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    history: list[tuple[float, int, float]] = []
    elapsed, steps, next_eval = 0.0, 0, 0.0
    while steps < total_steps if total_steps is not None else elapsed < budget:
        if total_steps is None and elapsed >= next_eval:
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


def _torchflows_exact_nll(flow: torch.nn.Module, test: Tensor) -> float:
    """Mean NLL of torchflows' CNF under the exact trace, solved like the others' evaluation.

    torchflows maps data (t = 1) to latent (t = 0) and adds the integral of the divergence from 1
    to 0 to the base log-density; the same is done here with the exact divergence.
    """
    from torchdiffeq import odeint

    field = flow.bijection.f.forward_model

    def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = state[0].detach().requires_grad_(True)
            velocity = field(t, x)
            divergence = batch_jacobian(velocity, x).diagonal(dim1=1, dim2=2).sum(-1)
        return velocity.detach(), divergence.detach()

    times = torch.tensor([1.0, 0.0])
    initial = (test, torch.zeros(len(test)))
    z, log_det = (s[-1] for s in odeint(dynamics, initial, times, rtol=1e-5, atol=1e-5))
    return float(-(flow.base_log_prob(z) + log_det).mean())


def _torchflows_run(
    seed: int,
    train: Tensor,
    test: Tensor,
    log_std: float,
    budget: float,
    eval_every: float,
    total_steps: int | None,
) -> tuple[list[tuple[float, int, float]], int, float]:
    from torchflows.bijections.continuous.ffjord import FFJORD
    from torchflows.flows import ContinuousFlow

    nn_kwargs = dict(hidden_size=66, n_hidden_layers=1)
    peer = ContinuousFlow(FFJORD((2,), nn_kwargs=nn_kwargs))

    def loss(x: Tensor) -> Tensor:
        # What torchflows' own ``fit`` minimises (ContinuousFlow._base_batch_loss, unit weights).
        peer.train()
        log_prob, *aux = peer.log_prob(x, return_aux=True)
        return -log_prob.mean() / peer.event_size + peer.regularization(*aux)

    def nll() -> float:
        peer.eval()
        return _torchflows_exact_nll(peer, test) + log_std

    history = _train(
        loss, list(peer.parameters()), nll, train, budget, eval_every, seed, total_steps
    )
    peer.eval()
    torch.manual_seed(seed)
    own_estimate = float(-peer.log_prob(test)[0].detach().mean()) + log_std
    parameters = sum(p.numel() for p in peer.parameters() if p.requires_grad)
    return history, parameters, own_estimate


def _flowkit_cnf(
    features: int, objective: str, seed: int, method: str = "dopri5", **settings: Any
) -> tuple[torch.nn.Module, Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]]:
    """flowkit's cnf trained by ``objective``: the flow, its training loss, its exact log-density.

    ``settings`` go to the trained flow only; the log-density copies its weights into a twin
    solved by dopri5 at 1e-5.
    """
    options = dict(hidden_features=(64, 64), seed=seed)
    solver = dict(method="rk4", step_size=0.1) if method == "rk4" else dict(method="dopri5")
    flow = cnf(features, objective=objective, **solver, **options, **settings)
    exact = cnf(features, method="dopri5", rtol=1e-5, atol=1e-5, **options)

    def exact_log_prob(x: Tensor) -> Tensor:
        exact.load_state_dict(flow.state_dict())
        return exact.log_prob(x)

    def loss(x: Tensor) -> Tensor:
        replaced = flow.training_loss(x, None)
        return replaced.loss if replaced is not None else -flow.log_prob(x).mean()

    return flow, loss, exact_log_prob


def run(
    name: str,
    seed: int,
    budget: float,
    eval_every: float,
    method: str = "dopri5",
    total_steps: int | None = None,
) -> dict:
    """One run's history of (training seconds, steps, exact test NLL)."""
    train, test, log_std = _data(seed)
    torch.manual_seed(seed)
    extra: dict = {}
    if name == "torchflows":
        history, parameters, own_estimate = _torchflows_run(
            seed, train, test, log_std, budget, eval_every, total_steps
        )
        extra = {"own_estimate": own_estimate}
    elif name == "zuko":
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
            total_steps,
        )
        parameters = sum(p.numel() for p in peer.parameters())
    else:
        flow, loss, exact_log_prob = _flowkit_cnf(2, name, seed, method)

        def nll() -> float:
            with torch.no_grad():
                return float(-exact_log_prob(test).mean()) + log_std

        history = _train(
            loss, list(flow.parameters()), nll, train, budget, eval_every, seed, total_steps
        )
        parameters = sum(p.numel() for p in flow.parameters())
    return {
        "run": name,
        "seed": seed,
        "budget_s": None if total_steps is not None else budget,
        "steps": total_steps,
        "parameters": parameters,
        "history": history,
        **extra,
    }


def main(argv: list[str] | None = None) -> None:
    """Run the comparison and print one JSON line per run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=75.0, help="training seconds per run")
    parser.add_argument("--eval-every", type=float, default=10.0, help="training seconds")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--runs", nargs="+", choices=RUNS, default=list(RUNS))
    parser.add_argument("--method", choices=("dopri5", "rk4"), default="dopri5")
    parser.add_argument(
        "--steps", type=int, default=None, help="train each run this many steps (equal steps)"
    )
    parser.add_argument("--quick", action="store_true", help="two seconds per run")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    budget = 2.0 if args.quick else args.budget
    eval_every = 1.0 if args.quick else args.eval_every
    for seed in args.seeds:
        for name in args.runs:
            record = run(name, seed, budget, eval_every, args.method, args.steps)
            print(json.dumps({**record, "method": args.method}), flush=True)


if __name__ == "__main__":
    main()

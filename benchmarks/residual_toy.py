"""flowkit's residual flow against normflows' and torchflows' at matched sizes and equal steps.

    nice python -m benchmarks.residual_toy --toy two_moons --steps 500 --seeds 0,1,2

flowkit's and normflows' flows stack ``blocks`` pairs of ActNorm and an invertible residual block
whose network is a LipSwish MLP ``2 -> hidden -> hidden -> 2`` with Lipschitz bound 0.97 per
layer, trained with ResFlow's Russian-roulette log-determinant (geometric p = 0.5, two exact
terms, Neumann gradient), Adam at ``lr``, the same batches. Test NLL (nats) is exact for all three
libraries: flowkit evaluates with the brute-force Jacobian in eval mode; normflows' residual block
does the same for 2-D inputs in eval mode (the Residual Flows code's rule); torchflows' is
computed here (below).

normflows' spectral normalisation divides each weight by ``u^T W v`` with the vectors ``u, v`` left
as they are until ``nf.utils.update_lipschitz`` advances them; training scripts written for it call
``update_lipschitz(model, 5)`` after every step, and so does this benchmark (flowkit advances its
vectors by itself). Without it the vectors stay those of the initial weights, the bound holds for
no trained weight, and the "residual" blocks stop being invertible (after 500 steps at seed 0 the
four blocks' networks had Lipschitz bounds 4.8, 1.1, 12.3 and 6.7), so their NLL is not a
normalised density's. normflows draws its Russian-roulette lengths from numpy's global generator,
seeded here with the run's seed. Each run reports the largest Lipschitz bound of a block's network,
the product of its layers' spectral norms, as ``max_lipschitz``: below 1 for an invertible flow.

torchflows' ``ResFlow`` (``--libraries torchflows``) is its own architecture: a learned
elementwise affine map, then per block a ``ResFlowBlock`` (its Russian-roulette log-determinant:
geometric p = 0.5, at least one term, the gradient by recomputation) and another elementwise
affine map, with the same batches and optimiser. Its block network is built from its
``SpectralLinear`` layers (each weight divided by a 5-step power-iteration estimate of its
spectral norm, started afresh at every call) with tanh between them, ``2 -> hidden -> hidden ->
2`` as above: its own ``SpectralNeuralNetwork`` cannot give that shape, since it stacks
``hidden_size - 1`` hidden-to-hidden layers whatever ``n_hidden_layers`` says. It trains on the
loss of torchflows' ``fit`` (mean negative log-likelihood per dimension plus its regularisation,
zero here). Its own ``log_prob`` is the stochastic estimate in eval mode too, so its test NLL is
computed here exactly, each block's log-determinant from its brute-force Jacobian.

One JSON line per run: parameters, test NLL, ``max_lipschitz``, milliseconds per training step
(one torch thread). Needs ``normflows`` (and ``torchflows`` for its runs).
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from benchmarks.common import batch_jacobian
from flowkit import initialize
from flowkit.data import toy
from flowkit.presets import resflow

TEST_SIZE = 4000


def _flowkit_model(blocks: int, hidden: int, seed: int, data: torch.Tensor) -> torch.nn.Module:
    flow = resflow(data.shape[-1], blocks=blocks, hidden_features=(hidden, hidden), seed=seed)
    initialize(flow, data)
    return flow


def _normflows_model(blocks: int, hidden: int, seed: int, data: torch.Tensor) -> torch.nn.Module:
    import normflows as nf
    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed)
    features = data.shape[-1]
    flows = []
    for _ in range(blocks):
        net = nf.nets.LipschitzMLP(
            [features, hidden, hidden, features], init_zeros=True, lipschitz_const=0.97
        )
        flows.append(nf.flows.Residual(net, reduce_memory=True))
        flows.append(nf.flows.ActNorm(features))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(features, trainable=False), flows)
    with torch.no_grad():
        model.log_prob(data)  # ActNorm's data-dependent initialisation
    return model


def _torchflows_model(blocks: int, hidden: int, seed: int, data: torch.Tensor) -> torch.nn.Module:
    from torchflows.bijections.finite.residual.architectures import ResFlow
    from torchflows.bijections.finite.residual.iterative import ResFlowBlock, SpectralLinear
    from torchflows.flows import Flow

    torch.manual_seed(seed)
    model = Flow(ResFlow((2,), n_layers=blocks))
    for block in model.bijection.layers:
        if isinstance(block, ResFlowBlock):
            block.g = torch.nn.Sequential(
                SpectralLinear(2, hidden),
                torch.nn.Tanh(),
                SpectralLinear(hidden, hidden),
                torch.nn.Tanh(),
                SpectralLinear(hidden, 2),
            )
    return model


def _torchflows_exact_log_prob(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """torchflows' log-density with each residual block's exact log-determinant."""
    from torchflows.bijections.finite.residual.base import IterativeResidualBijection

    log_det = torch.zeros(len(x))
    for layer in model.bijection.layers:
        if isinstance(layer, IterativeResidualBijection):
            # One network call gives both the output and its Jacobian, since torchflows' spectral
            # normalisation draws a new power-iteration start at every call.
            with torch.enable_grad():
                x = x.detach().requires_grad_(True)
                g = layer.g(x)
                jacobian = torch.eye(x.shape[1]) + batch_jacobian(g, x)
            log_det = log_det + torch.linalg.slogdet(jacobian.double())[1].float()
            x = (x + g).detach()
        else:
            x, layer_log_det = layer.forward(x)
            log_det = log_det + layer_log_det.detach()
            x = x.detach()
    return model.base_log_prob(x) + log_det


def _spectral_weights(network: torch.nn.Module, name: str) -> list[torch.Tensor]:
    """The Lipschitz-normalised weights of ``network``'s linear layers."""
    if name == "flowkit":
        from flowkit.nn.lipschitz import SpectralNormLinear

        layers = [m for m in network.modules() if isinstance(m, SpectralNormLinear)]
        return [layer.normalized_weight() for layer in layers]
    if name == "normflows":
        from normflows.nets.lipschitz import InducedNormLinear

        layers = [m for m in network.modules() if isinstance(m, InducedNormLinear)]
        return [layer.compute_weight(update=False) for layer in layers]
    from torchflows.bijections.finite.residual.iterative import SpectralLinear

    layers = [m for m in network.modules() if isinstance(m, SpectralLinear)]
    return [layer.w.normalized() for layer in layers]


def _residual_networks(model: torch.nn.Module, name: str) -> list[torch.nn.Module]:
    if name == "flowkit":
        from flowkit.nn.lipschitz import LipschitzMLP

        return [m for m in model.modules() if isinstance(m, LipschitzMLP)]
    if name == "normflows":
        from normflows.nets import LipschitzMLP as NormflowsMLP

        return [m for m in model.modules() if isinstance(m, NormflowsMLP)]
    from torchflows.bijections.finite.residual.base import IterativeResidualBijection

    return [m.g for m in model.modules() if isinstance(m, IterativeResidualBijection)]


def _max_lipschitz(model: torch.nn.Module, name: str) -> float:
    """The largest product of layer spectral norms over the residual networks of ``model``.

    torchflows' normalised weights depend on a random power-iteration start, so its bound is
    that of one draw.
    """
    bounds: list[float] = []
    with torch.no_grad():
        for network in _residual_networks(model, name):
            bound = 1.0
            for weight in _spectral_weights(network, name):
                bound *= float(torch.linalg.matrix_norm(weight, 2))
            bounds.append(bound)
    return max(bounds, default=0.0)


def run(name: str, toy_name: str, steps: int, seed: int, blocks: int, hidden: int) -> dict:
    sample = getattr(toy, toy_name)
    generator = torch.Generator().manual_seed(seed)
    test = sample(TEST_SIZE, generator=torch.Generator().manual_seed(10_000 + seed))
    init_batch = sample(512, generator=generator)
    build = {
        "flowkit": _flowkit_model,
        "normflows": _normflows_model,
        "torchflows": _torchflows_model,
    }[name]
    model = build(blocks, hidden, seed, init_batch)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    batches = [sample(256, generator=generator) for _ in range(steps)]
    update_lipschitz = None
    if name == "normflows":
        import normflows as nf

        update_lipschitz = nf.utils.update_lipschitz
    start = time.process_time()
    for batch in batches:
        if name == "torchflows":
            # What torchflows' own ``fit`` minimises (BaseFlow._base_batch_loss, unit weights).
            loss = -model.log_prob(batch).mean() / 2 + model.regularization()
        else:
            loss = -model.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update_lipschitz is not None:
            update_lipschitz(model, 5)
    seconds = time.process_time() - start
    model.eval()
    chunks = test.split(500)
    if name == "torchflows":
        log_prob = torch.cat([_torchflows_exact_log_prob(model, chunk) for chunk in chunks])
    else:
        log_prob = torch.cat([model.log_prob(chunk).detach() for chunk in chunks])
    return {
        "library": name,
        "toy": toy_name,
        "seed": seed,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_nll": float(-log_prob.mean()),
        "max_lipschitz": _max_lipschitz(model, name),
        "ms_per_step": 1000 * seconds / steps,
    }


def main(argv: list[str] | None = None) -> None:
    """Run each library on each seed; print one JSON line per run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--toy", default="two_moons")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--libraries", default="flowkit,normflows")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for seed in (int(s) for s in args.seeds.split(",")):
        for name in args.libraries.split(","):
            result = run(name, args.toy, args.steps, seed, args.blocks, args.hidden)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

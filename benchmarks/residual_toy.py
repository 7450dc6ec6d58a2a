"""flowkit's residual flow against normflows' at matched sizes and equal steps on a 2-D toy.

    nice python -m benchmarks.residual_toy --toy two_moons --steps 500 --seeds 0,1,2

Both flows stack ``blocks`` pairs of ActNorm and an invertible residual block whose network is a
LipSwish MLP ``2 -> hidden -> hidden -> 2`` with Lipschitz bound 0.97 per layer, trained with
ResFlow's Russian-roulette log-determinant (geometric p = 0.5, two exact terms, Neumann
gradient), Adam at ``lr``, the same batches. Test NLL (nats) is exact for both: flowkit evaluates
with the brute-force Jacobian in eval mode; normflows' residual block does the same for 2-D
inputs in eval mode (the Residual Flows code's rule).

normflows' spectral normalisation divides each weight by ``u^T W v`` with the vectors ``u, v`` left
as they are until ``nf.utils.update_lipschitz`` advances them; training scripts written for it call
``update_lipschitz(model, 5)`` after every step, and so does this benchmark (flowkit advances its
vectors by itself). Without it the vectors stay those of the initial weights, the bound holds for
no trained weight, and the "residual" blocks stop being invertible (after 500 steps at seed 0 the
four blocks' networks had Lipschitz bounds 4.8, 1.1, 12.3 and 6.7), so their NLL is not a
normalised density's. normflows draws its Russian-roulette lengths from numpy's global generator,
seeded here with the run's seed. Each run reports the largest Lipschitz bound of a block's network,
the product of its layers' spectral norms, as ``max_lipschitz``: below 1 for an invertible flow.

One JSON line per run: parameters, test NLL, ``max_lipschitz``, milliseconds per training step
(one torch thread). Needs ``normflows``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from flowkit import initialize
from flowkit.data import toy
from flowkit.presets import resflow

TEST_SIZE = 4000


def _flowkit_model(blocks: int, hidden: int, seed: int, data: torch.Tensor) -> torch.nn.Module:
    flow = resflow(2, blocks=blocks, hidden_features=(hidden, hidden), seed=seed)
    initialize(flow, data)
    return flow


def _normflows_model(blocks: int, hidden: int, seed: int, data: torch.Tensor) -> torch.nn.Module:
    import normflows as nf
    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed)
    flows = []
    for _ in range(blocks):
        net = nf.nets.LipschitzMLP([2, hidden, hidden, 2], init_zeros=True, lipschitz_const=0.97)
        flows.append(nf.flows.Residual(net, reduce_memory=True))
        flows.append(nf.flows.ActNorm(2))
    model = nf.NormalizingFlow(nf.distributions.DiagGaussian(2, trainable=False), flows)
    with torch.no_grad():
        model.log_prob(data)  # ActNorm's data-dependent initialisation
    return model


def _max_lipschitz(model: torch.nn.Module) -> float:
    """The largest product of layer spectral norms over the residual networks of ``model``."""
    from normflows.nets import LipschitzMLP as NormflowsMLP
    from normflows.nets.lipschitz import InducedNormLinear

    from flowkit.nn.lipschitz import LipschitzMLP, SpectralNormLinear

    bounds: list[float] = []
    with torch.no_grad():
        for network in model.modules():
            if isinstance(network, LipschitzMLP | NormflowsMLP):
                bound = 1.0
                for layer in network.modules():
                    if isinstance(layer, SpectralNormLinear):
                        weight = layer.normalized_weight()
                    elif isinstance(layer, InducedNormLinear):
                        weight = layer.compute_weight(update=False)
                    else:
                        continue
                    bound *= float(torch.linalg.matrix_norm(weight, 2))
                bounds.append(bound)
    return max(bounds, default=0.0)


def run(name: str, toy_name: str, steps: int, seed: int, blocks: int, hidden: int) -> dict:
    sample = getattr(toy, toy_name)
    generator = torch.Generator().manual_seed(seed)
    test = sample(TEST_SIZE, generator=torch.Generator().manual_seed(10_000 + seed))
    init_batch = sample(512, generator=generator)
    build = _flowkit_model if name == "flowkit" else _normflows_model
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
        loss = -model.log_prob(batch).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if update_lipschitz is not None:
            update_lipschitz(model, 5)
    seconds = time.process_time() - start
    model.eval()
    log_prob = torch.cat([model.log_prob(chunk).detach() for chunk in test.split(500)])
    return {
        "library": name,
        "toy": toy_name,
        "seed": seed,
        "steps": steps,
        "parameters": sum(p.numel() for p in model.parameters()),
        "test_nll": float(-log_prob.mean()),
        "max_lipschitz": _max_lipschitz(model),
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

"""flowkit's newer families against their peers: equal training time and equal steps, one run each.

    nice python -m benchmarks.families --data two-moons --seconds 60 \\
        --seeds 0,1,2 --json families.jsonl
    nice python -m benchmarks.families --data breast_cancer --seconds 60 \\
        --seeds 0,1,2 --json families.jsonl
    nice python -m benchmarks.families --data torus --pairs ncsf --seconds 60 \\
        --seeds 0,1,2 --json families.jsonl
    python -m benchmarks.families --report families.jsonl

Pairs (``--pairs``, each flowkit's preset against the peer the older scripts use, built by them):

* ``naf``: ``flowkit.presets.naf`` against zuko's ``NAF``, and ``umnn``: ``flowkit.presets.umnn``
  against zuko's ``UNAF`` (3 transforms; zuko at its defaults, flowkit's conditioner width chosen
  so that its parameter count is the closest to zuko's, as in :mod:`benchmarks.neural`);
* ``cnf``: ``flowkit.presets.cnf`` (64-64 field) trained by maximum likelihood (dopri5 at 1e-5,
  exact trace), by flow matching and by flow matching with ``coupling="ot"``, against zuko's
  ``CNF`` of the same widths at its defaults (:mod:`benchmarks.continuous`);
* ``resflow``: ``flowkit.presets.resflow`` against normflows' residual flow, both 4 blocks of
  ActNorm and a LipSwish MLP ``D -> 64 -> 64 -> D`` with Lipschitz bound 0.97, normflows'
  ``update_lipschitz(model, 5)`` after every step (:mod:`benchmarks.residual_toy`);
* ``ncsf``: ``flowkit.presets.ncsf`` against zuko's ``NCSF`` (3 transforms, 8 bins, 64-64;
  flowkit's width chosen for the closest parameter count), on the torus toy only
  (:mod:`benchmarks.circular`).

Data (``--data``): ``two-moons`` (``flowkit.data.toy``, 10,000 points), ``torus`` (two coupled
torsion angles, 10,000 points, left in radians), and scikit-learn's ``breast_cancer`` (569 rows x
30 columns) and ``wine`` (178 x 13) tables. Each is split 80/10/10 into training, validation and
test rows by a permutation drawn from a fixed seed, the same for every run, and all but the torus
are standardised with the training rows' mean and standard deviation; NLLs are in nats per row in
the data's own units (the standardisation's log-scale added back).

Each run (data, pair, model, seed) starts from ``torch.manual_seed(seed)``, trains with Adam at
1e-3 on batches of 256 rows (the whole training set when it is smaller) drawn from a generator
seeded with the seed, so that every model of a seed sees the same batches, in float32 on one torch
thread. It stops after ``--seconds`` of training time (``time.perf_counter`` around the training
steps only) or ``--steps`` steps, whichever comes first. At step 0, at steps 1, 2, 5, 10, 20, 50,
... (the same for every model), after every ``--eval-seconds`` of training time (a tenth of
``--seconds`` by default) and at the end it evaluates the validation and test NLL in eval mode
without gradients, exactly: the CNFs by a dopri5 solve at 1e-5 with the exact trace, the residual
flows by their exact Jacobians (flowkit's evaluation mode up to 64 features; normflows' own brute
force in 2-D and :func:`_exact_log_prob` above), then returns to training mode. A
non-finite loss ends the run before its update. The random states are restored after each
evaluation, so evaluating does not change the training.

Each run prints (and with ``--json`` appends to the file) one JSON line: ``data``, ``pair``,
``model``, ``seed``, ``parameters``, ``steps``, ``train_seconds``, ``ms_per_step``, ``history``
(``[train_seconds, steps, val_nll, test_nll]`` per evaluation) and ``final``, the test NLL at the
best validation NLL of the history (the early-stopping reading). ``--report`` reads such lines
and prints a Markdown table per data set: per model its parameters, milliseconds per step and
steps (means over seeds), the test NLL at equal time (``final``) per seed and its mean, and the
test NLL at equal steps: per pair and seed, ``S`` is the largest evaluation step that every model
of the pair reached, and each model's reading is the test NLL at the best validation NLL among
its evaluations at steps up to ``S``. Needs zuko and normflows for the peers and scikit-learn for
the tables.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from benchmarks import circular, continuous, neural, residual_toy
from benchmarks.common import batch_jacobian

__all__ = [
    "MODELS",
    "PAIRS",
    "Model",
    "Split",
    "best_test",
    "build",
    "load",
    "main",
    "train",
]

DATA = ("two-moons", "torus", "breast_cancer", "wine")
TABLES = ("breast_cancer", "wine")
# Points drawn from each toy before the split: 8,000 training rows, 1,000 each to evaluate.
TOY_POINTS = 10_000
# The split's permutation (and the toys' draws) come from this seed, never from a run's.
DATA_SEED = 20_240
SPLIT = (0.8, 0.1)
BATCH_SIZE = 256
LEARNING_RATE = 1e-3
# Rows per evaluation call: bounds the memory of the exact Jacobians and traces.
EVAL_CHUNK = 500
# Steps at which every run is evaluated: 1, 2, 5, 10, 20, 50, ... (the equal-steps readings).
STEP_EVALUATIONS = frozenset(m * 10**e for e in range(8) for m in (1, 2, 5))
# The sizes of the older scripts: 3 transforms (neural), 4 residual blocks of width 64.
TRANSFORMS = 3
RESIDUAL_BLOCKS = 4
RESIDUAL_HIDDEN = 64
# flowkit's ncsf widths tried for the closest parameter count to zuko's.
NCSF_WIDTHS = range(32, 129, 2)
PAIRS: dict[str, tuple[str, ...]] = {
    "naf": ("flowkit naf", "zuko NAF"),
    "umnn": ("flowkit umnn", "zuko UNAF"),
    "cnf": (
        "flowkit cnf likelihood",
        "flowkit cnf flow matching",
        "flowkit cnf flow matching ot",
        "zuko CNF",
    ),
    "resflow": ("flowkit resflow", "normflows residual flow"),
    "ncsf": ("flowkit ncsf", "zuko NCSF"),
}
MODELS = tuple(model for models in PAIRS.values() for model in models)
LIBRARIES = ("flowkit", "zuko", "normflows")
# The pairs each data set runs when --pairs is not given; ncsf needs angles.
CIRCULAR_PAIRS = ("ncsf",)


@dataclass(frozen=True)
class Split:
    """One data set's fixed split; ``log_scale`` converts NLLs back to the data's units."""

    train: Tensor
    validation: Tensor
    test: Tensor
    log_scale: float


@dataclass
class Model:
    """A model under training: its loss on a batch and its exact log-density for evaluation."""

    module: nn.Module
    loss: Callable[[Tensor], Tensor]
    log_prob: Callable[[Tensor], Tensor]
    after_step: Callable[[], None] | None = None


def load(name: str) -> Split:
    """The named data set, split 80/10/10 by :data:`DATA_SEED` and standardised (not the torus)."""
    generator = torch.Generator().manual_seed(DATA_SEED)
    if name == "two-moons":
        from flowkit.data.toy import two_moons

        rows = two_moons(TOY_POINTS, generator=generator)
    elif name == "torus":
        rows = circular.torsions(TOY_POINTS, DATA_SEED)
    elif name in TABLES:
        import sklearn.datasets

        values = getattr(sklearn.datasets, f"load_{name}")().data
        rows = torch.as_tensor(values, dtype=torch.float64)
    else:
        raise ValueError(f"unknown data {name!r}; expected one of {list(DATA)}")
    order = torch.randperm(len(rows), generator=generator)
    first = round(SPLIT[0] * len(rows))
    second = first + round(SPLIT[1] * len(rows))
    parts = rows[order[:first]], rows[order[first:second]], rows[order[second:]]
    if name == "torus":
        return Split(parts[0].float(), parts[1].float(), parts[2].float(), log_scale=0.0)
    mean, std = parts[0].mean(0), parts[0].std(0)
    train, validation, test = ((part - mean) / std for part in parts)
    return Split(train.float(), validation.float(), test.float(), float(std.log().sum()))


def _exact_log_prob(model: Any, x: Tensor) -> Tensor:
    """normflows' log-density with the log-determinant of the whole map's brute-force Jacobian."""
    with torch.enable_grad():
        leaf = x.detach().requires_grad_(True)
        z, _ = model.inverse_and_log_det(leaf)
        jacobian = batch_jacobian(z, leaf).double()
    log_det = torch.linalg.slogdet(jacobian)[1].float()
    return (model.q0.log_prob(z) + log_det).detach()


def _neural(name: str, features: int, seed: int) -> Model:
    kind = "naf" if name in ("flowkit naf", "zuko NAF") else "umnn"
    torch.manual_seed(seed)
    peer, peer_log_prob = neural._zuko(kind, TRANSFORMS, features)
    if name.startswith("zuko"):
        module, log_prob = peer, peer_log_prob
    else:
        target = neural._parameters(peer)
        width = neural._matched_width(kind, TRANSFORMS, target, features=features)
        torch.manual_seed(seed)
        module, log_prob = neural._flowkit(kind, TRANSFORMS, width, features=features)
    return Model(module, lambda x: -log_prob(x).mean(), log_prob)


def _cnf(name: str, features: int, seed: int) -> Model:
    torch.manual_seed(seed)
    if name == "zuko CNF":
        import zuko

        peer = zuko.flows.CNF(features, hidden_features=(64, 64))
        return Model(peer, lambda x: -peer().log_prob(x).mean(), lambda x: peer().log_prob(x))
    objective = "likelihood" if name == "flowkit cnf likelihood" else "flow_matching"
    settings = {"coupling": "ot"} if name.endswith(" ot") else {}
    flow, loss, log_prob = continuous._flowkit_cnf(features, objective, seed, **settings)
    return Model(flow, loss, log_prob)


def _resflow(name: str, seed: int, train: Tensor) -> Model:
    init = train[:512]
    if name == "flowkit resflow":
        flow: Any = residual_toy._flowkit_model(RESIDUAL_BLOCKS, RESIDUAL_HIDDEN, seed, init)
        return Model(flow, lambda x: -flow.log_prob(x).mean(), flow.log_prob)
    import normflows as nf

    peer: Any = residual_toy._normflows_model(RESIDUAL_BLOCKS, RESIDUAL_HIDDEN, seed, init)

    def log_prob(x: Tensor) -> Tensor:
        # normflows' residual blocks are exact in eval mode for 2-D inputs only.
        return peer.log_prob(x) if x.shape[1] == 2 else _exact_log_prob(peer, x)

    return Model(
        peer,
        lambda x: -peer.log_prob(x).mean(),
        log_prob,
        after_step=lambda: nf.utils.update_lipschitz(peer, 5),
    )


@functools.cache
def _ncsf_width() -> int:
    """flowkit's ncsf width whose parameter count is the closest to zuko's NCSF of width 64."""
    target = neural._parameters(circular.build("zuko-ncsf", 0)[0])
    counts = {
        width: neural._parameters(circular.build("flowkit-ncsf", 0, width)[0])
        for width in NCSF_WIDTHS
    }
    return min(counts, key=lambda width: abs(counts[width] - target))


def _ncsf(name: str, seed: int) -> Model:
    if name == "zuko NCSF":
        module, log_prob = circular.build("zuko-ncsf", seed)
    else:
        module, log_prob = circular.build("flowkit-ncsf", seed, _ncsf_width())
    density = cast(Callable[[Tensor], Tensor], log_prob)
    return Model(module, lambda x: -density(x).mean(), density)


def build(name: str, split: Split, seed: int) -> Model:
    """The model ``name`` (one of :data:`MODELS`) for the split's rows, seeded by ``seed``."""
    features = split.train.shape[1]
    if name in PAIRS["naf"] + PAIRS["umnn"]:
        return _neural(name, features, seed)
    if name in PAIRS["cnf"]:
        return _cnf(name, features, seed)
    if name in PAIRS["resflow"]:
        return _resflow(name, seed, split.train)
    return _ncsf(name, seed)


def _nll(model: Model, rows: Tensor, log_scale: float) -> float:
    values = torch.cat([model.log_prob(chunk).detach() for chunk in rows.split(EVAL_CHUNK)])
    return float(-values.double().mean()) + log_scale


def _evaluate(model: Model, split: Split) -> tuple[float, float]:
    """Validation and test NLL in eval mode; the random states are left as they were."""
    torch_state, numpy_state = torch.random.get_rng_state(), np.random.get_state()
    model.module.eval()
    try:
        with torch.no_grad():
            validation = _nll(model, split.validation, split.log_scale)
            test = _nll(model, split.test, split.log_scale)
    finally:
        model.module.train()
        torch.random.set_rng_state(torch_state)
        np.random.set_state(numpy_state)
    return validation, test


def best_test(history: list[list[float]], max_step: float = math.inf) -> float:
    """The test NLL at the best validation NLL among evaluations up to ``max_step``."""
    candidates = [entry for entry in history if entry[1] <= max_step]
    best = min(candidates, key=lambda e: e[2] if math.isfinite(e[2]) else math.inf)
    return best[3]


def train(
    data: str,
    split: Split,
    pair: str,
    name: str,
    seed: int,
    *,
    seconds: float | None,
    steps: int | None,
    eval_seconds: float | None,
) -> dict[str, Any]:
    """Train one model until the time or step budget; return its JSON record.

    Evaluations: at step 0, at steps 1, 2, 5, 10, 20, 50, ... (the same steps for every model,
    for the equal-steps reading), after every ``eval_seconds`` of training time and at the end.
    """
    started = time.perf_counter()
    model = build(name, split, seed)
    model.module.train()
    optimizer = torch.optim.Adam(model.module.parameters(), lr=LEARNING_RATE)
    generator = torch.Generator().manual_seed(seed)
    batch_size = min(BATCH_SIZE, len(split.train))
    elapsed, done, finite = 0.0, 0, True
    history = [[0.0, 0, *_evaluate(model, split)]]
    next_time = eval_seconds if eval_seconds is not None else math.inf
    while (seconds is None or elapsed < seconds) and (steps is None or done < steps):
        start = time.perf_counter()
        rows = torch.randperm(len(split.train), generator=generator)[:batch_size]
        loss = model.loss(split.train[rows])
        if not torch.isfinite(loss):
            # The update would carry the non-finite value into the weights: stop before it.
            elapsed += time.perf_counter() - start
            finite = False
            break
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if model.after_step is not None:
            model.after_step()
        elapsed += time.perf_counter() - start
        done += 1
        if done in STEP_EVALUATIONS or elapsed >= next_time:
            history.append([round(elapsed, 3), done, *_evaluate(model, split)])
            while eval_seconds is not None and next_time <= elapsed:
                next_time += eval_seconds
    if history[-1][1] != done:
        history.append([round(elapsed, 3), done, *_evaluate(model, split)])
    return {
        "data": data,
        "pair": pair,
        "model": name,
        "seed": seed,
        "parameters": neural._parameters(model.module),
        "batch_size": batch_size,
        "seconds_limit": seconds,
        "steps_limit": steps,
        "eval_seconds": eval_seconds,
        "steps": done,
        "train_seconds": round(elapsed, 3),
        "ms_per_step": round(1000 * elapsed / done, 3) if done else None,
        "finite": finite,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "history": history,
        "final": best_test(history),
    }


def _names(text: str | None, default: tuple[str, ...], what: str) -> list[str]:
    if text is None:
        return list(default)
    given = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in given if name not in default]
    if unknown or not given:
        raise ValueError(f"--{what} expects some of {','.join(default)}; got {text!r}")
    return given


@dataclass(frozen=True)
class _Plan:
    """The checked command line: (data, pair, models) in order, and the budgets."""

    runs: list[tuple[str, str, list[str]]]
    seeds: list[int]
    seconds: float | None
    steps: int | None
    eval_seconds: float | None


def _plan(args: argparse.Namespace) -> _Plan:
    """Check the options once, before anything runs; a bad one raises a ValueError."""
    datasets = _names(args.data, DATA, "data") if args.data else ["two-moons"]
    libraries = _names(args.libraries, LIBRARIES, "libraries")
    try:
        seeds = [int(seed) for seed in args.seeds.split(",")]
    except ValueError:
        raise ValueError(f"--seeds expects comma-separated integers; got {args.seeds!r}") from None
    if args.eval_seconds is not None and args.eval_seconds <= 0:
        raise ValueError(f"--eval-seconds expects a positive number; got {args.eval_seconds}")
    if args.steps is not None and args.steps < 1:
        raise ValueError(f"--steps expects a positive number; got {args.steps}")
    if args.seconds is not None and args.seconds <= 0:
        raise ValueError(f"--seconds expects a positive number; got {args.seconds}")
    seconds = args.seconds if args.seconds is not None or args.steps is not None else 60.0
    runs = []
    for data in datasets:
        circle = data == "torus"
        default = CIRCULAR_PAIRS if circle else tuple(p for p in PAIRS if p not in CIRCULAR_PAIRS)
        pairs = _names(args.pairs, tuple(PAIRS), "pairs") if args.pairs else list(default)
        for pair in pairs:
            if pair in CIRCULAR_PAIRS and not circle:
                raise ValueError(
                    f"pair {pair!r} models angles and runs on --data torus only; got --data {data}"
                )
            models = [model for model in PAIRS[pair] if model.split()[0] in libraries]
            runs.append((data, pair, models))
    eval_seconds = args.eval_seconds
    if eval_seconds is None and seconds is not None:
        eval_seconds = seconds / 10
    return _Plan(runs, seeds, seconds, args.steps, eval_seconds)


def _run(plan: _Plan, json_path: str | None) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)
    for data in dict.fromkeys(data for data, _, _ in plan.runs):
        split = load(data)
        for pair, models in ((pair, models) for d, pair, models in plan.runs if d == data):
            for seed in plan.seeds:
                for model in models:
                    record = train(
                        data,
                        split,
                        pair,
                        model,
                        seed,
                        seconds=plan.seconds,
                        steps=plan.steps,
                        eval_seconds=plan.eval_seconds,
                    )
                    line = json.dumps(record)
                    print(line, flush=True)
                    if json_path:
                        # Appended, so that the runs of several data sets gather in one file.
                        with open(json_path, "a") as handle:
                            handle.write(line + "\n")


def main(argv: list[str] | None = None) -> int:
    """Run the comparison (one JSON line per run), or with ``--report``, print its tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", help=f"comma-separated, some of {','.join(DATA)}")
    parser.add_argument(
        "--pairs", help=f"comma-separated, some of {','.join(PAIRS)} (default: all for the data)"
    )
    parser.add_argument("--libraries", help=f"comma-separated, some of {','.join(LIBRARIES)}")
    parser.add_argument(
        "--seconds", type=float, help="training seconds per run (default 60 without --steps)"
    )
    parser.add_argument("--steps", type=int, help="at most this many steps per run")
    parser.add_argument(
        "--eval-seconds",
        type=float,
        help="training seconds between evaluations besides steps 1, 2, 5, 10, ... "
        "(default: a tenth of --seconds)",
    )
    parser.add_argument("--seeds", default="0", help="comma-separated run seeds")
    parser.add_argument("--json", help="append each run's JSON line to this file")
    parser.add_argument("--report", help="print the tables of this file's JSON lines, run nothing")
    args = parser.parse_args(argv)
    try:
        if args.report:
            with open(args.report) as handle:
                records = [json.loads(line) for line in handle if line.strip()]
            if not records:
                raise ValueError(f"--report expects JSON lines of runs; {args.report} has none")
        else:
            plan = _plan(args)
    except (ValueError, OSError) as error:
        print(f"flowkit: error: {error}", file=sys.stderr)
        return 2
    if args.report:
        from benchmarks.families_report import render

        print(render(records))
    else:
        _run(plan, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

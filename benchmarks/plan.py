"""What the benchmark measures: model configs, variants, allocator settings and the list of specs.

A variant is one line of :data:`VARIANTS`: a library, keyword arguments for its model builder
(``preset``, e.g. ``{"memory_saving": True}`` for flowkit's Glow) and runtime options
(``runtime``, see :mod:`benchmarks.options`). Every measurement of every variant runs under every
selected allocator setting of :data:`ALLOCATORS`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import check_names

__all__ = [
    "ALLOCATORS",
    "CONFIGS",
    "FULL",
    "QUICK",
    "SECTIONS",
    "Sizes",
    "VARIANTS",
    "Variant",
    "allocator_env",
    "build_plan",
]


@dataclass(frozen=True)
class Variant:
    """A library plus builder keyword arguments and runtime options."""

    library: str
    preset: dict[str, Any] = field(default_factory=dict)
    runtime: dict[str, Any] = field(default_factory=dict)


# The peer first: ratios are taken against it. Add a flowkit option as one more line here.
VARIANTS: dict[str, Variant] = {
    "normflows": Variant("normflows"),
    "flowkit": Variant("flowkit"),
    "flowkit-memory-saving": Variant("flowkit", preset={"memory_saving": True}),
    "flowkit-bf16": Variant("flowkit", preset={"conditioner_dtype": "bfloat16"}),
    "flowkit-memory-saving-bf16": Variant(
        "flowkit", preset={"memory_saving": True, "conditioner_dtype": "bfloat16"}
    ),
}

PEER = "normflows"

# glibc's defaults return every block above 128 KiB to the kernel (mmap) and trim freed heap
# eagerly, so each large temporary of every training step is page-faulted in again; the tuned
# setting keeps freed memory in the heap for reuse.
TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
ALLOCATORS: dict[str, dict[str, str]] = {"default": {}, "tuned": TUNED_MALLOC}


def _glow_small() -> dict[str, Any]:
    # flowkit's small CPU run ("glow-small"), read from the preset so the two never drift apart.
    from flowkit.presets.runs import get_run_preset

    model = dict(get_run_preset("glow-small").model)
    return {
        "K": model["K"],
        "L": model["L"],
        "input_shape": list(model["input_shape"]),
        "hidden_channels": model["hidden_channels"],
        "coupling": model.get("coupling", "affine"),
        "permutation": model.get("permutation", "conv1x1_lu"),
    }


# The paper's CIFAR-10 model (Table 4): 3x32x32, K=32, L=3, width 512, affine, LU.
PAPER = {
    "K": 32,
    "L": 3,
    "input_shape": [3, 32, 32],
    "hidden_channels": 512,
    "coupling": "affine",
    "permutation": "conv1x1_lu",
}
CONFIGS: dict[str, dict[str, Any]] = {"paper": PAPER, "small": _glow_small()}


@dataclass(frozen=True)
class Sizes:
    """Batch sizes and step counts of each kind of measurement."""

    train_batches: tuple[int, ...] = (16, 64)
    # A paper-config training step at batch 64 costs about 1.5 TFLOP (a minute on a small CPU);
    # the small config's costs 6 GFLOP.
    train_steps: dict[str, int] = field(default_factory=lambda: {"paper": 3, "small": 30})
    # Steady state needs a few steps: the first ones page-fault the heap in and create oneDNN
    # primitives (three warm-up steps at the paper config, measured).
    train_warmup: dict[str, int] = field(default_factory=lambda: {"paper": 3, "small": 5})
    eval_batch: int = 256
    eval_steps: dict[str, int] = field(default_factory=lambda: {"paper": 2, "small": 20})
    eval_warmup: int = 1
    sample_n: int = 64
    sample_temperature: float = 0.7
    sample_repeats: dict[str, int] = field(default_factory=lambda: {"paper": 2, "small": 10})
    sample_warmup: int = 1
    sample_init_batch: int = 64
    flop_batch: int = 2
    machine_repeats: int = 10
    machine_warmup: int = 2
    # Training memory as a function of depth: paper config at batch 64.
    sweep_config: str = "paper"
    sweep_K: tuple[int, ...] = (8, 16, 32)
    sweep_batch: int = 64
    sweep_steps: int = 1
    sweep_warmup: int = 1


FULL = Sizes()
QUICK = Sizes(
    train_batches=(4,),
    train_steps={"small": 1},
    train_warmup={"small": 1},
    eval_batch=8,
    eval_steps={"small": 1},
    eval_warmup=0,
    sample_n=4,
    sample_repeats={"small": 1},
    sample_warmup=0,
    sample_init_batch=4,
    machine_repeats=1,
    machine_warmup=1,
    sweep_config="small",
    sweep_K=(1, 2),
    sweep_batch=4,
    sweep_steps=1,
    sweep_warmup=0,
)

SECTIONS = ("machine", "static", "train", "eval", "sample", "sweep")


def allocator_env(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a measurement process under allocator setting ``name``.

    ``default`` is the parent's environment without the tuned variables (so that a shell which
    exports them does not turn the default into the tuned setting); ``tuned`` adds them.
    """
    if name not in ALLOCATORS:
        raise ValueError(f"unknown allocator {name!r}; expected one of {sorted(ALLOCATORS)}")
    env = dict(os.environ if base is None else base)
    for key in TUNED_MALLOC:
        env.pop(key, None)
    env.update(ALLOCATORS[name])
    return env


def _spec(measure: str, variant: str | None, config: str | None, **fields: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"measure": measure, "seed": 0}
    if variant is not None:
        chosen = VARIANTS[variant]
        spec.update(
            variant=variant,
            library=chosen.library,
            preset=dict(chosen.preset),
            runtime=dict(chosen.runtime),
        )
    if config is not None:
        spec.update(config_name=config, config=dict(CONFIGS[config]))
    spec.update(fields)
    return spec


def build_plan(
    *,
    configs: list[str],
    variants: list[str],
    allocators: list[str],
    sections: list[str],
    sizes: Sizes,
    device: str = "auto",
) -> list[dict[str, Any]]:
    """Every measurement spec of a run, each tagged with its ``allocator``, in running order.

    Allocator-independent measurements (parameter and FLOP counts) run once, under the first
    allocator. Duplicate specs (the sweep's largest ``K`` is often the main config) run once.
    """
    check_names("configs", configs, CONFIGS)
    check_names("variants", variants, VARIANTS)
    check_names("allocators", allocators, ALLOCATORS)
    check_names("sections", sections, SECTIONS)
    specs: list[dict[str, Any]] = []

    def add(spec: dict[str, Any], allocator: str) -> None:
        spec = {**spec, "allocator": allocator, "device": device}
        if spec not in specs:
            specs.append(spec)

    for allocator in allocators:
        if "machine" in sections:
            machine = _spec(
                "machine", None, None, warmup=sizes.machine_warmup, repeats=sizes.machine_repeats
            )
            add(machine, allocator)
    for config in configs:
        for variant in variants:
            if "static" in sections:
                add(_spec("static", variant, config, batch=sizes.flop_batch), allocators[0])
    for allocator in allocators:
        for config in configs:
            for variant in variants:
                if "train" in sections:
                    for batch in sizes.train_batches:
                        add(
                            _spec(
                                "train",
                                variant,
                                config,
                                batch=batch,
                                steps=sizes.train_steps[config],
                                warmup=sizes.train_warmup[config],
                            ),
                            allocator,
                        )
                if "eval" in sections:
                    add(
                        _spec(
                            "eval",
                            variant,
                            config,
                            batch=sizes.eval_batch,
                            steps=sizes.eval_steps[config],
                            warmup=sizes.eval_warmup,
                        ),
                        allocator,
                    )
                if "sample" in sections:
                    add(
                        _spec(
                            "sample",
                            variant,
                            config,
                            n=sizes.sample_n,
                            temperature=sizes.sample_temperature,
                            repeats=sizes.sample_repeats[config],
                            warmup=sizes.sample_warmup,
                            init_batch=sizes.sample_init_batch,
                        ),
                        allocator,
                    )
        if "sweep" in sections:
            sweep_config = CONFIGS[sizes.sweep_config]
            for variant in variants:
                for depth in sizes.sweep_K:
                    if (
                        depth == sweep_config["K"]
                        and sizes.sweep_config in configs
                        and "train" in sections
                        and sizes.sweep_batch in sizes.train_batches
                    ):
                        continue  # the main training measurement is this point of the sweep
                    spec = _spec(
                        "train",
                        variant,
                        sizes.sweep_config,
                        batch=sizes.sweep_batch,
                        steps=sizes.sweep_steps,
                        warmup=sizes.sweep_warmup,
                    )
                    spec["config"] = {**spec["config"], "K": depth}
                    spec["sweep"] = True
                    add(spec, allocator)
    return specs

"""Seconds to sample TarFlow images: key/value cache, full passes, and the official code.

Times ``flow.decode`` of the same latents and labels with the cache (``cache=True``, the default)
and without it (one pass over the whole sequence per position), interleaved in one process so
that both see the same machine load. With ``--official DIR`` (a checkout of
github.com/apple/ml-tarflow) it also times that code's ``Model.reverse`` at the same architecture
(heads of 64 channels, as the official code fixes them). Prints one JSON line per measurement and
a summary.

    python -m benchmarks.tarflow_sampling --threads 1 --official ../ml-tarflow
    python -m benchmarks.tarflow_sampling --quick
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

from flowkit.presets import tarflow


def _official_model(directory: Path, args: argparse.Namespace) -> Any:
    """The official ``transformer_flow.Model`` at the benchmark's architecture."""
    spec = importlib.util.spec_from_file_location(
        "transformer_flow", directory / "transformer_flow.py"
    )
    assert spec is not None and spec.loader is not None, f"no transformer_flow.py in {directory}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.Model(
        in_channels=args.image_channels,
        img_size=args.image_size,
        patch_size=args.patch_size,
        channels=args.channels,
        num_blocks=args.blocks,
        layers_per_block=args.layers,
        num_classes=args.classes,
    ).eval()


def _timed(label: str, run: Any) -> tuple[float, torch.Tensor]:
    start = time.perf_counter()
    with torch.no_grad():
        out = run()
    seconds = time.perf_counter() - start
    print(json.dumps({"what": label, "seconds": round(seconds, 3)}), flush=True)
    return seconds, out


def main(argv: list[str] | None = None) -> None:
    """Parse the options, time each way of sampling in turn, print the medians and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--image-channels", type=int, default=3)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--guidance", type=float, default=0.0)
    parser.add_argument("--repeats", type=int, default=3, help="timings of each cached way")
    parser.add_argument(
        "--full-repeats", type=int, default=1, help="timings without the cache (0: none)"
    )
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--official", type=Path, help="a checkout of apple/ml-tarflow")
    parser.add_argument("--quick", action="store_true", help="a tiny model, one timing each")
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.channels, args.blocks, args.layers = 8, 64, 2, 1
        args.repeats = args.full_repeats = 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    shape = (args.image_channels, args.image_size, args.image_size)
    flow = tarflow(
        shape,
        args.patch_size,
        channels=args.channels,
        blocks=args.blocks,
        layers_per_block=args.layers,
        heads=max(1, args.channels // 64),
        num_classes=args.classes,
        seed=0,
    )
    flow = flow.to(device).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in flow.parameters():
            # Away from the identity of a fresh model, so that no step is trivially cheap.
            parameter.add_(0.01 * torch.randn(parameter.shape, generator=generator).to(device))
    z = torch.randn(args.images, *flow.latent_shape, generator=generator).to(device)
    labels = (torch.arange(args.images) % args.classes).to(device)

    def decode(cache: bool) -> Any:
        def run() -> torch.Tensor:
            with flow.decoding(args.guidance, cache=cache):
                out = flow.decode(z, labels)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        return run

    runs = {"cached": decode(True)}
    counts = {"cached": args.repeats}
    if args.full_repeats > 0:
        runs["full passes"] = decode(False)
        counts["full passes"] = args.full_repeats
    if args.official is not None:
        official = _official_model(args.official, args).to(device)

        def official_run() -> Any:
            out = official.reverse(z.clone(), labels, args.guidance)
            if device.type == "cuda":
                torch.cuda.synchronize()
            return out

        runs["official"] = official_run
        counts["official"] = args.repeats
    times: dict[str, list[float]] = {name: [] for name in runs}
    outputs: dict[str, torch.Tensor] = {}
    for round_ in range(max(counts.values())):
        for name, run in runs.items():
            if round_ < counts[name]:
                seconds, outputs[name] = _timed(name, run)
                times[name].append(seconds)
    medians = {name: statistics.median(values) for name, values in times.items()}
    summary = {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "images": args.images,
        "patches": flow.latent_shape[0],
        "guidance": args.guidance,
        "median_seconds": {name: round(value, 3) for name, value in medians.items()},
    }
    if "full passes" in runs:
        difference = (outputs["cached"] - outputs["full passes"]).abs().max()
        summary["full_over_cached"] = round(medians["full passes"] / medians["cached"], 1)
        summary["max_difference_cached_vs_full"] = float(difference)
    if "official" in medians:
        summary["official_over_cached"] = round(medians["official"] / medians["cached"], 2)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])

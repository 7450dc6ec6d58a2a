"""Samples of a trained Glow at temperatures from 0 to 1: one row per temperature.

python examples/temperature_sweep.py runs/glow-small/checkpoint.pt
python examples/temperature_sweep.py --quick
"""

from __future__ import annotations

import argparse

import torch

from flowkit import load_flow
from flowkit.data import save_image_grid
from flowkit.distributions import Dequantized


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint.pt written by flowkit train")
    parser.add_argument("--output", default="temperatures.png", help="output PNG")
    parser.add_argument("--per-row", type=int, default=8, help="samples per temperature")
    parser.add_argument("--quick", action="store_true", help="train a tiny model first, then sweep")
    args = parser.parse_args(argv)
    if args.quick:
        from _common import quick_checkpoint

        args.checkpoint = quick_checkpoint()
        args.output = str(args.checkpoint.parent / "temperatures.png")
    if not args.checkpoint:
        parser.error("give a checkpoint (or use --quick)")

    flow, state = load_flow(args.checkpoint)
    # The image model the run trained: its bits are recorded with the run's data.
    model = Dequantized.from_record(flow, state.get("data") or {})
    temperatures = [0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]  # the official code's list
    rows = []
    for temperature in temperatures:
        torch.manual_seed(0)  # the same noise in every row, only its scale changes
        with torch.no_grad():
            rows.append(flow.sample(args.per_row, temperature=temperature))
    pixels = model.to_uint8(model.quantize(torch.cat(rows)))
    save_image_grid(pixels, args.output, nrow=args.per_row)
    print(f"rows at temperatures {temperatures}; wrote {args.output}")


if __name__ == "__main__":
    main()

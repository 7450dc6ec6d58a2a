"""Move images along an attribute direction in latent space (the paper's section 6).

The direction is the mean latent of images with the attribute minus that of the others. Without
attribute labels, class labels serve: "has the attribute" means "belongs to class k".

    python examples/attribute_manipulation.py runs/glow-small/checkpoint.pt --attribute 5 \\
        --indices 0 1
    python examples/attribute_manipulation.py --quick
"""

from __future__ import annotations

import argparse

import torch

from flowkit import load_flow
from flowkit.data import load_dataset, save_image_grid
from flowkit.distributions import Dequantized
from flowkit.latent import attribute_direction, manipulate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint.pt written by flowkit train")
    parser.add_argument(
        "--attribute", type=int, default=5, help="label that marks the attribute (5: sandal)"
    )
    parser.add_argument(
        "--indices", type=int, nargs="+", default=[0, 1, 2], help="test images to move"
    )
    parser.add_argument("--scale", type=float, default=1.0, help="largest step along the direction")
    parser.add_argument("--output", default="manipulation.png", help="output PNG")
    parser.add_argument("--quick", action="store_true", help="train a tiny model first")
    args = parser.parse_args(argv)
    if args.quick:
        from _common import quick_checkpoint

        args.checkpoint = quick_checkpoint()
        args.output = str(args.checkpoint.parent / "manipulation.png")
    if not args.checkpoint:
        parser.error("give a checkpoint (or use --quick)")

    flow, state = load_flow(args.checkpoint)
    # The image model the run trained: its bits are recorded with the run's data.
    model = Dequantized.from_record(flow, state.get("data") or {})
    data = load_dataset(state["train_config"]["data"], split="test")
    x = model.bin_centres(model.levels(data.images))
    direction = attribute_direction(flow, x, data.labels == args.attribute)
    scales = torch.linspace(-args.scale, args.scale, 7).tolist()
    rows = [manipulate(flow, x[i], direction, scales) for i in args.indices]
    pixels = model.to_uint8(model.quantize(torch.cat(rows)))
    save_image_grid(pixels, args.output, nrow=len(scales))
    print(f"columns at scales {[round(s, 2) for s in scales]}; wrote {args.output}")


if __name__ == "__main__":
    main()

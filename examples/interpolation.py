"""Walk between test images in a trained Glow's latent space (the paper's Figure 5).

python examples/interpolation.py runs/glow-small/checkpoint.pt --pairs 0:1 2:3
python examples/interpolation.py --quick
"""

from __future__ import annotations

import argparse

import torch

from flowkit import load_flow
from flowkit.data import load_dataset, save_image_grid
from flowkit.distributions import Dequantized
from flowkit.latent import interpolate


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoint", nargs="?", help="checkpoint.pt written by flowkit train")
    parser.add_argument(
        "--pairs", nargs="+", default=["0:1", "2:3", "4:5"], help="test-image index pairs a:b"
    )
    parser.add_argument("--steps", type=int, default=10, help="images per row, ends included")
    parser.add_argument("--output", default="interpolation.png", help="output PNG")
    parser.add_argument("--quick", action="store_true", help="train a tiny model first")
    args = parser.parse_args(argv)
    if args.quick:
        from _common import quick_checkpoint

        args.checkpoint = quick_checkpoint()
        args.output = str(args.checkpoint.parent / "interpolation.png")
    if not args.checkpoint:
        parser.error("give a checkpoint (or use --quick)")

    flow, state = load_flow(args.checkpoint)
    # The image model the run trained: its bits are recorded with the run's data.
    model = Dequantized.from_record(flow, state.get("data") or {})
    images = load_dataset(state["train_config"]["data"], split="test").images
    rows = []
    for pair in args.pairs:
        a, b = (int(i) for i in pair.split(":"))
        # Bin centres: the images as the model sees them, without dequantisation noise.
        x = model.bin_centres(model.levels(images[[a, b]]))
        rows.append(interpolate(flow, x[0], x[1], steps=args.steps))
    pixels = model.to_uint8(model.quantize(torch.cat(rows)))
    save_image_grid(pixels, args.output, nrow=args.steps)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

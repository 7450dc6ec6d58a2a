"""Train Glow on CIFAR-10 files (python batches, the .tar.gz, or a folder/tar of PNG/JPEG images).

    python examples/train_cifar10.py --data cifar-10-python.tar.gz --output runs/cifar10
    python examples/train_cifar10.py --data cifar10-jpeg.tar.gz --small   # a CPU-sized model
    python examples/train_cifar10.py --quick       # smoke run, no data needed

The full model is the paper's (K=32, L=3, width 512, affine, LU); ``--small`` shrinks it for a CPU.
Multi-GPU: ``torchrun --nproc_per_node 8 examples/train_cifar10.py --data ...``.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from flowkit.data import load_dataset
from flowkit.presets.glow import GlowConfig, build_glow, config_dict
from flowkit.train import TrainConfig, Trainer


def write_tiny_image_folder(root: Path, count: int = 64) -> Path:
    """A folder of random 32x32 colour PNGs in train/ and test/ class folders (for --quick)."""
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for index in range(count // 2):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{index:03d}.png")
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data", help="CIFAR-10 batches directory, its .tar.gz, or an image folder/tar"
    )
    parser.add_argument("--output", default="runs/cifar10", help="output directory")
    parser.add_argument("--epochs", type=int, default=100, help="epochs to train")
    parser.add_argument(
        "--small",
        action="store_true",
        help="K=4, L=3, width 64, one warm-up epoch: minutes per epoch on a CPU",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run on generated images")
    args = parser.parse_args(argv)

    if args.quick:
        args.data = str(write_tiny_image_folder(Path(tempfile.mkdtemp(prefix="flowkit-cifar-"))))
        args.output = tempfile.mkdtemp(prefix="flowkit-run-")
    if not args.data:
        parser.error("--data is required (or use --quick)")

    # The paper's CIFAR-10 model (Table 4), or a small one for a CPU.
    if args.quick:
        model = GlowConfig(K=1, L=2, input_shape=(3, 32, 32), hidden_channels=8)
    elif args.small:
        model = GlowConfig(K=4, L=3, input_shape=(3, 32, 32), hidden_channels=64)
    else:
        model = GlowConfig(K=32, L=3, input_shape=(3, 32, 32), hidden_channels=512)
    train = TrainConfig(
        data=args.data,
        output=args.output,
        epochs=1 if args.quick else args.epochs,
        batch_size=16 if args.quick else 64,
        init_batch_size=32 if args.quick else 256,
        # The official code warms the learning rate up over 10 epochs; a CPU-sized run of a few
        # epochs would spend all of them warming up, so the small model takes one.
        warmup_epochs=10 if not (args.quick or args.small) else 1,
        progress=not args.quick,
        temperatures=(0.7,) if args.quick else (0.0, 0.5, 0.7, 0.8, 0.9, 1.0),
        num_samples=4 if args.quick else 64,
    )

    # Read both splits once (a tar of 60k JPEGs takes a few seconds), build, train.
    train_data = load_dataset(args.data, split="train")
    test_data = load_dataset(args.data, split="test")
    trainer = Trainer(
        build_glow(model), train, train_data, test_data, model_config=config_dict(model)
    )
    result = trainer.fit(resume=True)
    if trainer.process.is_main:
        print(
            f"test bits/dim: {result.test_bpd[0][1]:.3f} -> {result.final_test_bpd:.3f}; "
            f"see {args.output}"
        )


if __name__ == "__main__":
    main()

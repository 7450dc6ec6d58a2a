"""Reading a trained run back (any preset) for the commands that use one."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from flowkit.cli._common import (
    UsageError,
    check_device,
    check_path,
    prepare_allocator,
)

__all__ = ["Run", "check_common", "open_run", "require_images", "run_images"]


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model and what its checkpoint says about its data."""

    checkpoint: Path
    flow: Any
    model_name: str | None
    data: dict[str, Any]
    train_config: dict[str, Any]
    num_classes: int | None

    @property
    def directory(self) -> Path:
        return self.checkpoint.parent

    @property
    def continuous_flow(self) -> Any:
        """The flow over continuous values (a Dequantized model's inner flow)."""
        from flowkit.distributions import Dequantized

        return self.flow.flow if isinstance(self.flow, Dequantized) else self.flow

    @property
    def is_table(self) -> bool:
        return self.data.get("kind") == "vector"

    @property
    def model(self) -> Any:
        """The image model: a Dequantized, which owns the bits, the noise and bits/dim.

        A flow trained under uniform dequantisation comes back as its flow alone; the run's
        record gives its bits (earlier runs kept them as a train setting).
        """
        from flowkit.distributions import Dequantized

        if isinstance(self.flow, Dequantized):
            return self.flow
        # The run's data record, or an earlier run's train settings, which held the bits.
        return Dequantized.from_record(self.flow, {**self.train_config, **self.data})

    @property
    def columns(self) -> list[str]:
        return list(self.data.get("columns") or [])

    @property
    def context_columns(self) -> list[str]:
        return list(self.data.get("context_columns") or [])


def open_run(args: argparse.Namespace) -> Run:
    from flowkit.loading import load_flow

    check_device(args.device)
    prepare_allocator()
    flow, state = load_flow(args.checkpoint, weights=args.weights, map_location=args.device)
    data = dict(state.get("data") or {"kind": "image"})
    model_config = state.get("model_config") or {}
    num_classes = data.get("num_classes", model_config.get("num_classes"))
    return Run(
        checkpoint=Path(args.checkpoint),
        flow=flow,
        model_name=state.get("model_name"),
        data=data,
        train_config=dict(state.get("train_config") or {}),
        num_classes=num_classes,
    )


def require_images(run: Run, command: str) -> None:
    if run.is_table:
        raise UsageError(
            f"{command} works on image models; {run.checkpoint} holds a table model "
            f"({run.model_name})"
        )


def run_images(run: Run, data: str | None, split: str) -> Any:
    """The images named by ``--data``/``--split`` (default: the run's own data), padded.

    On the run's own data the run's record picks exactly the images it used: its test split, the
    same seeded share of its training images held out, or its separate test set (all of it, or
    that set's test split, as in training). Other data is read at ``split``; asked for its test
    split, data without one counts whole.
    """
    from flowkit.data import has_test_split, same_source
    from flowkit.train.data import load_image_splits

    source = run.data.get("source") or run.train_config["data"]
    pad = int(run.train_config.get("pad") or 0)
    if data is None or same_source(data, source):
        fraction = run.data.get("test_fraction")
        (images,) = load_image_splits(
            source,
            (split,),
            test_source=run.data.get("test_source"),
            # Runs recorded before "test_split" existed used a test source's test split if it
            # had one, as the loader does without it.
            test_split=run.data.get("test_split"),
            test_fraction=None if fraction is None else float(fraction),
            seed=int(run.data.get("split_seed") or 0),
            pad=pad,
        )
        return images
    if split == "test" and not has_test_split(data):
        split = "train"
    (images,) = load_image_splits(data, (split,), pad=pad)
    return images


def check_common(args: argparse.Namespace) -> None:
    check_path("checkpoint", args.checkpoint)
    for flag in ("--data", "--output"):
        check_path(flag, getattr(args, flag[2:], None))

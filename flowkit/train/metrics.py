"""Metrics output: JSON lines, optional TensorBoard, and the bits/dim curve as a PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["MetricsWriter", "plot_bpd_curve", "read_metrics"]


class MetricsWriter:
    """Appends one JSON object per line to ``metrics.jsonl`` and mirrors scalars to TensorBoard.

    On resume, the records written after the checkpoint was saved are dropped (``truncate_to``),
    so the file describes exactly the run that continues.

    Args:
        path: The JSONL file.
        tensorboard_dir: Directory for TensorBoard event files, or None. Needs the ``tensorboard``
            package (``pip install "flowkit-torch[tensorboard]"``).
    """

    def __init__(
        self, path: str | os.PathLike, tensorboard_dir: str | os.PathLike | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tensorboard = None
        # Records in the file: checkpoints store it, so a resumed run cuts the file back exactly.
        self.count = len(read_metrics(self.path)) if self.path.exists() else 0
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as error:
                raise ImportError(
                    "TensorBoard logging needs the tensorboard package: "
                    'pip install "flowkit-torch[tensorboard]"'
                ) from error
            self._tensorboard = SummaryWriter(str(tensorboard_dir))

    def truncate_after(self, step: int) -> None:
        """Drop records whose ``step`` is beyond ``step`` (resuming a checkpoint of that step)."""
        self._keep([r for r in self._existing() if r.get("step", 0) <= step])

    def truncate_to(self, count: int) -> None:
        """Keep the first ``count`` records: those written before the checkpoint being resumed.

        Exact where :meth:`truncate_after` is not: records of the checkpoint's own step written
        after it was saved (an evaluation at the end of the epoch) are dropped too.
        """
        self._keep(self._existing()[:count])

    def _existing(self) -> list[dict[str, Any]]:
        return read_metrics(self.path) if self.path.exists() else []

    def _keep(self, records: list[dict[str, Any]]) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text("".join(json.dumps(record) + "\n" for record in records))
        os.replace(temporary, self.path)
        self.count = len(records)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` (JSON-serialisable values) and flush."""
        with self.path.open("a") as stream:
            stream.write(json.dumps(record) + "\n")
        self.count += 1
        if self._tensorboard is not None:
            step = int(record.get("step", 0))
            for key, value in record.items():
                if isinstance(value, (int, float)) and key != "step":
                    self._tensorboard.add_scalar(key, value, step)
            self._tensorboard.flush()

    def close(self) -> None:
        """Close the TensorBoard writer, if any."""
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a metrics JSONL file (a torn last line from a crash is ignored)."""
    records = []
    with Path(path).open() as stream:
        for line in stream:
            line = line.strip()
            if not line:
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def plot_bpd_curve(
    records: list[dict[str, Any]], path: str | os.PathLike, ylabel: str = "bits / dim"
) -> bool:
    """Plot ``train_bpd`` and ``test_bpd`` against the step.

    See :func:`flowkit.train.plots.plot_curve`.
    """
    from flowkit.train.plots import plot_curve

    return plot_curve(records, path, key="bpd", ylabel=ylabel)

"""``flowkit.fit``: train a flow on data in one call, with defaults that suit vectors."""

from __future__ import annotations

import dataclasses
import os
import tempfile
from typing import Any

from flowkit.distributions import Flow
from flowkit.train.config import TrainConfig
from flowkit.train.trainer import Trainer, TrainResult

__all__ = ["fit"]

# For vectors: Adam without warm-up, as zuko's and nflows' examples train; the raw weights (no
# averaging) so that a short fit is judged by what it reached.
VECTOR_DEFAULTS: dict[str, Any] = dict(
    optimizer="adam", lr=1e-3, warmup_epochs=0.0, ema=False, batch_size=256, epochs=20
)


def fit(
    flow: Flow,
    data: Any,
    test_data: Any = None,
    *,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train ``flow`` on ``data`` by maximum likelihood and return the history.

    The one-call form of :class:`~flowkit.train.Trainer`: ``settings`` are fields of
    :class:`~flowkit.train.TrainConfig` (``epochs=50``, ``lr=3e-4``, ...). For vector data the
    defaults are Adam at 1e-3 without warm-up or weight averaging, batches of 256 (fewer for a
    small set) and 20 epochs; image data keeps TrainConfig's Glow defaults. Without ``output`` the
    run's files go to a temporary directory that is removed afterwards.

    Args:
        flow: The model; it is trained in place.
        data: Training data, any kind the Trainer accepts.
        test_data: Evaluation data (optional; then ``result.test_history`` has a value per epoch).
        output: Where to keep the run's checkpoint, metrics and curves.
        overwrite: Replace a run that ``output`` already holds.
        **settings: TrainConfig fields.

    Returns:
        The :class:`~flowkit.train.TrainResult`: losses of every step, test values, steps done.

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.presets.nsf(2, transforms=2, hidden_features=(16,))
        >>> result = flowkit.fit(flow, torch.randn(512, 2), epochs=2)
        >>> result.steps  # batches of 512 // 4 = 128: four steps an epoch
        8
    """
    from flowkit.train.data import as_training_data

    view = as_training_data(data)
    defaults: dict[str, Any] = {"progress": False}
    if not view.is_image:
        defaults.update(VECTOR_DEFAULTS)
        defaults["batch_size"] = min(VECTOR_DEFAULTS["batch_size"], max(1, len(view) // 4))
        defaults["init_batch_size"] = min(1024, len(view))
    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known - {"output"})
    if unknown:
        raise TypeError(f"fit got unknown setting(s) {unknown}; known: {sorted(known)}")
    if output is None:
        with tempfile.TemporaryDirectory(prefix="flowkit-fit-") as directory:
            config = TrainConfig(**{**defaults, **settings, "output": directory})
            return Trainer(flow, config, view, test_data).fit()
    config = TrainConfig(**{**defaults, **settings, "output": str(output)})
    return Trainer(flow, config, view, test_data).fit(overwrite=overwrite)

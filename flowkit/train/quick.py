"""``flowkit.fit``: train a flow on data in one call, with defaults that suit vectors."""

from __future__ import annotations

import dataclasses
import math
import os
import tempfile
from typing import Any

import torch

from flowkit.data.tables import split_indices
from flowkit.distributions import Flow
from flowkit.distributions.standardized import (
    StandardizedFlow,
    check_data_support,
    standardizes_data,
)
from flowkit.train.config import TrainConfig
from flowkit.train.trainer import Trainer, TrainResult

__all__ = ["fit"]

# For vectors: Adam without warm-up, as zuko's and nflows' examples train; the raw weights (no
# averaging) so that a short fit is judged by what it reached; a tenth of the training examples
# held out for validation, whose best weights are kept, as the command line's table presets.
VECTOR_DEFAULTS: dict[str, Any] = dict(
    optimizer="adam",
    lr=1e-3,
    warmup_epochs=0.0,
    ema=False,
    batch_size=256,
    epochs=20,
    val_fraction=0.1,
)
# A small set gets at least this many batches an epoch.
MIN_BATCHES_PER_EPOCH = 4


def fit(
    flow: Flow,
    data: Any,
    test_data: Any = None,
    *,
    validation_data: Any = None,
    standardize: bool = True,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    **settings: Any,
) -> TrainResult:
    """Train ``flow`` on ``data`` by maximum likelihood and return the history.

    The one-call form of :class:`~flowkit.train.Trainer`, meaning what ``flowkit train`` means:
    ``data`` and ``test_data`` may be tensors, arrays, ``(values, context)`` pairs, a
    :class:`~flowkit.data.Table`, a path to a ``.csv``/``.npy``/``.npz`` table (read with
    :func:`~flowkit.data.read_table`, every column as data), images, or a Dataset/DataLoader.
    ``settings`` are fields of :class:`~flowkit.train.TrainConfig` (``epochs=50``, ``lr=3e-4``,
    ``val_fraction=0.2``, ``patience=30``, ...).

    For vectors the defaults are Adam at 1e-3 without warm-up or weight averaging, batches of
    256 (at most a quarter of a small set), 20 epochs, and ``val_fraction=0.1``: a tenth of the
    training examples is held out (seeded by ``seed``) and evaluated every epoch; the weights of
    the best validation evaluation are kept (``result.best``, and the checkpoint's default
    weights), and ``patience`` stops early. Vectors are standardised by default, as on the command
    line (except for a flow over a bounded domain, such as :func:`~flowkit.presets.ncsf`'s angles,
    whose values are checked against it and kept as they are; see
    :func:`~flowkit.distributions.standardized.standardizes_data`): the statistics of the
    training examples (float64) go into the model, and ``result.flow`` is the trained model in
    the data's own units (:class:`~flowkit.distributions.standardized.StandardizedFlow`,
    sharing ``flow``'s weights; ``flow`` itself then works on standardised values). A flow that
    is already a StandardizedFlow keeps its own statistics. Image data keeps TrainConfig's Glow
    defaults. Without ``output`` the run's files go to a temporary directory that is removed
    afterwards.

    Args:
        flow: The model; it is trained in place and ends with the weights of the best
            validation evaluation when there is a validation set (else the last ones).
        data: Training data (see above).
        test_data: Evaluation data (optional; then ``result.test_history`` has a value per epoch).
        validation_data: Validation data instead of a ``val_fraction`` of ``data``.
        standardize: Standardise vectors (data and context) by the training examples'
            statistics inside the model (``result.flow``); False trains ``flow`` on the values as
            they are.
        output: Where to keep the run's checkpoint, metrics and curves.
        overwrite: Replace a run that ``output`` already holds.
        **settings: TrainConfig fields.

    Returns:
        The :class:`~flowkit.train.TrainResult`: losses of every step, test and validation
        values, the best validation evaluation, steps done, and ``flow``: the trained model.

    Raises:
        TypeError: An unknown setting, or data of a kind the trainer does not take.
        flowkit.data.DataError: A table file that cannot be read, or a constant column.

    Example:
        >>> import torch, flowkit
        >>> flow = flowkit.presets.nsf(2, transforms=2, hidden_features=(16,))
        >>> result = flowkit.fit(flow, torch.randn(512, 2), epochs=2)
        >>> result.steps  # 461 training rows (51 held out), batches of 115: four steps an epoch
        8
    """
    from flowkit.train.data import VectorTrainingData, as_training_data

    known = {field.name for field in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - known - {"output"})
    if unknown:
        raise TypeError(f"fit got unknown setting(s) {unknown}; known: {sorted(known)}")
    view = as_training_data(_examples(data))
    test = None if test_data is None else as_training_data(_examples(test_data))
    validation = None if validation_data is None else as_training_data(_examples(validation_data))
    defaults: dict[str, Any] = {"progress": False}
    if isinstance(view, VectorTrainingData):
        defaults.update(VECTOR_DEFAULTS)
        config = TrainConfig(**{**defaults, **settings})
        if validation is None and config.val_fraction > 0:
            kept, held = split_indices(
                len(view),
                config.val_fraction,
                config.seed,
                stream=1,
                owner="fit",
                name="val",
                source="the training data",
            )
            validation = view.take(torch.as_tensor(held))
            view = view.take(torch.as_tensor(kept))
        rows = len(view)
        defaults["batch_size"] = min(
            VECTOR_DEFAULTS["batch_size"], max(1, rows // MIN_BATCHES_PER_EPOCH)
        )
        defaults["init_batch_size"] = min(1024, rows)
        if not isinstance(flow, StandardizedFlow) and not standardizes_data(flow):
            # A flow over a bounded domain (angles) takes its values as they are.
            for part, name in (
                (view, "the training data"),
                (validation, "the validation data"),
                (test, "the test data"),
            ):
                if isinstance(part, VectorTrainingData):
                    check_data_support(flow, part.values.reshape(len(part), -1), f"fit: {name}")
        elif standardize and not isinstance(flow, StandardizedFlow):
            flow = _standardized(flow, view)
    config = TrainConfig(**{**defaults, **settings, "output": str(output or "unused")})
    if output is None:
        with tempfile.TemporaryDirectory(prefix="flowkit-fit-") as directory:
            config = dataclasses.replace(config, output=directory)
            trainer = Trainer(flow, config, view, test, validation_data=validation)
            result = trainer.fit()
    else:
        trainer = Trainer(flow, config, view, test, validation_data=validation)
        result = trainer.fit(overwrite=overwrite)
    best = None if trainer.state is None else trainer.state.best
    if best is not None:
        # As on the command line, the model is the best validation evaluation's.
        flow.load_state_dict(best["model"])
    result.flow = flow
    return result


def _examples(data: Any) -> Any:
    """Paths and Tables as float64 arrays (with context); anything else as it is."""
    from flowkit.data.tables import Table, read_table

    if isinstance(data, (str, os.PathLike)):
        data = read_table(data)
    if isinstance(data, Table):
        return data.values if data.context is None else (data.values, data.context)
    return data


def _standardized(flow: Flow, view: Any) -> StandardizedFlow:
    """``flow`` behind the standardisation of the training examples, measured in float64."""
    from flowkit.data.tables import Standardization, Table

    values = view.values.detach().cpu().double().reshape(len(view), -1).numpy()
    names = [f"x{index}" for index in range(values.shape[1])]
    context = None
    context_names: list[str] = []
    if view.context is not None and view.context.is_floating_point():
        context = view.context.detach().cpu().double().reshape(len(view), -1).numpy()
        context_names = [f"c{index}" for index in range(context.shape[1])]
    if values.shape[1] != math.prod(flow.event_shape) or len(flow.event_shape) != 1:
        raise ValueError(
            f"fit standardises vectors of the flow's event shape {tuple(flow.event_shape)}, got "
            f"examples of shape {tuple(view.values.shape[1:])}; pass standardize=False"
        )
    scaling = Standardization.fit(
        Table(values, tuple(names), context, tuple(context_names), source="the training data")
    )
    return StandardizedFlow(
        flow,
        scaling.mean,
        scaling.std,
        scaling.context_mean or None,
        scaling.context_std or None,
    )

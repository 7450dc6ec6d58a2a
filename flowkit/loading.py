"""Rebuild a trained model from its checkpoint: any registered preset, or a flow you built.

This sits above ``flowkit.train`` and ``flowkit.presets``: a checkpoint names its model family,
the presets' registry rebuilds it, and the training package never imports the presets.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from flowkit.distributions import Dequantized, Flow
from flowkit.distributions.standardized import StandardizedFlow
from flowkit.errors import FlowkitError
from flowkit.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["load", "load_flow"]

# The buffers of a StandardizedFlow's statistics in a state dict.
_STANDARDIZATION = frozenset({"mean", "std", "context_mean", "context_std", "log_std_sum"})
# "best": the best validation evaluation's weights (the averaged ones when the run kept none);
# "averaged": the last Polyak average ("ema" is its older name); "raw": the last optimised ones.
WEIGHTS = ("best", "averaged", "raw", "ema")


def load(
    path: str | os.PathLike,
    *,
    weights: str = "best",
    flow: Flow | Dequantized | None = None,
    map_location: str | torch.device = "cpu",
) -> Flow | Dequantized:
    """The model stored in a training checkpoint, in eval mode.

    A checkpoint of a registered preset (``glow``, ``realnvp``, ``maf``, ``nsf``, ...) records the
    model family and its config: the flow is rebuilt from them (configs are checked before
    anything is built) and, for tables, wrapped in the stored standardisation, so it takes and
    returns data in the data's own units. Image families whose model is a distribution over
    integer images (Flow++) come back as a :class:`~flowkit.distributions.Dequantized`. A
    checkpoint of a custom flow holds only weights: pass your own module as ``flow`` to receive
    them (weights trained behind a standardisation, as :func:`flowkit.fit` trains vectors, come
    back with your flow wrapped in the stored standardisation).

    Args:
        path: A ``checkpoint.pt`` written by the Trainer.
        weights: ``"best"`` (the weights of the best validation evaluation, for a run with a
            validation set; otherwise as ``"averaged"``), ``"averaged"`` (the last Polyak
            average used for evaluation and sampling; the raw weights when the run kept no
            average) or ``"raw"`` (the last optimised ones).
        flow: Load the weights into this flow instead of rebuilding one.
        map_location: Where to put the tensors.

    Raises:
        CheckpointError: The file is missing or damaged, describes an invalid model, or its weights
            do not fit ``flow``.

    Example:
        >>> import flowkit, tempfile
        >>> flow = flowkit.presets.nsf(2, transforms=1, hidden_features=(8,))
        >>> trainer = flowkit.train.Trainer(
        ...     flow,
        ...     flowkit.train.TrainConfig(output=tempfile.mkdtemp(), epochs=1, batch_size=32,
        ...                               progress=False, device="cpu"),
        ...     torch.randn(64, 2), model_name="nsf",
        ...     model_config=flowkit.presets.NSFConfig(2, transforms=1, hidden_features=(8,)))
        >>> result = trainer.fit()
        >>> flowkit.load(trainer.output / "checkpoint.pt").event_shape
        torch.Size([2])
    """
    return load_flow(path, weights=weights, flow=flow, map_location=map_location)[0]


def load_flow(
    path: str | os.PathLike,
    *,
    weights: str = "best",
    flow: Flow | Dequantized | None = None,
    map_location: str | torch.device = "cpu",
) -> tuple[Flow | Dequantized, dict[str, Any]]:
    """:func:`load`, also returning the checkpoint dict (``train_config``, ``data``, ``step``)."""
    if weights not in WEIGHTS:
        raise ValueError(f"weights must be 'best', 'averaged' or 'raw', got {weights!r}")
    state = load_checkpoint(path, map_location=map_location)
    if flow is None:
        flow = _rebuild(path, state)
    elif not isinstance(flow, (Flow, Dequantized)):
        raise TypeError(
            f"load expects flow to be a flowkit Flow or Dequantized model, got "
            f"{type(flow).__name__}"
        )
    model_state = state["model"]
    best = state.get("best")
    if weights == "best" and isinstance(best, dict) and isinstance(best.get("model"), dict):
        model_state = best["model"]
    elif weights != "raw" and state.get("ema") is not None:
        prefix = "module."
        model_state = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    if isinstance(flow, StandardizedFlow) and not _STANDARDIZATION & set(model_state):
        model_state = _from_affine_standardization(model_state, flow)
    if not isinstance(flow, StandardizedFlow) and _STANDARDIZATION <= set(model_state):
        # Weights trained behind a standardisation (flowkit.fit's default): the given flow gets
        # the stored statistics, so the model takes and returns data in its own units.
        assert isinstance(flow, Flow), "a Dequantized model is never standardised"
        try:
            flow = StandardizedFlow(
                flow,
                model_state["mean"],
                model_state["std"],
                model_state["context_mean"],
                model_state["context_std"],
            )
        except ValueError as error:
            raise CheckpointError(
                f"the weights in {path} do not fit the model (other shape: {error}); the "
                "checkpoint was written for a different architecture"
            ) from None
    try:
        flow.load_state_dict(model_state)
    except RuntimeError:
        raise CheckpointError(
            f"the weights in {path} do not fit the model ({_mismatch(flow, model_state)}); the "
            "checkpoint was written for a different architecture"
        ) from None
    flow.to(map_location).eval()
    return flow, state


def _rebuild(path: str | os.PathLike, state: dict[str, Any]) -> Flow | Dequantized:
    from flowkit.presets.registry import build_model, config_from_stored
    from flowkit.presets.standardize import standardized_from_dict

    model_config = state.get("model_config")
    name = state.get("model_name")
    if model_config is not None and name is None:
        name = model_config.get("kind") if isinstance(model_config, dict) else None
    if name is None or model_config is None:
        raise CheckpointError(
            f"{path} holds the weights of a custom flow (no registered model name and config); "
            "build the flow yourself and pass it: flowkit.load(path, flow=my_flow)"
        )
    if not isinstance(model_config, dict):
        raise CheckpointError(f"{path} records a model config that is not a mapping")
    values = {k: v for k, v in model_config.items() if k != "kind"}
    try:
        flow = build_model(name, config_from_stored(name, values))
    except FlowkitError as error:
        raise CheckpointError(f"{path} describes a model flowkit cannot build: {error}") from None
    data = state.get("data") or {}
    if isinstance(flow, Dequantized):
        return flow  # an image model: no standardisation
    return standardized_from_dict(flow, data.get("standardization"))


# Before StandardizedFlow, a table model was Flow(base, Compose([fixed Affine, inner bijector])),
# inside a wrapper holding the context statistics (inner.*) when it had a context.
_LEGACY_PREFIXES = ("bijector.bijectors.", "bijector.inner.bijectors.")


def _from_affine_standardization(state: dict[str, Any], flow: StandardizedFlow) -> dict[str, Any]:
    """A table model's weights saved in the earlier layout, in StandardizedFlow's layout.

    The inner bijector's weights move up a level; the fixed scaling and context statistics give
    way to the flow's own float64 statistics (rebuilt from the checkpoint's ``data`` entry).
    """
    if not any(key.startswith(f"{prefix}0.shift") for key in state for prefix in _LEGACY_PREFIXES):
        return state
    upgraded: dict[str, Any] = {}
    for key, value in state.items():
        for prefix in _LEGACY_PREFIXES:
            if key.startswith(f"{prefix}1."):
                upgraded["bijector." + key[len(prefix) + 2 :]] = value
                break
            if key.startswith(f"{prefix}0."):
                break
        else:
            if key not in ("bijector.context_mean", "bijector.context_std"):
                upgraded[key] = value
    own = flow.state_dict()
    upgraded.update({name: own[name] for name in _STANDARDIZATION})
    return upgraded


def _mismatch(flow: Flow | Dequantized, state: dict[str, Any]) -> str:
    """What differs between a model's state dict and a checkpoint's, in a few words."""
    expected = flow.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    resized = sorted(
        key
        for key in set(expected) & set(state)
        if tuple(expected[key].shape) != tuple(state[key].shape)
    )
    parts = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("other shape", resized)):
        if keys:
            shown = ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
            parts.append(f"{label}: {shown}")
    return "; ".join(parts) or "the state dict does not load"

"""Rebuild a trained model from a checkpoint."""

from __future__ import annotations

import os

import torch

from flowkit.distributions import Flow
from flowkit.train.checkpoint import CheckpointError, load_checkpoint

__all__ = ["load_flow"]


def load_flow(
    path: str | os.PathLike, *, weights: str = "ema", map_location: str | torch.device = "cpu"
) -> tuple[Flow, dict]:
    """Rebuild the Glow model stored in a training checkpoint and load its weights.

    Args:
        path: A ``checkpoint.pt`` written by the Trainer.
        weights: ``"ema"`` for the averaged weights (used for evaluation and sampling, falls back to
            the raw weights when the run kept no average) or ``"raw"`` for the optimised ones.
        map_location: Where to load tensors.

    Returns:
        The flow in eval mode, and the checkpoint dict (with ``train_config``, ``step``, ...).
    """
    from flowkit.presets.glow import GlowConfig, build_glow

    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    state = load_checkpoint(path, map_location=map_location)
    model_config = state.get("model_config")
    if not model_config or model_config.get("kind") != "glow":
        raise CheckpointError(
            f"{path} does not describe a Glow model (no model_config); rebuild the model yourself "
            "and load state['model']"
        )
    kwargs = {k: v for k, v in model_config.items() if k != "kind"}
    kwargs["input_shape"] = tuple(kwargs["input_shape"])
    flow = build_glow(GlowConfig(**kwargs))
    model_state = state["model"]
    if weights == "ema" and state.get("ema") is not None:
        prefix = "module."
        model_state = {k[len(prefix) :]: v for k, v in state["ema"].items() if k.startswith(prefix)}
    flow.load_state_dict(model_state)
    flow.to(map_location).eval()
    return flow, state

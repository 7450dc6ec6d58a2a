"""Finding where a non-finite value first appears: the layer output or the parameter gradient."""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["first_nonfinite_gradient", "locate_nonfinite"]


def _nonfinite(value: object) -> bool:
    if isinstance(value, Tensor):
        return value.is_floating_point() and not bool(torch.isfinite(value).all())
    if isinstance(value, (tuple, list)):
        return any(_nonfinite(v) for v in value)
    return False


@torch.no_grad()
def locate_nonfinite(model: nn.Module, *inputs: Tensor | None) -> str | None:
    """Name of the first module whose output holds NaN or infinity when ``model(*inputs)`` runs.

    Forward hooks on every submodule record outputs in the order modules finish, so the first
    offender is the innermost module that produced the first non-finite value (for example
    ``bijector.bijectors.1.bijectors.40 (AffineCoupling)``). Returns None if every output is finite.
    """
    names = {module: name for name, module in model.named_modules()}
    found: list[str] = []

    def hook(module: nn.Module, inputs: object, output: object) -> None:
        if not found and _nonfinite(output):
            found.append(f"{names.get(module, '?')} ({type(module).__name__})")

    # A module finishes after its children, so the first hook to see a non-finite output is
    # that of the innermost module that produced it.
    handles = [module.register_forward_hook(hook) for module in model.modules()]
    try:
        model(*inputs)
    except (ValueError, RuntimeError):
        pass
    finally:
        for handle in handles:
            handle.remove()
    return found[0] if found else None


def first_nonfinite_gradient(model: nn.Module) -> str | None:
    """Name of the first parameter (in registration order) whose gradient is not finite."""
    for name, parameter in model.named_parameters():
        if parameter.grad is not None and not bool(torch.isfinite(parameter.grad).all()):
            return name
    return None

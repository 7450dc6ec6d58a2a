"""Memory-saving backpropagation through a chain of exactly invertible bijectors."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from flowkit._tensors import reduce_to_batch
from flowkit.bijectors.base import _first

__all__ = ["ReconstructionError", "invertible_backprop"]


class ReconstructionError(RuntimeError):
    """The inverse did not rebuild a chain's input closely enough for trustworthy gradients."""


class _InvertibleChain(torch.autograd.Function):
    """Runs a chain without storing activations; the backward pass rebuilds them with ``inverse``.

    Only the chain's input (for the drift check) and output are saved. In backward, each part's
    input is reconstructed from its output with the exact inverse, the part is re-run under
    autograd, and the gradient flows one part at a time, so memory does not grow with the chain's
    length.
    """

    @staticmethod
    def forward(ctx, chain, context, tolerance, batch_rank, x, *parameters):
        ctx.chain = chain
        ctx.context = context
        ctx.tolerance = tolerance
        ctx.batch_rank = batch_rank
        ctx.parameter_count = len(parameters)
        with torch.no_grad():
            z, log_abs_det = chain._plain_forward(x, context)
        ctx.save_for_backward(x, z)
        return z, log_abs_det

    @staticmethod
    def backward(ctx, grad_z, grad_log_abs_det):
        x, z = ctx.saved_tensors
        chain, context, batch_rank = ctx.chain, ctx.context, ctx.batch_rank
        parameters = [p for p in chain.parameters() if p.requires_grad]
        gradients: dict[int, Tensor] = {}
        context_gradient = None
        context_needs_grad = isinstance(context, Tensor) and context.requires_grad
        if grad_log_abs_det is None:
            grad_log_abs_det = z.new_zeros(z.shape[:batch_rank])
        output = z.detach()
        grad_output = grad_z if grad_z is not None else torch.zeros_like(z)
        parts = list(chain.bijectors)
        for index in range(len(parts) - 1, -1, -1):
            part = parts[index]
            part_parameters = [p for p in part.parameters() if p.requires_grad]
            part_context = context.detach().requires_grad_(True) if context_needs_grad else context
            if index == 0:
                # The true input is at hand: check the drift, then re-run from the exact values.
                with torch.no_grad():
                    rebuilt, _ = part.inverse(output, context)
                _check_drift(rebuilt, x, ctx.tolerance)
                leaf = x.detach().requires_grad_(True)
                with torch.enable_grad():
                    part_output, part_log_abs_det = part(leaf, part_context)
                part_input, leaves, assemble = leaf.detach(), (leaf,), _first
            else:
                part_input, leaves, part_output, part_log_abs_det, assemble = (
                    part.rebuild_for_backward(output, part_context)
                )
            with torch.enable_grad():
                part_log_abs_det = reduce_to_batch(part_log_abs_det, batch_rank)
                inputs = [*leaves, *part_parameters] + (
                    [part_context] if context_needs_grad else []
                )
                # A constant log-determinant (Squeeze, Permute, additive couplings) is not part of
                # the graph and has no gradient to pass on.
                candidates = ((part_output, grad_output), (part_log_abs_det, grad_log_abs_det))
                pairs = [(value, gradient) for value, gradient in candidates if value.requires_grad]
                grads = torch.autograd.grad(
                    [value for value, _ in pairs],
                    inputs,
                    [gradient for _, gradient in pairs],
                    allow_unused=True,
                )
            grad_output = assemble(grads[: len(leaves)])
            grads = grads[len(leaves) :]
            for parameter, gradient in zip(part_parameters, grads[: len(part_parameters)]):
                if gradient is not None:
                    key = id(parameter)
                    gradients[key] = gradient if key not in gradients else gradients[key] + gradient
            if context_needs_grad and grads[-1] is not None:
                context_gradient = (
                    grads[-1] if context_gradient is None else context_gradient + grads[-1]
                )
            output = part_input.detach()
        parameter_gradients = [gradients.get(id(p)) for p in parameters]
        return (None, context_gradient, None, None, grad_output, *parameter_gradients)


def _check_drift(rebuilt: Tensor, original: Tensor, tolerance: float) -> None:
    scale = float(original.abs().max()) + 1.0
    drift = float((rebuilt - original).abs().max())
    if not drift <= tolerance * scale:
        raise ReconstructionError(
            f"memory-saving backpropagation rebuilt a chain's input with error {drift:.3g}, above "
            f"the bound {tolerance:.3g} x {scale:.3g}; its gradients would be inaccurate. Train "
            "without memory_saving, in float64, or with better-conditioned layers (e.g. lower the "
            "learning rate)"
        )


def invertible_backprop(
    chain: nn.Module, x: Tensor, context: Tensor | None, tolerance: float, batch_rank: int
) -> tuple[Tensor, Tensor]:
    """Apply ``chain`` (a :class:`~flowkit.bijectors.Compose`) storing only its input and output.

    Args:
        chain: The composition; its parts must have exact inverses.
        x: Input.
        context: Conditioning input passed to every part.
        tolerance: Largest accepted reconstruction error of the input, relative to ``max|x| + 1``.
        batch_rank: Number of batch dimensions of ``x``.

    Raises:
        ReconstructionError: In backward, when the rebuilt input drifts beyond ``tolerance``.
    """
    parameters: Sequence[Tensor] = [p for p in chain.parameters() if p.requires_grad]
    return _InvertibleChain.apply(chain, context, tolerance, batch_rank, x, *parameters)

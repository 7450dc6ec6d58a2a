"""check_bijector: the Bijector contract, checked against brute force on any bijector."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.distributions import Transform, constraints, transform_to

from flowkit._checks import check_shape
from flowkit.bijectors.base import Bijector, InverseNotAvailable
from flowkit.initialization import DataDependentInit, initialize

__all__ = ["Tolerance", "check_bijector", "default_tolerance"]


@dataclass(frozen=True)
class Tolerance:
    """Absolute and relative tolerance: ``|a - b| <= atol + rtol * |b|`` elementwise."""

    atol: float
    rtol: float


def default_tolerance(dtype: torch.dtype) -> Tolerance:
    """Tolerances that exact bijectors meet: 1e-8 in float64, 1e-4 in float32 (documented)."""
    if dtype == torch.float64:
        return Tolerance(atol=1e-8, rtol=1e-8)
    return Tolerance(atol=1e-4, rtol=1e-4)


class _Checker:
    """Runs the checks of one bijector at one dtype and reports failures precisely."""

    def __init__(self, bijector: Bijector, tolerance: Tolerance, name: str) -> None:
        self.bijector = bijector
        self.tolerance = tolerance
        self.name = name

    def fail(self, message: str) -> None:
        raise AssertionError(f"check_bijector({self.name}): {message}")

    def close(
        self, what: str, actual: Tensor, expected: Tensor, inputs: Tensor, batch_rank: int
    ) -> None:
        if actual.shape != expected.shape:
            self.fail(f"{what}: shape {tuple(actual.shape)}, expected {tuple(expected.shape)}")
        error = (actual - expected).abs()
        allowed = self.tolerance.atol + self.tolerance.rtol * expected.abs()
        excess = error - allowed
        nonfinite = ~torch.isfinite(actual) & torch.isfinite(expected)
        if bool((excess > 0).any()) or bool(nonfinite.any()):
            flat = torch.where(nonfinite, torch.full_like(excess, math.inf), excess).flatten()
            worst = int(torch.argmax(flat))
            index = tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), error.shape))
            batch_index = index[:batch_rank]
            sample = inputs[batch_index] if batch_rank else inputs
            self.fail(
                f"{what} is off by {float(error.flatten()[worst]):.3g} (tolerance "
                f"{float(allowed.flatten()[worst]):.3g}): got {float(actual[index]):.10g}, "
                f"expected {float(expected[index]):.10g} at index {index}; the input at batch "
                f"index {batch_index} starts {_preview(sample)}"
            )

    def finite(self, what: str, value: Tensor) -> None:
        if not bool(torch.isfinite(value).all()):
            count = int((~torch.isfinite(value)).sum())
            self.fail(f"{what} has {count} non-finite value(s)")


def _preview(value: Tensor, count: int = 6) -> str:
    flat = value.detach().flatten()[:count].tolist()
    more = ", ..." if value.numel() > count else ""
    return "[" + ", ".join(f"{v:.4g}" for v in flat) + more + "]"


def _draw(
    constraint: constraints.Constraint,
    shape: Sequence[int],
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    scale: float,
) -> Tensor:
    unconstrained = torch.randn(tuple(shape), generator=generator, dtype=dtype) * scale
    unconstrained = unconstrained.to(device)
    if constraint is constraints.real or (
        isinstance(constraint, constraints.independent)
        and constraint.base_constraint is constraints.real
    ):
        return unconstrained
    return transform_to(constraint)(unconstrained)


def _perturb(bijector: Bijector, scale: float, generator: torch.Generator) -> None:
    with torch.no_grad():
        for parameter in bijector.parameters():
            if parameter.is_floating_point():
                noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
                parameter.add_(noise.to(parameter.dtype).to(parameter.device) * scale)


def check_bijector(
    bijector: Bijector,
    event_shape: Sequence[int],
    context_shape: Sequence[int] | None = None,
    *,
    x: Tensor | None = None,
    context: Tensor | None = None,
    batch_shape: Sequence[int] = (3,),
    dtype: torch.dtype = torch.float64,
    tolerance: Tolerance | None = None,
    seed: int = 0,
    input_scale: float = 1.0,
    perturb: float = 0.1,
    jacobian_max_size: int = 400,
    check_gradients: bool = True,
    check_transform: bool = True,
    requires_context: bool | None = None,
) -> None:
    """Check that ``bijector`` honours the Bijector contract, against brute force.

    The bijector is deep-copied and cast to ``dtype``; every floating parameter is moved by Gaussian
    noise of scale ``perturb``, so that zero-initialised layers (identity couplings) do not hide
    errors, and layers with data-dependent initialisation are then initialised on the input. In that
    order the initialisation keeps networks that contain ActNorm (Glow's conditioner) well scaled:
    noise added after it would be amplified by the scales it chose for the unperturbed weights,
    making the bijector ill-conditioned and the check fail for no fault of its own. Checked:

    1. shapes: ``forward_shape``/``inverse_shape`` agree with the outputs; ``log_abs_det`` has shape
       ``x.shape[:x.dim() - event_rank]``; dtype and device are kept; outputs are finite;
    2. forward then inverse reconstructs ``x``, and the inverse's log-determinant is minus the
       forward one;
    3. inverse then forward reconstructs a latent drawn from the codomain;
    4. the log-determinant equals ``slogdet`` of the brute-force autograd Jacobian of each batch
       element (events of at most ``jacobian_max_size`` elements), and the Jacobian between
       different batch elements is zero;
    5. batch elements are independent: changing one input, or one element's context, changes no
       other output or log-det;
    6. gradients of the outputs and log-determinant reach the parameters and are finite;
    7. conditional bijectors: the checks run with a context, and (``requires_context``) calling
       without one raises ValueError or TypeError;
    8. ``as_transform()`` obeys torch's Transform contract (values, inverse, ``t.inv.inv is t``,
       caching, ``log_abs_det_jacobian``, shapes, event dims).

    Args:
        bijector: The bijector under test (left untouched).
        event_shape: Event shape of the input.
        context_shape: Event shape of the context for conditional bijectors.
        x: Input to use instead of a random draw from the bijector's domain.
        context: Context to use instead of a standard normal draw.
        batch_shape: Batch shape of the random input.
        dtype: Floating dtype of the check (float64 for tight tolerances).
        tolerance: Absolute and relative tolerance; see :func:`default_tolerance`.
        seed: Seed of the input draw and parameter perturbation.
        input_scale: Standard deviation of the unconstrained input draw.
        perturb: Scale of the parameter perturbation (0 keeps the parameters).
        jacobian_max_size: Largest event (in elements) checked against the full Jacobian.
        check_gradients: Run check 6.
        check_transform: Run check 8.
        requires_context: Whether a missing context must raise (default: when ``context_shape``
            is given).

    Raises:
        AssertionError: Naming the property that failed, by how much, and on which input.
        TypeError: ``bijector`` is not a flowkit Bijector (wrap torch transforms with
            :func:`flowkit.from_transform`), or a shape is not a tuple of ints.

    Example:
        >>> from flowkit.bijectors import ActNorm
        >>> check_bijector(ActNorm(4), event_shape=(4, 3, 3))
    """
    _check_arguments(bijector, event_shape, context_shape, batch_shape)
    name = type(bijector).__name__
    tolerance = tolerance or default_tolerance(dtype)
    generator = torch.Generator().manual_seed(seed)
    device = next((p.device for p in bijector.parameters()), torch.device("cpu"))
    subject = copy.deepcopy(bijector).to(dtype)
    checker = _Checker(subject, tolerance, name)

    x, context, batch_rank = _inputs(
        subject,
        tuple(batch_shape),
        tuple(event_shape),
        context_shape,
        x,
        context,
        generator,
        dtype,
        device,
        input_scale,
    )

    if perturb:
        _perturb(subject, perturb, generator)
    if any(isinstance(m, DataDependentInit) for m in subject.modules()):
        initialize(subject, x, context, force=True)

    with torch.no_grad():
        _check_shapes_and_round_trip(
            checker, subject, x, context, batch_rank, generator, input_scale
        )
        _check_batch_independence(checker, subject, x, context, batch_rank, generator)
        _check_context_independence(
            checker, subject, x, context, context_shape, batch_rank, generator
        )
    if math.prod(event_shape) <= jacobian_max_size:
        _check_jacobian(checker, subject, x, context, batch_rank)
    if check_gradients:
        _check_gradients(checker, subject, x, context)
    if requires_context is None:
        requires_context = context_shape is not None
    if requires_context:
        _check_context_required(checker, subject, x)
    if check_transform:
        with torch.no_grad():
            _check_transform(checker, subject, x, context, batch_rank)


def _inputs(
    subject: Bijector,
    batch_shape: tuple[int, ...],
    event_shape: tuple[int, ...],
    context_shape: Sequence[int] | None,
    x: Tensor | None,
    context: Tensor | None,
    generator: torch.Generator,
    dtype: torch.dtype,
    device: torch.device,
    input_scale: float,
) -> tuple[Tensor, Tensor | None, int]:
    """The input (drawn from the domain unless given), its context and its batch rank.

    A given input, and a given floating context, are moved to ``dtype`` and ``device``.
    """
    if x is None:
        x = _draw(subject.domain, batch_shape + event_shape, generator, dtype, device, input_scale)
    else:
        x = x.to(dtype=dtype, device=device)
    batch_rank = x.dim() - len(event_shape)
    if context is None and context_shape is not None:
        context = torch.randn(
            tuple(x.shape[:batch_rank]) + tuple(context_shape), generator=generator, dtype=dtype
        ).to(device)
    elif context is not None and context.is_floating_point():
        context = context.to(dtype=dtype, device=device)
    return x, context, batch_rank


def _check_context_required(checker: _Checker, subject: Bijector, x: Tensor) -> None:
    """Calling a conditional bijector without its context must raise ValueError or TypeError."""
    try:
        subject(x, None)
    except (ValueError, TypeError):
        pass
    else:
        checker.fail("forward ran without its context; expected a ValueError or TypeError")


def _check_arguments(
    bijector: object,
    event_shape: object,
    context_shape: object,
    batch_shape: object,
) -> None:
    if not isinstance(bijector, Bijector):
        hint = (
            "; wrap a torch.distributions Transform with flowkit.from_transform"
            if isinstance(bijector, Transform)
            else "; a torch Transform can be wrapped with flowkit.from_transform"
        )
        raise TypeError(
            f"check_bijector expects a flowkit Bijector, got {type(bijector).__name__}{hint}"
        )
    check_shape("check_bijector", "event_shape", event_shape, minimum=1)
    if context_shape is not None:
        check_shape("check_bijector", "context_shape", context_shape, minimum=1)
    check_shape("check_bijector", "batch_shape", batch_shape, minimum=1)


def _check_shapes_and_round_trip(
    checker: _Checker,
    subject: Bijector,
    x: Tensor,
    context: Tensor | None,
    batch_rank: int,
    generator: torch.Generator,
    input_scale: float,
) -> None:
    if subject.event_rank > x.dim() - batch_rank:
        checker.fail(
            f"event_rank {subject.event_rank} exceeds the rank {x.dim() - batch_rank} of the event"
        )
    expected_latent_shape = tuple(subject.forward_shape(x.shape))
    z, log_abs_det = subject(x, context)
    if tuple(z.shape) != expected_latent_shape:
        checker.fail(
            f"forward gave shape {tuple(z.shape)}, forward_shape said {expected_latent_shape}"
        )
    if tuple(subject.inverse_shape(z.shape)) != tuple(x.shape):
        checker.fail(
            f"inverse_shape{tuple(z.shape)} = {tuple(subject.inverse_shape(z.shape))}, "
            f"expected the input shape {tuple(x.shape)}"
        )
    expected_log_det_shape = tuple(x.shape[: x.dim() - subject.event_rank])
    if tuple(log_abs_det.shape) != expected_log_det_shape:
        checker.fail(
            f"log_abs_det has shape {tuple(log_abs_det.shape)}, expected {expected_log_det_shape} "
            f"(the input shape less the {subject.event_rank} event dims)"
        )
    if z.dim() - subject.latent_rank != log_abs_det.dim():
        checker.fail(
            f"latent_rank {subject.latent_rank} does not match: z has shape {tuple(z.shape)} and "
            f"log_abs_det {tuple(log_abs_det.shape)}"
        )
    for what, value in (("z", z), ("log_abs_det", log_abs_det)):
        if value.dtype != x.dtype or value.device != x.device:
            checker.fail(
                f"{what} has dtype {value.dtype} on {value.device}, expected {x.dtype} on "
                f"{x.device}"
            )
        checker.finite(f"forward's {what}", value)

    try:
        x_back, inverse_log_abs_det = subject.inverse(z, context)
    except InverseNotAvailable:
        return
    checker.close("inverse(forward(x))", x_back, x, x, batch_rank)
    checker.close(
        "inverse's log_abs_det (vs minus forward's)",
        inverse_log_abs_det,
        -log_abs_det,
        x,
        batch_rank,
    )

    z_drawn = _draw(subject.codomain, z.shape, generator, x.dtype, x.device, input_scale)
    x_drawn, inverse_log_abs_det = subject.inverse(z_drawn, context)
    checker.finite("inverse of a drawn latent", x_drawn)
    z_back, forward_log_abs_det = subject(x_drawn, context)
    checker.close("forward(inverse(z))", z_back, z_drawn, z_drawn, batch_rank)
    checker.close(
        "forward's log_abs_det at inverse(z) (vs minus inverse's)",
        forward_log_abs_det,
        -inverse_log_abs_det,
        z_drawn,
        batch_rank,
    )


def _check_batch_independence(
    checker: _Checker,
    subject: Bijector,
    x: Tensor,
    context: Tensor | None,
    batch_rank: int,
    generator: torch.Generator,
) -> None:
    batch_size = math.prod(x.shape[:batch_rank])
    if batch_size < 2:
        return
    z, log_abs_det = subject(x, context)
    changed = x.clone()
    first = (0,) * batch_rank
    changed[first] = _draw(subject.domain, changed[first].shape, generator, x.dtype, x.device, 1.0)
    z_changed, log_abs_det_changed = subject(changed, context)
    rest = (slice(None),) * batch_rank
    keep = torch.ones(x.shape[:batch_rank], dtype=torch.bool, device=x.device)
    keep[first] = False
    for what, before, after in (
        ("z", z, z_changed),
        ("log_abs_det", log_abs_det, log_abs_det_changed),
    ):
        difference = (before[rest][keep] - after[rest][keep]).abs().max()
        if float(difference) > checker.tolerance.atol:
            checker.fail(
                f"batch elements are not independent: changing input {first} changed another "
                f"element's {what} by {float(difference):.3g}"
            )


def _check_context_independence(
    checker: _Checker,
    subject: Bijector,
    x: Tensor,
    context: Tensor | None,
    context_shape: Sequence[int] | None,
    batch_rank: int,
    generator: torch.Generator,
) -> None:
    """Changing the context of one batch element must change no other element's outputs.

    A bijector could mix rows through its context (a batch mean of the context, say) and pass every
    check of the input alone, so the context is varied on its own here.
    """
    batch_shape = x.shape[:batch_rank]
    if context is None or math.prod(batch_shape) < 2:
        return
    if context_shape is not None:
        # One context row per element, even when the context came broadcast over the batch.
        context = context.expand(batch_shape + torch.Size(context_shape))
    elif context.shape[:batch_rank] != batch_shape:
        return  # a shared context whose event shape is unknown: nothing to vary per row
    first = (0,) * batch_rank
    changed = _other_context(context, first, generator)
    if changed is None:
        return
    z, log_abs_det = subject(x, context)
    z_changed, log_abs_det_changed = subject(x, changed)
    keep = torch.ones(batch_shape, dtype=torch.bool, device=x.device)
    keep[first] = False
    for what, before, after in (
        ("z", z, z_changed),
        ("log_abs_det", log_abs_det, log_abs_det_changed),
    ):
        difference = (before[keep] - after[keep]).abs().max()
        if float(difference) > checker.tolerance.atol:
            checker.fail(
                f"batch elements are not independent: changing the context of element {first} "
                f"changed another element's {what} by {float(difference):.3g}"
            )


def _other_context(
    context: Tensor, first: tuple[int, ...], generator: torch.Generator
) -> Tensor | None:
    """``context`` with the row ``first`` replaced by a different value (None if none exists)."""
    changed = context.clone()
    if context.is_floating_point():
        noise = torch.randn(changed[first].shape, generator=generator, dtype=torch.float64)
        changed[first] = changed[first] + noise.to(context.dtype).to(context.device)
        return changed
    # Integer contexts (class labels) take another row's value, which is valid by construction.
    rows = context.reshape((-1,) + context.shape[len(first) :])
    for row in rows[1:]:
        if not torch.equal(row, context[first]):
            changed[first] = row
            return changed
    return None


def _check_jacobian(
    checker: _Checker, subject: Bijector, x: Tensor, context: Tensor | None, batch_rank: int
) -> None:
    batch_shape = x.shape[:batch_rank]
    batch_size = math.prod(batch_shape)
    flat_x = x.reshape((batch_size,) + x.shape[batch_rank:])
    event_size = math.prod(x.shape[batch_rank:])

    def forward(flat_input: Tensor) -> Tensor:
        value = flat_input.reshape(x.shape)
        z, _ = subject(value, context)
        return z.reshape(batch_size, -1)

    with torch.no_grad():
        z, log_abs_det = subject(x, context)
    latent_size = math.prod(z.shape[batch_rank:])
    if latent_size != event_size:
        checker.fail(f"maps {event_size} numbers to {latent_size}: not a bijection of one event")
    flat_input = flat_x.reshape(batch_size, -1)
    try:
        jacobian = torch.autograd.functional.jacobian(forward, flat_input, vectorize=True)
    except RuntimeError:  # some operations have no batching rule for vmap
        jacobian = torch.autograd.functional.jacobian(forward, flat_input)
    jacobian = jacobian.reshape(batch_size, event_size, batch_size, event_size)
    brute_force = torch.empty(batch_size, dtype=torch.float64)
    for i in range(batch_size):
        for j in range(batch_size):
            if i != j and float(jacobian[i, :, j].abs().max()) > checker.tolerance.atol:
                checker.fail(
                    f"batch elements are not independent: output {i} depends on input {j} "
                    f"(Jacobian entry up to {float(jacobian[i, :, j].abs().max()):.3g})"
                )
        sign, brute_force[i] = torch.linalg.slogdet(jacobian[i, :, i].double())
        if float(sign) == 0:
            checker.fail(f"the Jacobian of batch element {i} is singular")
    # One comparison over the whole batch, so that the message names the batch index that failed.
    checker.close(
        "log_abs_det vs brute-force slogdet of the autograd Jacobian",
        log_abs_det.reshape(batch_size, -1).sum(-1).reshape(batch_shape),
        brute_force.to(log_abs_det.dtype).reshape(batch_shape),
        x,
        batch_rank,
    )


def _check_gradients(
    checker: _Checker, subject: Bijector, x: Tensor, context: Tensor | None
) -> None:
    parameters = [p for p in subject.parameters() if p.requires_grad and p.is_floating_point()]
    inputs = x.clone().requires_grad_(True)
    z, log_abs_det = subject(inputs, context)
    objective = log_abs_det.sum() + 0.5 * z.square().sum()
    gradients = torch.autograd.grad(objective, [inputs, *parameters], allow_unused=True)
    names = {id(p): n for n, p in subject.named_parameters()}
    checker.finite("the gradient with respect to the input", gradients[0])
    for parameter, gradient in zip(parameters, gradients[1:]):
        if gradient is not None:
            checker.finite(f"the gradient of parameter {names.get(id(parameter), '?')}", gradient)


def _check_transform(
    checker: _Checker, subject: Bijector, x: Tensor, context: Tensor | None, batch_rank: int
) -> None:
    transform = subject.as_transform(context)
    z, log_abs_det = subject(x, context)
    y = transform(x)
    checker.close("as_transform()(x)", y, z, x, batch_rank)
    if transform.inv.inv is not transform:
        checker.fail("as_transform(): t.inv.inv is not t")
    if transform.domain.event_dim != subject.event_rank:
        checker.fail(
            f"as_transform().domain.event_dim is {transform.domain.event_dim}, "
            f"expected the event rank {subject.event_rank}"
        )
    if transform.codomain.event_dim != subject.latent_rank:
        checker.fail(
            f"as_transform().codomain.event_dim is {transform.codomain.event_dim}, "
            f"expected the latent rank {subject.latent_rank}"
        )
    checker.close(
        "as_transform().log_abs_det_jacobian",
        transform.log_abs_det_jacobian(x, y),
        log_abs_det,
        x,
        batch_rank,
    )
    if tuple(transform.forward_shape(x.shape)) != tuple(z.shape):
        checker.fail("as_transform().forward_shape disagrees with the output shape")
    if tuple(transform.inverse_shape(z.shape)) != tuple(x.shape):
        checker.fail("as_transform().inverse_shape disagrees with the input shape")
    try:
        if transform.inv(y) is not x:
            checker.fail("as_transform() with cache_size=1 did not return the cached input")
        uncached = subject.as_transform(context, cache_size=0)
        checker.close("as_transform().inv(z)", uncached.inv(z), x, x, batch_rank)
    except InverseNotAvailable:
        return

"""Planar flow: a contraction or expansion of space along one hyperplane's normal."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_int
from flowkit._tensors import check_dtype, check_event_shape
from flowkit.bijectors._amortized import ContextOffsets
from flowkit.bijectors._monotone import solve_increasing
from flowkit.bijectors.base import Bijector, Shape

__all__ = ["Planar"]

# softplus(log(e - 1)) = 1: the raw inner product w^T u at which the constrained w^T u_hat is 0,
# so that u = log(e - 1) w / |w|^2 gives u_hat = 0 and the identity map.
IDENTITY_INNER_PRODUCT = math.log(math.e - 1)
# |w|^2 is clamped here before dividing: w = 0 makes the map a translation, and u_hat = u then.
MIN_SQUARED_NORM = 1e-30


class Planar(Bijector):
    r"""Planar flow (Rezende & Mohamed, 2015), closed-form in the sampling direction.

    The generative map (``inverse``, latent :math:`z` to data :math:`x`) is
    :math:`x = z + \hat u \tanh(w^T z + b)`, with
    :math:`\log|\det \partial x / \partial z| = \log(1 + w^T \hat u \tanh'(w^T z + b))`;
    here :math:`w, u \in \mathbb{R}^D`, :math:`b \in \mathbb{R}`, and the paper's appendix
    reparameterisation :math:`\hat u = u + (m(w^T u) - w^T u)\, w / \|w\|^2`,
    :math:`m(a) = -1 + \mathrm{softplus}(a)`, so that :math:`w^T \hat u > -1` and the map is
    invertible for every value of the raw parameters. (In floating point, while
    :math:`\mathrm{softplus}(w^T u)` stays above the rounding error of :math:`w^T \hat u`, about
    :math:`\epsilon |w^T u|`: below :math:`w^T u \approx -30` in float64, or -12 in float32, the
    map folds to working precision.)

    ``inverse`` is one pass, :math:`O(D)` per sample: the direction variational inference samples
    in (``Flow.sample_and_log_prob``). ``forward`` (data to latent, the density of a given point)
    has no closed form: projecting onto :math:`w` leaves the scalar equation
    :math:`a + w^T \hat u \tanh(a) = w^T x + b` for :math:`a = w^T z + b`, increasing in
    :math:`a` and bracketed in :math:`w^T x + b \pm |w^T \hat u|`, which safeguarded Newton solves
    to working precision (typically 5-10 iterations, at most 100, each :math:`O(1)` per sample
    after one :math:`O(D)` projection); then :math:`z = x - \hat u \tanh(a)`. Gradients of
    ``forward`` are exact by the implicit function theorem (one differentiable Newton step at the
    root), so the map also trains by maximum likelihood, at the cost of the solve.

    The map starts as the identity (:math:`\hat u = 0`, :math:`w` random, :math:`b = 0`). With
    ``context_features`` it is amortised, as in the paper's variational auto-encoders: each
    sample's :math:`u, w, b` are the shared ones plus a linear function of its context (an
    encoder's output, say), zero at the start.

    Args:
        features: Size ``D`` of the vectors.
        context_features: Size ``C`` of the context vectors, or None for one map for all.
        seed: Seed of the random initial :math:`w` (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, C)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Rezende & Mohamed, Variational Inference with Normalizing Flows (2015), section 4.1 and
        appendix A.1.

    Example:
        >>> planar = Planar(2, seed=0)
        >>> with torch.no_grad():
        ...     _ = planar.u.copy_(torch.tensor([2.0, -1.0]))
        >>> x, log_abs_det = planar.inverse(torch.randn(5, 2))  # closed form
        >>> z, _ = planar(x)  # root find
        >>> x.shape, log_abs_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    event_rank = 1

    def __init__(
        self, features: int, *, context_features: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__()
        self.features = check_int("Planar", "features", features, 1)
        self.context_features = check_int(
            "Planar", "context_features", context_features, 1, optional=True
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        w = torch.randn(self.features, generator=generator) / math.sqrt(self.features)
        self.w = nn.Parameter(w)
        self.u = nn.Parameter(IDENTITY_INNER_PRODUCT * w / w.square().sum())
        self.b = nn.Parameter(torch.zeros(()))
        self.amortizer: ContextOffsets | None = None
        if self.context_features is not None:
            shapes = [self.u.shape, self.w.shape, self.b.shape]
            self.amortizer = ContextOffsets("Planar", self.context_features, shapes)

    def _map_parameters(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r""":math:`\hat u, w, b` and :math:`w^T \hat u`, one set per sample if amortised."""
        u: Tensor = self.u
        w: Tensor = self.w
        b: Tensor = self.b
        if self.amortizer is not None:
            u, w, b = self.amortizer.offset((u, w, b), context)
        inner = (w * u).sum(-1)
        squared_norm = w.square().sum(-1).clamp_min(MIN_SQUARED_NORM)
        scale = (F.softplus(inner) - 1 - inner) / squared_norm
        u_hat = u + scale.unsqueeze(-1) * w
        return u_hat, w, b, (w * u_hat).sum(-1)

    def constrained_u(self, context: Tensor | None = None) -> Tensor:
        r""":math:`\hat u`, whose inner product with :math:`w` is above -1 (so invertible)."""
        return self._map_parameters(context)[0]

    def _log_abs_det(self, pre_activation: Tensor, inner: Tensor) -> Tensor:
        r""":math:`\log(1 + w^T \hat u \tanh'(a))`, the generative map's log-determinant."""
        derivative = 1 - torch.tanh(pre_activation).square()
        return torch.log1p(inner * derivative)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent by a 1-D root find; return ``(z, log_abs_det)``."""
        self._check(x, "input")
        u_hat, w, b, inner = self._map_parameters(context)
        target = (x * w).sum(-1) + b
        fixed_inner = inner.detach()

        def equation(a: Tensor) -> tuple[Tensor, Tensor]:
            tanh = torch.tanh(a)
            return a + fixed_inner * tanh, 1 + fixed_inner * (1 - tanh.square())

        spread = fixed_inner.abs()
        root = solve_increasing(
            equation, target.detach(), target.detach() - spread, target.detach() + spread
        )
        # One Newton step under autograd: the value stays the root (to rounding), and its
        # gradient is the implicit function theorem's, -(dg/dtheta) / (dg/da).
        tanh = torch.tanh(root)
        residual = root + inner * tanh - target
        pre_activation = root - residual / (1 + fixed_inner * (1 - tanh.square()))
        z = x - u_hat * torch.tanh(pre_activation).unsqueeze(-1)
        return z, -self._log_abs_det(pre_activation, inner)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data in closed form; return ``(x, log_abs_det)``."""
        self._check(z, "latent")
        u_hat, w, b, inner = self._map_parameters(context)
        pre_activation = (z * w).sum(-1) + b
        x = z + u_hat * torch.tanh(pre_activation).unsqueeze(-1)
        return x, self._log_abs_det(pre_activation, inner)

    def _check(self, value: Tensor, what: str) -> None:
        check_dtype("Planar", value, what)
        check_event_shape("Planar", value, (self.features,), what)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape("Planar", shape, (self.features,))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape("Planar", shape, (self.features,), "latent")
        return torch.Size(shape)

    def extra_repr(self) -> str:
        """Features and context features, for ``repr``."""
        return f"{self.features}, context_features={self.context_features}"

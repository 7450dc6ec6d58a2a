"""Radial flow: a contraction or expansion of space around one reference point."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_int
from flowkit._tensors import check_dtype, check_event_shape
from flowkit.bijectors._amortized import ContextOffsets
from flowkit.bijectors.base import Bijector, Shape

__all__ = ["Radial"]


class Radial(Bijector):
    r"""Radial flow (Rezende & Mohamed, 2015); both directions in closed form.

    The generative map (``inverse``, latent :math:`z` to data :math:`x`) moves each point along
    the ray from a reference point :math:`z_0`:
    :math:`x = z + \frac{\beta}{\alpha + r} (z - z_0)` with :math:`r = \|z - z_0\|`, and
    :math:`\log|\det \partial x / \partial z| =
    (D - 1) \log(1 + \frac{\beta}{\alpha + r}) + \log(1 + \frac{\alpha \beta}{(\alpha + r)^2})`,
    with :math:`\alpha = \mathrm{softplus}(\tilde\alpha) > 0` and
    :math:`\beta = -\alpha + \mathrm{softplus}(\tilde\beta) > -\alpha` (the paper's appendix
    condition for invertibility), so the map is invertible for every value of the raw
    parameters :math:`\tilde\alpha, \tilde\beta, z_0`.

    ``inverse`` is one pass, :math:`O(D)` per sample: the direction variational inference samples
    in. ``forward`` (data to latent) is closed-form too, at the same cost: the radius
    :math:`r` of :math:`z` solves :math:`r + \beta r / (\alpha + r) = \|x - z_0\|`, the
    quadratic :math:`r^2 + (\alpha + \beta - \|x - z_0\|) r - \alpha \|x - z_0\| = 0`, whose
    positive root is taken in the form that avoids cancellation; then
    :math:`z = z_0 + (x - z_0) (\alpha + r) / (\alpha + r + \beta)`.

    The map starts as the identity (:math:`\beta = 0`, :math:`z_0` random). With
    ``context_features`` it is amortised: each sample's :math:`z_0, \tilde\alpha, \tilde\beta`
    are the shared ones plus a linear function of its context, zero at the start.

    Args:
        features: Size ``D`` of the vectors.
        context_features: Size ``C`` of the context vectors, or None for one map for all.
        seed: Seed of the random initial :math:`z_0` (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, C)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.

    References:
        Rezende & Mohamed, Variational Inference with Normalizing Flows (2015), section 4.1 and
        appendix A.2.

    Example:
        >>> radial = Radial(2, seed=0)
        >>> with torch.no_grad():
        ...     _ = radial.raw_beta.fill_(2.0)
        >>> z = torch.randn(5, 2)
        >>> x, log_abs_det = radial.inverse(z)
        >>> bool(torch.allclose(radial(x)[0], z, atol=1e-5))
        True
    """

    event_rank = 1

    def __init__(
        self, features: int, *, context_features: int | None = None, seed: int | None = None
    ) -> None:
        super().__init__()
        self.features = check_int("Radial", "features", features, 1)
        self.context_features = check_int(
            "Radial", "context_features", context_features, 1, optional=True
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        self.reference = nn.Parameter(torch.randn(self.features, generator=generator))
        # softplus(0) - softplus(0) = 0: beta starts at zero, the identity.
        self.raw_alpha = nn.Parameter(torch.zeros(()))
        self.raw_beta = nn.Parameter(torch.zeros(()))
        self.amortizer: ContextOffsets | None = None
        if self.context_features is not None:
            shapes = [self.reference.shape, self.raw_alpha.shape, self.raw_beta.shape]
            self.amortizer = ContextOffsets("Radial", self.context_features, shapes)

    def _map_parameters(self, context: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        r""":math:`z_0, \alpha, \beta`, one set per sample if amortised."""
        reference: Tensor = self.reference
        raw_alpha: Tensor = self.raw_alpha
        raw_beta: Tensor = self.raw_beta
        if self.amortizer is not None:
            reference, raw_alpha, raw_beta = self.amortizer.offset(
                (reference, raw_alpha, raw_beta), context
            )
        alpha = F.softplus(raw_alpha)
        return reference, alpha, F.softplus(raw_beta) - alpha

    def alpha_beta(self, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        r""":math:`(\alpha, \beta)` with :math:`\alpha > 0` and :math:`\beta > -\alpha`."""
        _, alpha, beta = self._map_parameters(context)
        return alpha, beta

    def _log_abs_det(self, radius: Tensor, alpha: Tensor, beta: Tensor) -> Tensor:
        """The generative map's log-determinant at latent radius ``radius``."""
        shifted = alpha + radius
        along = torch.log1p(alpha * beta / shifted.square())
        return (self.features - 1) * torch.log1p(beta / shifted) + along

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent in closed form; return ``(z, log_abs_det)``."""
        self._check(x, "input")
        reference, alpha, beta = self._map_parameters(context)
        offset = x - reference
        data_radius = offset.norm(dim=-1)
        # The positive root of r^2 + c r - alpha * data_radius = 0 with c = alpha + beta -
        # data_radius: (-c + s) / 2 cancels for c > 0, where the equal 2 alpha data_radius /
        # (c + s) does not; q = |c| + s serves both, and is positive since c = 0 forces a positive
        # data_radius (alpha + beta > 0).
        c = alpha + beta - data_radius
        q = c.abs() + torch.sqrt(c.square() + 4 * alpha * data_radius)
        radius = torch.where(c > 0, 2 * alpha * data_radius / q, q / 2)
        z = reference + offset * ((alpha + radius) / (alpha + radius + beta)).unsqueeze(-1)
        return z, -self._log_abs_det(radius, alpha, beta)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data in closed form; return ``(x, log_abs_det)``."""
        self._check(z, "latent")
        reference, alpha, beta = self._map_parameters(context)
        offset = z - reference
        radius = offset.norm(dim=-1)
        x = z + offset * (beta / (alpha + radius)).unsqueeze(-1)
        return x, self._log_abs_det(radius, alpha, beta)

    def _check(self, value: Tensor, what: str) -> None:
        check_dtype("Radial", value, what)
        check_event_shape("Radial", value, (self.features,), what)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape("Radial", shape, (self.features,))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape("Radial", shape, (self.features,), "latent")
        return torch.Size(shape)

    def extra_repr(self) -> str:
        """Features and context features, for ``repr``."""
        return f"{self.features}, context_features={self.context_features}"

"""Two-dimensional energies of normflows' examples: two moons and concentric rings."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from flowkit.variational.targets.base import Target

__all__ = ["RingMixture", "TwoMoons"]

# log of the integral of exp(log p~) over the plane, computed once in float64 by scipy's dblquad
# in polar coordinates (r in [0, 10], relative tolerance 1e-11); tests check it on a fine grid.
TWO_MOONS_LOG_Z = 0.8042144486321199


class TwoMoons(Target):
    r"""Two moons on a ring of radius 2 (normflows' ``TwoMoons``, its ``TwoModes(2, 0.1)``).

    .. math::
        \log \tilde p(x) = -\frac12 \Big(\frac{\|x\| - 2}{0.2}\Big)^2
        + \log\Big(e^{-\frac12 ((x_1 - 2)/0.3)^2} + e^{-\frac12 ((x_1 + 2)/0.3)^2}\Big),

    computed, as normflows does, in the equal form
    :math:`-\frac12((\|x\|-2)/0.2)^2 - \frac12((|x_1|-2)/0.3)^2 + \log(1 + e^{-4|x_1|/0.09})`.
    :math:`\log Z \approx 0.80421` (numerical integration); no exact sampler.

    References:
        Rezende & Mohamed, Variational Inference with Normalizing Flows (2015), its first energy;
        Stimper et al., normflows (2023).

    Example:
        >>> target = TwoMoons()
        >>> target(torch.tensor([[2.0, 0.0], [0.0, 0.0]])).exp() > 0.5
        tensor([ True, False])
    """

    def __init__(self) -> None:
        super().__init__(2, TWO_MOONS_LOG_Z)

    def _log_density(self, x: Tensor) -> Tensor:
        a = x[:, 0].abs()
        return (
            -0.5 * ((torch.linalg.vector_norm(x, dim=-1) - 2) / 0.2) ** 2
            - 0.5 * ((a - 2) / 0.3) ** 2
            + torch.log1p(torch.exp(-4 * a / 0.09))
        )


class RingMixture(Target):
    r"""Concentric rings (normflows' ``RingMixture``).

    With ``n`` rings of radii :math:`r_i = 2 i / n` and width :math:`s = 1 / (4 n)`,
    :math:`\log \tilde p(x) = \log \sum_{i=1}^{n} \exp(-(\|x\| - r_i)^2 / (2 s^2))`.
    Its normalising constant is closed-form: in polar coordinates each ring contributes
    :math:`2\pi [s^2 e^{-r_i^2/(2 s^2)} + r_i s \sqrt{2\pi}\, \Phi(r_i / s)]`. No exact sampler.

    Args:
        rings: The number of rings ``n``.

    Example:
        >>> target = RingMixture()
        >>> round(target.log_z, 4)
        1.776
    """

    def __init__(self, rings: int = 2) -> None:
        if isinstance(rings, bool) or not isinstance(rings, int) or rings < 1:
            raise ValueError(f"RingMixture expects rings as an int >= 1, got {rings!r}")
        self.rings = rings
        self.width = 1 / 4 / rings
        radii = [2 / rings * (i + 1) for i in range(rings)]
        super().__init__(2, _ring_log_z(radii, self.width))
        self.register_buffer("radii", torch.tensor(radii, dtype=torch.float64), persistent=False)

    def _log_density(self, x: Tensor) -> Tensor:
        radius = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        distance = (radius - self.radii.to(x)).square() / (2 * self.width**2)
        return torch.logsumexp(-distance, dim=-1)


def _ring_log_z(radii: list[float], width: float) -> float:
    total = 0.0
    for radius in radii:
        ratio = radius / width
        normal_cdf = 0.5 * math.erfc(-ratio / math.sqrt(2))
        inner = width**2 * math.exp(-0.5 * ratio**2)
        total += 2 * math.pi * (inner + radius * width * math.sqrt(2 * math.pi) * normal_cdf)
    return math.log(total)

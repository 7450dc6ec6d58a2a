"""Neural circular spline flows (NCSF): densities of angles on the circle and the torus."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from flowkit._checks import (
    MAX_BINS,
    MAX_FEATURES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_SEED,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import Bijector, channel_mask
from flowkit.bijectors.circular import CircularSplineAutoregressive, CircularSplineCoupling
from flowkit.distributions import Distribution, Flow
from flowkit.distributions.circular import CircularUniform, VonMises
from flowkit.nn import MLP
from flowkit.presets._construction import build_seeded, check_parameter_count, mlp_parameter_count
from flowkit.presets.vector import _assemble

__all__ = ["NCSFConfig", "build_ncsf", "ncsf"]

BASES = ("uniform", "von_mises")


@dataclass(frozen=True)
class NCSFConfig:
    """Architecture of a neural circular spline flow; :func:`ncsf` explains each field."""

    features: int
    context_features: int | None = None
    transforms: int = 4
    bins: int = 8
    hidden_features: tuple[int, ...] = (64, 64)
    autoregressive: bool = False
    base: str = "uniform"
    concentration: float = 1.0
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "NCSFConfig"
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        features = check_int(owner, "features", self.features, 1, MAX_FEATURES)
        context = check_int(
            owner, "context_features", self.context_features, 1, MAX_FEATURES, optional=True
        )
        transforms = check_int(owner, "transforms", self.transforms, 1, MAX_STEPS)
        bins = check_int(owner, "bins", self.bins, 2, MAX_BINS)
        widths = check_shape(owner, "hidden_features", self.hidden_features, maximum=MAX_WIDTH)
        if not widths:
            raise ValueError(
                f"{owner} expects at least one hidden layer in hidden_features, got ()"
            )
        object.__setattr__(self, "hidden_features", widths)
        check_bool(owner, "autoregressive", self.autoregressive)
        check_choice(owner, "base", self.base, BASES)
        check_float(owner, "concentration", self.concentration, 0.0, exclusive_minimum=True)
        assert features is not None and transforms is not None and bins is not None
        if not self.autoregressive and features < 2:
            raise ValueError(
                f"{owner}: a coupling flow needs features >= 2 to split, got {features}; use "
                "autoregressive=True for one angle"
            )
        inputs = features if self.autoregressive else 2 * (features // 2)
        check_parameter_count(
            owner,
            transforms
            * mlp_parameter_count(inputs + (context or 0), widths, features * (3 * bins + 1)),
            f"features={features}, context_features={context}, transforms={transforms}, "
            f"hidden_features={widths}",
        )


def build_ncsf(config: NCSFConfig) -> Flow:
    """The flow described by ``config``; see :func:`ncsf`."""
    return build_seeded(config.seed, lambda _: _build_ncsf(config))


def _build_ncsf(config: NCSFConfig) -> Flow:
    features, bins = config.features, config.bins

    def make_step() -> Bijector:
        if config.autoregressive:
            return CircularSplineAutoregressive(
                features,
                bins=bins,
                context_features=config.context_features,
                hidden_features=config.hidden_features,
            )
        kept = features // 2
        conditioner = MLP(
            2 * kept,
            (3 * bins + 1) * (features - kept),
            config.hidden_features,
            context_features=config.context_features,
        )
        return CircularSplineCoupling(conditioner, channel_mask(features, event_rank=1), bins=bins)

    base: Distribution
    if config.base == "von_mises":
        base = VonMises((features,), concentration=config.concentration)
    else:
        base = CircularUniform((features,))
    return _assemble(
        features, config.context_features, config.transforms, False, make_step, base=base
    )


def ncsf(
    features: int,
    context_features: int | None = None,
    *,
    transforms: int = 4,
    bins: int = 8,
    hidden_features: Sequence[int] = (64, 64),
    autoregressive: bool = False,
    base: str = "uniform",
    concentration: float = 1.0,
    seed: int | None = None,
) -> Flow:
    r"""Neural circular spline flow: a density of ``D`` angles on the torus :math:`[-\pi, \pi)^D`.

    Each step is a :class:`~flowkit.bijectors.CircularSplineCoupling` (the first ``D // 2``
    angles, as cosines and sines through an :class:`~flowkit.nn.MLP`, parameterise circular
    splines of the rest) or, with ``autoregressive=True``, a
    :class:`~flowkit.bijectors.CircularSplineAutoregressive` (a MADE; also for ``D = 1``). Steps
    are separated by reversals of the angles. The base is uniform on the torus
    (:class:`~flowkit.distributions.CircularUniform`) or von Mises with mean 0 and concentration
    ``concentration`` (:class:`~flowkit.distributions.VonMises`). The networks' output layers
    start at zero, so the flow starts as its base.

    The data are angles in radians in :math:`[-\pi, \pi)`; the flow's support says so, and the
    table pipeline (``flowkit train``, :func:`flowkit.fit`) passes them unstandardised and refuses
    values outside it.

    Args:
        features: Number of angles ``D`` (at least 2 for couplings).
        context_features: Dimension of the conditioning vector, or None.
        transforms: Number of spline steps.
        bins: Number of spline bins :math:`K`.
        hidden_features: Widths of each conditioner's hidden layers.
        autoregressive: Autoregressive steps instead of couplings.
        base: ``"uniform"`` or ``"von_mises"``.
        concentration: :math:`\kappa` of the von Mises base.
        seed: Draw every initial weight from this seed (None: torch's global generator).

    Returns:
        The :class:`~flowkit.Flow`.

    References:
        Rezende, Papamakarios, Racanière, Albergo, Kanwar, Shanahan & Cranmer, Normalizing Flows
        on Tori and Spheres (2020).

    Example:
        >>> import torch
        >>> flow = ncsf(2, transforms=2, bins=4, hidden_features=(16,))
        >>> angles = flow.sample(5)
        >>> bool(((angles >= -torch.pi) & (angles < torch.pi)).all())
        True
    """
    return build_ncsf(
        NCSFConfig(
            features,
            context_features,
            transforms=transforms,
            bins=bins,
            hidden_features=hidden_features,  # type: ignore[arg-type]
            autoregressive=autoregressive,
            base=base,
            concentration=concentration,
            seed=seed,
        )
    )

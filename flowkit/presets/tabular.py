"""RealNVP for vectors (tabular data): alternating affine couplings with MLP conditioners."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from flowkit._checks import (
    MAX_FEATURES,
    MAX_SEED,
    MAX_STEPS,
    MAX_WIDTH,
    MIN_SEED,
    check_choice,
    check_int,
    check_shape,
)
from flowkit.bijectors import (
    ActNorm,
    AffineCoupling,
    BatchNorm,
    Bijector,
    Compose,
    channel_mask,
)
from flowkit.distributions import Flow, StandardNormal
from flowkit.nn import MLP, ScaledTanh
from flowkit.presets._construction import build_seeded, check_parameter_count, mlp_parameter_count

__all__ = ["RealNVPTabularConfig", "build_realnvp_tabular", "realnvp_tabular"]

NORMALIZATIONS = ("batch", "act", None)


def realnvp_tabular(
    features: int,
    context_features: int | None = None,
    *,
    transforms: int = 5,
    hidden_features: Sequence[int] = (128, 128),
    normalization: str | None = "batch",
    seed: int | None = None,
) -> Flow:
    r"""RealNVP for vectors: ``transforms`` affine couplings with alternating masks.

    Coupling :math:`i` keeps the first :math:`\lfloor D/2 \rfloor` features (even :math:`i`) or
    the others (odd :math:`i`) and maps the rest by
    :math:`z_b = x_b \odot e^{a \tanh(h)} + t`, :math:`(t, h) = \mathrm{MLP}(x_a, c)`, with a
    zero-initialised output layer (:class:`~flowkit.nn.MLP`) and a learned per-feature range
    :math:`a` (:class:`~flowkit.nn.ScaledTanh`). Between couplings sits a normalisation layer:

    * ``"batch"`` — :class:`~flowkit.bijectors.BatchNorm`, as RealNVP and the MAF paper's RealNVP
      baseline. It normalises by batch statistics in training mode; call ``.eval()`` on the flow
      before sampling or evaluating single points.
    * ``"act"`` — :class:`~flowkit.bijectors.ActNorm`; initialise it with
      :func:`flowkit.initialize` on a batch of data.
    * None — nothing.

    With ``context_features`` the MLPs also receive a context vector, and the flow models
    :math:`p(x \mid c)`.

    Args:
        features: Dimension ``D >= 2`` of the data.
        context_features: Dimension of the context, or None for an unconditional flow.
        transforms: Number of coupling layers.
        hidden_features: Widths of the MLPs' hidden layers.
        normalization: ``"batch"``, ``"act"`` or None (see above).
        seed: Draw every initial weight from this seed, whatever torch's global random state
            (None: from torch's global generator).

    Returns:
        A :class:`~flowkit.Flow` over vectors of shape ``(D,)`` with a standard normal base.

    References:
        Dinh, Sohl-Dickstein & Bengio, Density estimation using Real NVP (2017);
        Papamakarios, Pavlakou & Murray, Masked Autoregressive Flow for Density Estimation
        (2017), section 4 (RealNVP on tabular data).

    Example:
        >>> import torch
        >>> flow = realnvp_tabular(2, transforms=2, hidden_features=(16,))
        >>> flow.log_prob(torch.randn(8, 2)).shape
        torch.Size([8])
    """
    features = check_int("realnvp_tabular", "features", features, 2, MAX_FEATURES)
    context_features = check_int(
        "realnvp_tabular", "context_features", context_features, 1, MAX_FEATURES, optional=True
    )
    transforms = check_int("realnvp_tabular", "transforms", transforms, 1, MAX_STEPS)
    hidden_features = check_shape(
        "realnvp_tabular", "hidden_features", hidden_features, maximum=MAX_WIDTH
    )
    check_choice("realnvp_tabular", "normalization", normalization, NORMALIZATIONS)
    check_int("realnvp_tabular", "seed", seed, MIN_SEED, MAX_SEED, optional=True)
    assert features is not None and transforms is not None
    # Each coupling's MLP reads half the features (and the context) and returns two per other half.
    check_parameter_count(
        "realnvp_tabular",
        transforms
        * mlp_parameter_count(
            features // 2 + (context_features or 0), hidden_features, 2 * features
        ),
        f"features={features}, context_features={context_features}, transforms={transforms}, "
        f"hidden_features={hidden_features}",
    )
    return build_seeded(
        seed,
        lambda _: _assemble(features, context_features, transforms, hidden_features, normalization),
    )


def _assemble(
    features: int,
    context_features: int | None,
    transforms: int,
    hidden_features: tuple[int, ...],
    normalization: str | None,
) -> Flow:
    parts: list[Bijector] = []
    for index in range(transforms):
        mask = channel_mask(features, event_rank=1, flip=index % 2 == 1)
        kept = int(mask.sum())
        transformed = features - kept
        network = MLP(kept, 2 * transformed, hidden_features, context_features=context_features)
        parts.append(AffineCoupling(network, mask, scale_fn=ScaledTanh(transformed, event_rank=1)))
        if index < transforms - 1 and normalization == "batch":
            parts.append(BatchNorm(features))
        elif index < transforms - 1 and normalization == "act":
            parts.append(ActNorm(features, event_rank=1))
    context_shape = None if context_features is None else (context_features,)
    return Flow(StandardNormal((features,)), Compose(parts), context_shape=context_shape)


@dataclass(frozen=True)
class RealNVPTabularConfig:
    """Arguments of :func:`realnvp_tabular` as a frozen config (for registry and checkpoints)."""

    features: int
    context_features: int | None = None
    transforms: int = 5
    hidden_features: tuple[int, ...] = (128, 128)
    normalization: str | None = "batch"
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden_features", tuple(self.hidden_features))


def build_realnvp_tabular(config: RealNVPTabularConfig) -> Flow:
    """The flow described by ``config``; see :func:`realnvp_tabular`."""
    return realnvp_tabular(**dataclasses.asdict(config))

"""Continuous normalizing flows for vectors, trained by maximum likelihood or by flow matching."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from flowkit._checks import (
    MAX_FEATURES,
    MAX_SEED,
    MAX_WIDTH,
    MIN_SEED,
    check_bool,
    check_choice,
    check_float,
    check_int,
    check_shape,
)
from flowkit.bijectors import ContinuousFlow, ot_pairing
from flowkit.bijectors.continuous import PROBES, TRACES
from flowkit.distributions import Distribution, Flow, StandardNormal, TrainingLoss
from flowkit.nn import VectorFieldMLP
from flowkit.presets._construction import build_seeded, check_parameter_count, mlp_parameter_count

__all__ = ["CNFConfig", "CNFFlow", "build_cnf", "cnf"]

OBJECTIVES = ("likelihood", "flow_matching")
# How flow matching pairs each batch's base draws with its data rows.
COUPLINGS = ("independent", "ot")
# The vector field's activation, by name.
ACTIVATIONS: Mapping[str, type[nn.Module]] = MappingProxyType(
    {"elu": nn.ELU, "softplus": nn.Softplus, "tanh": nn.Tanh, "silu": nn.SiLU}
)
# More time features than this only slow the field down.
MAX_TIME_FREQUENCIES = 64


@dataclass(frozen=True)
class CNFConfig:
    """Architecture, solver and training objective of a continuous flow (see :func:`cnf`).

    A stored config without ``activation`` was written when the field was always softplus:
    :attr:`STORED_DEFAULTS` rebuilds that model.
    """

    STORED_DEFAULTS: ClassVar[Mapping[str, Any]] = MappingProxyType({"activation": "softplus"})

    features: int
    context_features: int | None = None
    hidden_features: tuple[int, ...] = (64, 64)
    time_frequencies: int = 3
    activation: str = "elu"
    method: str = "dopri5"
    rtol: float = 1e-5
    atol: float = 1e-5
    step_size: float | None = None
    adjoint: bool = False
    trace: str = "exact"
    probe: str = "rademacher"
    objective: str = "likelihood"
    sigma_min: float = 0.0
    coupling: str = "independent"
    kinetic_weight: float = 0.0
    jacobian_weight: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        owner = "CNFConfig"
        check_int(owner, "features", self.features, 1, MAX_FEATURES)
        check_int(owner, "context_features", self.context_features, 1, MAX_FEATURES, optional=True)
        widths = check_shape(owner, "hidden_features", self.hidden_features, maximum=MAX_WIDTH)
        object.__setattr__(self, "hidden_features", widths)
        check_int(owner, "time_frequencies", self.time_frequencies, 0, MAX_TIME_FREQUENCIES)
        check_choice(owner, "activation", self.activation, tuple(ACTIVATIONS))
        if not isinstance(self.method, str):
            raise ValueError(f"{owner} expects method as a string, got {self.method!r}")
        check_float(owner, "rtol", self.rtol, 0.0, exclusive_minimum=True)
        check_float(owner, "atol", self.atol, 0.0, exclusive_minimum=True)
        if self.step_size is not None:
            check_float(owner, "step_size", self.step_size, 0.0, 1.0, exclusive_minimum=True)
        check_bool(owner, "adjoint", self.adjoint)
        check_choice(owner, "trace", self.trace, TRACES)
        check_choice(owner, "probe", self.probe, PROBES)
        check_choice(owner, "objective", self.objective, OBJECTIVES)
        check_float(owner, "sigma_min", self.sigma_min, 0.0, 1.0, exclusive_maximum=True)
        check_choice(owner, "coupling", self.coupling, COUPLINGS)
        if self.coupling != "independent" and self.objective != "flow_matching":
            raise ValueError(
                f"{owner}: coupling pairs base draws with data rows for flow matching; the "
                f"likelihood draws none (got coupling={self.coupling!r} with "
                f"objective={self.objective!r}; expected objective='flow_matching' or "
                "coupling='independent')"
            )
        check_float(owner, "kinetic_weight", self.kinetic_weight, 0.0)
        check_float(owner, "jacobian_weight", self.jacobian_weight, 0.0)
        if self.objective == "flow_matching" and (self.kinetic_weight or self.jacobian_weight):
            raise ValueError(
                f"{owner}: kinetic_weight and jacobian_weight regularise the likelihood's ODE "
                f"solve; flow matching solves none (got kinetic_weight={self.kinetic_weight}, "
                f"jacobian_weight={self.jacobian_weight} with objective='flow_matching')"
            )
        check_int(owner, "seed", self.seed, MIN_SEED, MAX_SEED, optional=True)
        inputs = self.features + 1 + 2 * self.time_frequencies + (self.context_features or 0)
        check_parameter_count(
            owner,
            mlp_parameter_count(inputs, widths, self.features),
            f"features={self.features}, hidden_features={widths}",
        )


class CNFFlow(Flow):
    r"""The :class:`~flowkit.Flow` of :func:`cnf`, with its training objective as a hook.

    :meth:`training_loss` gives the trainer the loss ``config.objective`` names:

    * ``"likelihood"`` — the negative log-likelihood (FFJORD). Without penalties the hook
      returns None and the trainer computes it as for any flow; with ``kinetic_weight`` or
      ``jacobian_weight`` (RNODE) the hook returns the NLL plus the weighted kinetic energy and
      Jacobian norm, integrated in the same solve, and logs both (``kinetic_energy``,
      ``jacobian_frobenius``).
    * ``"flow_matching"`` — the conditional flow-matching loss of
      :meth:`~flowkit.bijectors.ContinuousFlow.flow_matching_loss` with a fresh base draw per
      example (logged as ``flow_matching``); no ODE is solved. The trainer's ``train_nll``
      column then holds this loss, not a likelihood. With ``coupling="ot"`` the batch's draws
      are first re-paired with its rows by :func:`~flowkit.bijectors.ot_pairing` (OT-CFM).

    Either way, test and validation values come from :meth:`log_prob`: the exact trace through
    the ODE solve.

    Attributes:
        config: The :class:`CNFConfig` the model was built from.
    """

    config: CNFConfig
    bijector: ContinuousFlow

    def __init__(self, base: Distribution, bijector: ContinuousFlow, config: CNFConfig) -> None:
        context_shape = None if config.context_features is None else (config.context_features,)
        super().__init__(base, bijector, context_shape=context_shape)
        self.config = config

    def training_loss(self, x: Tensor, context: Tensor | None) -> TrainingLoss | None:
        """The flow-matching loss, or the likelihood with RNODE's penalties (None: plain NLL)."""
        config = self.config
        if config.objective == "flow_matching":
            noise = torch.randn_like(x)
            if config.coupling == "ot":
                noise = ot_pairing(x, noise)
            value = self.bijector.flow_matching_loss(x, noise, context, sigma_min=config.sigma_min)
            return TrainingLoss(value.mean(), metrics={"flow_matching": value})
        if not (config.kinetic_weight or config.jacobian_weight):
            return None
        z, log_abs_det, kinetic, jacobian = self.bijector.regularized_forward(x, context)
        nll = -(self.base.log_prob(z, context) + log_abs_det)
        loss = (
            nll.mean()
            + config.kinetic_weight * kinetic.mean()
            + config.jacobian_weight * jacobian.mean()
        )
        return TrainingLoss(
            loss, nll, metrics={"kinetic_energy": kinetic, "jacobian_frobenius": jacobian}
        )


def build_cnf(config: CNFConfig) -> CNFFlow:
    """The flow described by ``config``; see :func:`cnf`."""
    return build_seeded(config.seed, lambda _: _build(config))


def _build(config: CNFConfig) -> CNFFlow:
    field = VectorFieldMLP(
        config.features,
        config.hidden_features,
        context_features=config.context_features,
        time_frequencies=config.time_frequencies,
        activation=ACTIVATIONS[config.activation],
    )
    bijector = ContinuousFlow(
        field,
        features=config.features,
        method=config.method,
        rtol=config.rtol,
        atol=config.atol,
        step_size=config.step_size,
        adjoint=config.adjoint,
        trace=config.trace,
        probe=config.probe,
        context_features=config.context_features,
    )
    return CNFFlow(StandardNormal((config.features,)), bijector, config)


def cnf(
    features: int,
    context_features: int | None = None,
    *,
    hidden_features: Sequence[int] = (64, 64),
    time_frequencies: int = 3,
    activation: str = "elu",
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    step_size: float | None = None,
    adjoint: bool = False,
    trace: str = "exact",
    probe: str = "rademacher",
    objective: str = "likelihood",
    sigma_min: float = 0.0,
    coupling: str = "independent",
    kinetic_weight: float = 0.0,
    jacobian_weight: float = 0.0,
    seed: int | None = None,
) -> CNFFlow:
    r"""Continuous normalizing flow: one :class:`~flowkit.bijectors.ContinuousFlow` on N(0, I).

    The vector field is a :class:`~flowkit.nn.VectorFieldMLP`; data sit at :math:`t = 0` and the
    latent at :math:`t = 1`. ``objective`` chooses how :func:`flowkit.fit` and
    ``flowkit train`` train it (:class:`CNFFlow`): ``"likelihood"`` (FFJORD; optionally with
    RNODE's kinetic-energy and Jacobian penalties) or ``"flow_matching"`` (conditional flow
    matching on the optimal-transport path, no ODE solved in training; ``coupling="ot"`` pairs
    each batch's base draws with its rows by minibatch optimal transport). Evaluation is always
    the exact ODE likelihood.

    Args:
        features: Data dimension ``D``.
        context_features: Dimension of the conditioning vector, or None.
        hidden_features: Widths of the vector field's hidden layers.
        time_frequencies: Cosine/sine pairs of the field's time embedding.
        activation: The field's hidden activation: ``"elu"`` (default, as zuko's CNF; it
            learns faster per step than ``"softplus"``, flowkit's earlier default), ``"softplus"``,
            ``"tanh"`` (FFJORD's toy fields) or ``"silu"``.
        method: torchdiffeq solver (``"dopri5"`` adaptive; ``"rk4"`` or ``"euler"`` fixed-step).
        rtol: Relative tolerance of an adaptive solver.
        atol: Absolute tolerance of an adaptive solver.
        step_size: Step of a fixed-step solver (default 0.1).
        adjoint: Gradients by the adjoint ODE (constant memory in the number of solver steps).
        trace: ``"exact"`` or ``"hutchinson"`` (the estimate in training passes only).
        probe: Hutchinson's probe, ``"rademacher"`` or ``"gaussian"``.
        objective: ``"likelihood"`` or ``"flow_matching"``.
        sigma_min: Flow matching's path width at the data end (Lipman et al.'s
            :math:`\sigma_{min}`; 0 is the straight line of rectified flow).
        coupling: How flow matching pairs base draws with data rows: ``"independent"`` (a
            fresh draw per row) or ``"ot"`` (the draws of each batch re-paired by the exact
            minibatch optimal-transport plan, Tong et al.'s OT-CFM; needs scipy).
        kinetic_weight: RNODE's weight of :math:`\int \|f\|^2 dt` (likelihood only).
        jacobian_weight: RNODE's weight of :math:`\int \|\nabla f\|_F^2 dt` (likelihood only).
        seed: Draw every initial weight from this seed (None: torch's global generator).

    Returns:
        The :class:`CNFFlow`.

    References:
        Grathwohl et al., FFJORD (2019); Finlay et al., How to train your neural ODE (2020);
        Lipman et al., Flow Matching for Generative Modeling (2023); Tong et al., Improving and
        generalizing flow-based generative models with minibatch optimal transport (2024).

    Example:
        >>> import torch
        >>> flow = cnf(2, hidden_features=(16,), method="rk4", objective="flow_matching")
        >>> flow.log_prob(torch.randn(4, 2)).shape
        torch.Size([4])
    """
    return build_cnf(
        CNFConfig(
            features,
            context_features,
            hidden_features=tuple(hidden_features),
            time_frequencies=time_frequencies,
            activation=activation,
            method=method,
            rtol=rtol,
            atol=atol,
            step_size=step_size,
            adjoint=adjoint,
            trace=trace,
            probe=probe,
            objective=objective,
            sigma_min=sigma_min,
            coupling=coupling,
            kinetic_weight=kinetic_weight,
            jacobian_weight=jacobian_weight,
            seed=seed,
        )
    )

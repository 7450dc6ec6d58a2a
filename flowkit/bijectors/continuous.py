r"""Continuous normalizing flows: an ODE solved with torchdiffeq, its log-det by the trace."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from flowkit.bijectors.base import Bijector

__all__ = ["ContinuousFlow"]

TRACES = ("exact", "hutchinson")
PROBES = ("rademacher", "gaussian")
# torchdiffeq's fixed-grid solvers, which take a step size instead of tolerances.
FIXED_STEP_METHODS = (
    "euler",
    "midpoint",
    "heun2",
    "heun3",
    "rk4",
    "explicit_adams",
    "implicit_adams",
)
# The tightest solver tolerance, in units of the dtype's machine epsilon (1.8e-15 in float64,
# 9.5e-7 in float32).
FLOOR_ULPS = 8
INSTALL_HINT = 'pip install "flowkit-torch[cnf]"'


def _torchdiffeq() -> Any:
    """torchdiffeq, imported on first use so that flowkit imports without it."""
    try:
        import torchdiffeq
    except ImportError:
        raise ImportError(
            f"ContinuousFlow solves its ODE with torchdiffeq, which is not installed; "
            f"install it with {INSTALL_HINT}"
        ) from None
    return torchdiffeq


class _Dynamics(nn.Module):
    """The augmented ODE: the state, its log-det and (optionally) RNODE's two integrands."""

    def __init__(
        self,
        field: nn.Module,
        context: Tensor | None,
        *,
        trace: str,
        probe: Tensor | None,
        penalties: bool,
        create_graph: bool,
    ) -> None:
        super().__init__()
        self.field = field
        self.context = context
        self.trace = trace
        self.probe = probe
        self.penalties = penalties
        self.create_graph = create_graph

    def forward(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        x = state[0]
        # Where the solver records no graph (evaluation, the adjoint's forward solve), the trace
        # differentiates a fresh leaf and no graph is kept; where it records one (backpropagation
        # through the solver, the adjoint's backward solve), x stays connected to it.
        recording = torch.is_grad_enabled() and self.create_graph
        with torch.enable_grad():
            if not (recording and x.requires_grad):
                x = x.detach().requires_grad_(True)
            velocity = self.field(t, x, self.context)
            if self.trace == "exact":
                divergence = _exact_divergence(velocity, x, recording)
                probe = self.probe
            else:
                assert self.probe is not None, "the Hutchinson estimate needs a probe"
                probe = self.probe
                (vjp,) = torch.autograd.grad(
                    velocity, x, probe, create_graph=recording, retain_graph=True
                )
                divergence = (vjp * probe).sum(-1)
            derivatives: tuple[Tensor, ...] = (velocity, divergence)
            if self.penalties:
                assert probe is not None, "the Jacobian penalty needs a probe"
                (vjp,) = torch.autograd.grad(
                    velocity, x, probe, create_graph=recording, retain_graph=True
                )
                kinetic = velocity.pow(2).sum(-1)
                frobenius = vjp.pow(2).sum(-1)
                derivatives = derivatives + (kinetic, frobenius)
        if not recording:
            derivatives = tuple(d.detach() for d in derivatives)
        return derivatives


def _exact_divergence(velocity: Tensor, x: Tensor, create_graph: bool) -> Tensor:
    """The trace of the Jacobian, one backward pass per dimension (exact; cost grows with D)."""
    divergence = torch.zeros(x.shape[:-1], dtype=x.dtype, device=x.device)
    for index in range(x.shape[-1]):
        (row,) = torch.autograd.grad(
            velocity[..., index].sum(), x, create_graph=create_graph, retain_graph=True
        )
        divergence = divergence + row[..., index]
    return divergence


def _check_solver_settings(
    t0: float, t1: float, rtol: float, atol: float, step_size: float | None
) -> None:
    """ContinuousFlow's interval, tolerances and fixed step, each checked with its name."""
    for name, value in (("t0", t0), ("t1", t1)):
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"ContinuousFlow expects a finite number as {name}, got {value!r}")
    if t0 == t1:
        raise ValueError(f"ContinuousFlow expects t0 != t1, got both {t0}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"ContinuousFlow expects a positive {name}, got {value!r}")
    if step_size is not None and not (
        isinstance(step_size, (int, float)) and 0 < step_size <= abs(t1 - t0)
    ):
        raise ValueError(
            f"ContinuousFlow expects step_size in (0, |t1 - t0|] = (0, {abs(t1 - t0)}], "
            f"got {step_size!r}"
        )


class ContinuousFlow(Bijector):
    r"""Continuous normalizing flow (FFJORD): the solution map of :math:`dx/dt = f(t, x, c)`.

    ``forward`` maps data to latent by integrating from :math:`t_0` (data) to :math:`t_1`
    (latent); ``inverse`` integrates back. By the instantaneous change of variables the
    log-determinant of the map is

    .. math:: \log |\det \partial z / \partial x| = \int_{t_0}^{t_1} \operatorname{tr}
        \frac{\partial f}{\partial x}(t, x(t), c) \, dt,

    solved jointly with :math:`x(t)`. The trace is exact (``trace="exact"``: one backward pass
    per dimension, for small :math:`D`) or Hutchinson's unbiased estimate
    :math:`\epsilon^\top (\partial f / \partial x) \epsilon` with one probe
    :math:`\epsilon` (Rademacher or Gaussian, from torch's global generator) per solve. The
    estimate is used only where gradients are recorded (a training pass); under
    ``torch.no_grad`` (evaluation, sampling) the trace is always exact, so reported likelihoods
    are exact up to the solver's tolerance. With ``trace="exact"`` forward and inverse are
    deterministic and agree to the solver's tolerance, which sets how tightly the contract holds.

    Args:
        vector_field: Module ``f(t, x, context) -> dx/dt`` (e.g.
            :class:`~flowkit.nn.VectorFieldMLP`), ``x`` of shape ``(N, D)``.
        features: Dimension :math:`D` of the vectors.
        t0: Time of the data end.
        t1: Time of the latent end.
        method: torchdiffeq solver (``"dopri5"``, ``"rk4"``, ``"euler"``, ...).
        rtol: Relative tolerance of an adaptive solver (at least 8 machine epsilons of the
            working dtype: 9.5e-7 in float32).
        atol: Absolute tolerance of an adaptive solver (the same floor).
        step_size: Step of a fixed-grid solver (``rk4``, ``euler``, ...); default a tenth of the
            interval.
        adjoint: Compute gradients by the adjoint ODE (memory constant in the number of solver
            steps) instead of backpropagating through the solver.
        trace: ``"exact"`` or ``"hutchinson"`` (see above).
        probe: Distribution of Hutchinson's probe, ``"rademacher"`` or ``"gaussian"``.
        context_features: Features of the context vector, or None for an unconditional flow.

    Shapes:
        ``x``: ``(N, D)``; ``z`` the same; ``log_abs_det``: ``(N,)``.

    References:
        Chen, Rubanova, Bettencourt & Duvenaud, Neural Ordinary Differential Equations (2018);
        Grathwohl, Chen, Bettencourt, Sutskever & Duvenaud, FFJORD (2019);
        Finlay, Jacobsen, Nurbekyan & Oberman, How to train your neural ODE (2020), for
        :meth:`regularized_forward`; Lipman, Chen, Ben-Hamu, Nickel & Le, Flow Matching for
        Generative Modeling (2023), for :meth:`flow_matching_loss`.

    Example:
        >>> from flowkit.nn import VectorFieldMLP
        >>> flow = ContinuousFlow(VectorFieldMLP(2, (16,)), features=2, method="rk4")
        >>> z, log_abs_det = flow(torch.randn(5, 2))
        >>> z.shape, log_abs_det.shape
        (torch.Size([5, 2]), torch.Size([5]))
    """

    event_rank = 1

    def __init__(
        self,
        vector_field: nn.Module,
        *,
        features: int,
        t0: float = 0.0,
        t1: float = 1.0,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        step_size: float | None = None,
        adjoint: bool = False,
        trace: str = "exact",
        probe: str = "rademacher",
        context_features: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(vector_field, nn.Module):
            raise TypeError(
                "ContinuousFlow expects vector_field as a torch.nn.Module f(t, x, context), got "
                f"{type(vector_field).__name__}"
            )
        if isinstance(features, bool) or not isinstance(features, int) or features < 1:
            raise ValueError(
                f"ContinuousFlow expects features as an integer >= 1, got {features!r}"
            )
        _check_solver_settings(t0, t1, rtol, atol, step_size)
        if trace not in TRACES:
            raise ValueError(f"ContinuousFlow expects trace in {TRACES}, got {trace!r}")
        if probe not in PROBES:
            raise ValueError(f"ContinuousFlow expects probe in {PROBES}, got {probe!r}")
        if not isinstance(method, str):
            raise ValueError(f"ContinuousFlow expects method as a string, got {method!r}")
        self.vector_field = vector_field
        self.features = features
        self.t0, self.t1 = float(t0), float(t1)
        self.method = method
        self.rtol, self.atol = float(rtol), float(atol)
        self.step_size = None if step_size is None else float(step_size)
        self.adjoint = bool(adjoint)
        self.trace = trace
        self.probe = probe
        self.context_features = context_features

    # --- checks -------------------------------------------------------------------------------
    def _check(self, x: Tensor, context: Tensor | None, what: str) -> None:
        if x.dim() < 1 or x.shape[-1] != self.features:
            raise ValueError(
                f"ContinuousFlow expects {what} of shape (..., {self.features}), got "
                f"{tuple(x.shape)}"
            )
        if self.context_features is not None:
            if context is None:
                raise ValueError(
                    f"ContinuousFlow expects a context of {self.context_features} features, "
                    "got None"
                )
            if context.shape[-1] != self.context_features:
                raise ValueError(
                    f"ContinuousFlow expects a context of {self.context_features} features, got "
                    f"shape {tuple(context.shape)}"
                )

    # --- solving ------------------------------------------------------------------------------
    def _options(self) -> dict[str, Any]:
        if self.method not in FIXED_STEP_METHODS:
            return {}
        step = self.step_size if self.step_size is not None else abs(self.t1 - self.t0) / 10
        return {"step_size": step}

    def _draw_probe(self, x: Tensor) -> Tensor:
        if self.probe == "gaussian":
            return torch.randn(x.shape, dtype=x.dtype, device=x.device)
        return torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1

    def _solve(
        self,
        x: Tensor,
        context: Tensor | None,
        start: float,
        end: float,
        penalties: bool = False,
    ) -> tuple[Tensor, ...]:
        torchdiffeq = _torchdiffeq()
        create_graph = torch.is_grad_enabled()
        trace = self.trace if create_graph else "exact"
        probe = self._draw_probe(x) if trace == "hutchinson" or penalties else None
        batch = x.shape[:-1]
        zeros = x.new_zeros(batch)
        state: tuple[Tensor, ...] = (x, zeros) + ((zeros, zeros) if penalties else ())
        dynamics = _Dynamics(
            self.vector_field,
            context,
            trace=trace,
            probe=probe,
            penalties=penalties,
            create_graph=create_graph,
        )
        times = torch.tensor([start, end], dtype=x.dtype, device=x.device)
        # Tolerances below what the dtype resolves would only shrink the steps without end.
        floor = FLOOR_ULPS * torch.finfo(x.dtype).eps
        options = dict(
            rtol=max(self.rtol, floor),
            atol=max(self.atol, floor),
            method=self.method,
            options=self._options(),
        )
        if self.adjoint and create_graph:
            parameters: tuple[Tensor, ...] = tuple(
                p for p in self.vector_field.parameters() if p.requires_grad
            )
            if context is not None and context.requires_grad:
                parameters = parameters + (context,)
            solution = torchdiffeq.odeint_adjoint(
                dynamics, state, times, adjoint_params=parameters, **options
            )
        else:
            solution = torchdiffeq.odeint(dynamics, state, times, **options)
        return tuple(part[-1] for part in solution)

    # --- the Bijector interface ---------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Integrate from ``t0`` (data) to ``t1`` (latent); return ``(z, log_abs_det)``."""
        self._check(x, context, "input")
        z, log_abs_det = self._solve(x, context, self.t0, self.t1)
        return z, log_abs_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Integrate from ``t1`` (latent) back to ``t0`` (data); return ``(x, log_abs_det)``."""
        self._check(z, context, "latent")
        x, log_abs_det = self._solve(z, context, self.t1, self.t0)
        return x, log_abs_det

    def forward_shape(self, shape: Any) -> torch.Size:
        """``shape`` itself; ValueError unless its last size is ``features``."""
        self._check_rank(shape, 1, "input")
        if shape[-1] != self.features:
            raise ValueError(
                f"ContinuousFlow expects input of shape (..., {self.features}), got {tuple(shape)}"
            )
        return torch.Size(shape)

    def inverse_shape(self, shape: Any) -> torch.Size:
        """``shape`` itself; ValueError unless its last size is ``features``."""
        return self.forward_shape(shape)

    # --- training objectives ------------------------------------------------------------------
    def regularized_forward(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r"""``forward`` plus RNODE's two penalties, integrated in the same solve.

        Returns ``(z, log_abs_det, kinetic, jacobian)``, the last two per example: the kinetic
        energy :math:`\int_{t_0}^{t_1} \|f(t, x(t))\|^2 dt` and the Jacobian's squared
        Frobenius norm :math:`\int_{t_0}^{t_1} \|\epsilon^\top \partial f / \partial x\|^2 dt`
        (Hutchinson, with the same probe as the trace when that is estimated too). Both are
        integrated over :math:`t_1 - t_0` in the direction of the solve.
        """
        self._check(x, context, "input")
        z, log_abs_det, kinetic, jacobian = self._solve(
            x, context, self.t0, self.t1, penalties=True
        )
        sign = 1.0 if self.t1 > self.t0 else -1.0
        return z, log_abs_det, sign * kinetic, sign * jacobian

    def flow_matching_loss(
        self,
        x: Tensor,
        noise: Tensor,
        context: Tensor | None = None,
        *,
        sigma_min: float = 0.0,
        time: Tensor | None = None,
    ) -> Tensor:
        r"""Conditional flow matching with the optimal-transport path; one value per example.

        In this flow's time :math:`t = t_0 + \tau (t_1 - t_0)`, data at :math:`\tau = 0` and
        latent at :math:`\tau = 1`, the path from a data point :math:`x` to a base draw
        :math:`\epsilon` (``noise``) is

        .. math:: x_\tau = (1 - \tau)\, x + (\sigma_{min} + (1 - \sigma_{min}) \tau)\, \epsilon,

        whose velocity is :math:`u = ((1 - \sigma_{min}) \epsilon - x) / (t_1 - t_0)`. The loss is
        :math:`\| f(t, x_\tau, c) - u \|^2`, with :math:`\tau` uniform on :math:`[0, 1]` (or
        ``time``). This is Lipman et al.'s path with their time :math:`s = 1 - \tau` (noise at
        :math:`s = 0`), run in flowkit's direction, data to latent; with
        :math:`\sigma_{min} = 0` it is rectified flow's straight line (Tong et al.'s I-CFM without
        noise). No ODE is solved.

        Args:
            x: Data, ``(N, D)``.
            noise: Base draws paired with ``x``, ``(N, D)``.
            context: Context ``(N, C)`` of a conditional flow.
            sigma_min: Width :math:`\sigma_{min}` of the path at the data end.
            time: :math:`\tau` per example, ``(N,)``, instead of a uniform draw.

        Returns:
            The squared error per example, shape ``(N,)``.
        """
        self._check(x, context, "input")
        if noise.shape != x.shape:
            raise ValueError(
                f"ContinuousFlow.flow_matching_loss expects noise of the data's shape "
                f"{tuple(x.shape)}, got {tuple(noise.shape)}"
            )
        if not 0.0 <= sigma_min < 1.0:
            raise ValueError(f"flow_matching_loss expects sigma_min in [0, 1), got {sigma_min!r}")
        if time is None:
            time = torch.rand(x.shape[:-1], dtype=x.dtype, device=x.device)
        tau = time.unsqueeze(-1)
        point = (1 - tau) * x + (sigma_min + (1 - sigma_min) * tau) * noise
        target = ((1 - sigma_min) * noise - x) / (self.t1 - self.t0)
        velocity = self.vector_field(self.t0 + time * (self.t1 - self.t0), point, context)
        return (velocity - target).pow(2).sum(-1)

    def extra_repr(self) -> str:
        """The solver settings, for printing."""
        return (
            f"features={self.features}, t0={self.t0}, t1={self.t1}, method={self.method!r}, "
            f"trace={self.trace!r}, adjoint={self.adjoint}"
        )

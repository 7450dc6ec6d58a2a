"""StandardizedFlow: a flow over data in its own units, standardised in float64 before the flow."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import constraints

from flowkit.distributions._inputs import module_dtype_device
from flowkit.distributions.base import SampleShape
from flowkit.distributions.flow import Flow, TrainingLoss

__all__ = ["StandardizedFlow", "check_data_support", "standardizes_data"]


class StandardizedFlow(Flow):
    r"""``flow`` over data in its own units: :math:`x \mapsto (x - \mu) / \sigma` runs first.

    The statistics are float64 buffers, saved with the model, that stay float64 whatever dtype
    the model is moved to. Data (and context) are standardised in float64 and only then cast to
    the flow's dtype, so a column such as :math:`10^9` plus a small variation keeps its variation
    under a float32 model. :meth:`log_prob` includes the log-determinant
    :math:`-\sum_i \log \sigma_i` and is a density of the data in its own units. Inputs may be of
    any floating dtype (float64 keeps the most); samples and decoded latents come back in float64.

    The wrapped flow's base and bijector are shared, not copied, and its
    :meth:`~flowkit.Flow.training_loss` hook is kept: it runs on the standardised batch.

    Args:
        flow: A flow over standardised vectors, event shape ``(D,)``.
        mean: Per-feature means, ``D`` values.
        std: Per-feature standard deviations, ``D`` positive values.
        context_mean: Per-feature means of a ``(K,)`` context, or None (no context scaling).
        context_std: Per-feature standard deviations of the context, or None.

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> inner = Flow(StandardNormal((1,)), Affine(shape=(1,), event_rank=1))
        >>> flow = StandardizedFlow(inner, [1e9], [0.5])
        >>> x = torch.tensor([[1e9 + 0.5]], dtype=torch.float64)
        >>> round(float(flow.log_prob(x).detach()), 4)  # N(1; 0, 1) density, less log 0.5
        -0.7258
    """

    mean: Tensor
    std: Tensor
    context_mean: Tensor
    context_std: Tensor
    log_std_sum: Tensor

    def __init__(
        self,
        flow: Flow,
        mean: Any,
        std: Any,
        context_mean: Any = None,
        context_std: Any = None,
    ) -> None:
        if not isinstance(flow, Flow):
            raise TypeError(f"StandardizedFlow expects a flowkit Flow, got {type(flow).__name__}")
        super().__init__(flow.base, flow.bijector, context_shape=flow.context_shape)
        # Held outside the module tree: its base and bijector are this flow's own (the state dict
        # keeps one copy of each), and only its training_loss hook is called.
        object.__setattr__(self, "_wrapped", flow)
        features = tuple(flow.event_shape)
        mean_t, std_t = _statistics(mean), _statistics(std)
        if len(features) != 1 or tuple(mean_t.shape) != features or mean_t.shape != std_t.shape:
            raise ValueError(
                f"StandardizedFlow expects a vector flow and {features} statistics, got event "
                f"shape {features} and statistics of shapes {tuple(mean_t.shape)} and "
                f"{tuple(std_t.shape)}"
            )
        if context_mean is None or context_std is None or not len(context_mean):
            context_mean_t = context_std_t = torch.zeros(0, dtype=torch.float64)
        else:
            context_mean_t, context_std_t = _statistics(context_mean), _statistics(context_std)
            expected = flow.context_shape
            if expected is None or (len(context_mean_t),) != tuple(expected):
                raise ValueError(
                    f"StandardizedFlow expects context statistics of shape {expected}, got "
                    f"{tuple(context_mean_t.shape)}"
                )
            if context_mean_t.shape != context_std_t.shape:
                raise ValueError(
                    "StandardizedFlow expects context_mean and context_std of one shape, got "
                    f"{tuple(context_mean_t.shape)} and {tuple(context_std_t.shape)}"
                )
        for name, values in (("std", std_t), ("context_std", context_std_t)):
            if not bool((values > 0).all()) or not bool(torch.isfinite(values).all()):
                raise ValueError(
                    f"StandardizedFlow expects positive finite {name}, got {values.tolist()}"
                )
        for name, values in (("mean", mean_t), ("context_mean", context_mean_t)):
            if not bool(torch.isfinite(values).all()):
                raise ValueError(f"StandardizedFlow expects finite {name}, got {values.tolist()}")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)
        self.register_buffer("context_mean", context_mean_t)
        self.register_buffer("context_std", context_std_t)
        # The log-determinant of the scaling, in the flow's working dtype (it follows .to()).
        dtype = module_dtype_device(flow)[0] or torch.get_default_dtype()
        self.register_buffer("log_std_sum", std_t.log().sum().to(dtype))

    # --- the float64 statistics ----------------------------------------------------------------
    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> StandardizedFlow:
        # Moving the model to another dtype must not round the statistics: only their device
        # follows.
        names = ("mean", "std", "context_mean", "context_std")
        kept = {name: self._buffers[name] for name in names}
        super()._apply(fn, recurse)
        for name, value in kept.items():
            moved = self._buffers[name]
            assert value is not None and moved is not None, "the statistics are buffers"
            self._buffers[name] = value.to(device=moved.device, dtype=torch.float64)
        return self

    def _working_dtype(self) -> torch.dtype:
        return self.log_std_sum.dtype

    def standardize(self, x: Tensor) -> Tensor:
        """Data ``(..., D)`` in any floating dtype to standardised values in the flow's dtype."""
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(
                "StandardizedFlow expects floating-point data as a torch.Tensor, got "
                f"{getattr(x, 'dtype', type(x).__name__)}"
            )
        return ((x.to(torch.float64) - self.mean) / self.std).to(self._working_dtype())

    def unstandardize(self, values: Tensor) -> Tensor:
        """Standardised values ``(..., D)`` back to the data's units, in float64."""
        return values.to(torch.float64) * self.std + self.mean

    def standardize_context(self, context: Tensor | None) -> Tensor | None:
        """The context standardised in float64, then in the flow's dtype (None stays None)."""
        if context is None or not isinstance(context, Tensor) or not context.is_floating_point():
            return context
        if not self.context_mean.numel():
            return context.to(self._working_dtype())
        return ((context.to(torch.float64) - self.context_mean) / self.context_std).to(
            self._working_dtype()
        )

    # --- the Flow interface in the data's units -----------------------------------------------
    def latent_and_log_prob(
        self, x: Tensor, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """The latent of ``x`` (data units, any float dtype) and its log-density in data units."""
        z, log_prob = super().latent_and_log_prob(
            self.standardize(x), self.standardize_context(context)
        )
        return z, log_prob - self.log_std_sum

    def training_loss(self, x: Tensor, context: Tensor | None) -> TrainingLoss | None:
        """The wrapped flow's training loss on the standardised batch (its NLL in data units)."""
        wrapped: Flow = self.__dict__["_wrapped"]
        replaced = wrapped.training_loss(self.standardize(x), self.standardize_context(context))
        if replaced is None or replaced.nll is None:
            return replaced
        return TrainingLoss(
            replaced.loss + self.log_std_sum, replaced.nll + self.log_std_sum, replaced.metrics
        )

    def encode(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """The latent of data ``x`` (data units)."""
        return super().encode(self.standardize(x), self.standardize_context(context))

    def decode(self, z: Tensor, context: Tensor | None = None) -> Tensor:
        """The data (float64, data units) of latents ``z``."""
        return self.unstandardize(super().decode(z, self.standardize_context(context)))

    def sample(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Samples in the data's units (float64); arguments as :meth:`Flow.sample`."""
        return self.unstandardize(super().sample(n, self.standardize_context(context), temperature))

    def sample_and_log_prob(
        self, n: SampleShape = None, context: Tensor | None = None, temperature: float = 1.0
    ) -> tuple[Tensor, Tensor]:
        """Samples (float64, data units) and their log-density in data units."""
        values, log_prob = super().sample_and_log_prob(
            n, self.standardize_context(context), temperature
        )
        return self.unstandardize(values), log_prob - self.log_std_sum

    def statistics(self) -> dict[str, list[float]]:
        """The standardisation as plain float lists (``mean``, ``std``, ``context_*``)."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "context_mean": self.context_mean.tolist(),
            "context_std": self.context_std.tolist(),
        }


def _statistics(values: Any) -> Tensor:
    if isinstance(values, Tensor):
        return values.detach().to(device="cpu", dtype=torch.float64).reshape(-1).clone()
    return torch.as_tensor(list(values), dtype=torch.float64).reshape(-1)


def standardizes_data(flow: Flow) -> bool:
    r"""Whether the table pipeline standardises ``flow``'s data: only over the whole real line.

    The flow declares where its data live through its bijector's ``domain``. A flow over the real
    line (every preset's but the circular ones) has its data (and context) standardised by
    ``flowkit train`` and :func:`flowkit.fit`. A flow with a bounded domain (angles in
    :math:`[-\pi, \pi)` for :func:`~flowkit.presets.ncsf`) takes its data as they are, with
    unit statistics stored for them (on the command line the context is still standardised),
    and :func:`check_data_support` checks every value.
    """
    domain = flow.bijector.domain
    while isinstance(domain, constraints.independent):
        domain = domain.base_constraint
    return domain is constraints.real


def check_data_support(
    flow: Flow, values: Any, source: str, columns: Sequence[str] | None = None
) -> None:
    """Raise a ValueError naming the first value of ``values`` outside ``flow``'s domain.

    ``values`` is an array or tensor of rows ``(N, D)``; ``source`` names them in the message,
    ``columns`` (optional) the columns.
    """
    domain = flow.bijector.domain
    while isinstance(domain, constraints.independent):
        domain = domain.base_constraint
    table = torch.as_tensor(values, dtype=torch.float64)
    inside = domain.check(table)
    if not bool(inside.all()):
        row, column = (int(i) for i in (~inside).nonzero()[0])
        name = repr(columns[column]) if columns is not None else column
        raise ValueError(
            f"{source}: the model takes values in {_describe(domain)}, got "
            f"{float(table[row, column])!r} in row {row}, column {name} "
            f"({int((~inside).sum())} value(s) outside)"
        )


def _describe(domain: constraints.Constraint) -> str:
    low, high = getattr(domain, "lower_bound", None), getattr(domain, "upper_bound", None)
    if isinstance(low, float) and isinstance(high, float):
        closing = ")" if isinstance(domain, constraints.half_open_interval) else "]"
        return f"[{low:.6g}, {high:.6g}{closing}"
    return str(domain)

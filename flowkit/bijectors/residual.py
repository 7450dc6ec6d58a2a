"""Invertible residual blocks (i-ResNet, Residual Flows): z = x + g(x) with Lip(g) < 1."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from flowkit._checks import accepts_context, check_choice, check_float, check_int
from flowkit.bijectors.base import Bijector, Shape

__all__ = ["FixedPointError", "ResidualBlock"]

LOG_DETS = ("russian_roulette", "exact", "neumann")


class FixedPointError(RuntimeError):
    """The fixed-point iteration of :meth:`ResidualBlock.inverse` did not reach its tolerance."""


def _default_atol(z: Tensor) -> float:
    # 64 ulps of the largest value: reachable by a contraction in rounding arithmetic (whose
    # iterates stall at a few ulps), far below any test's tolerance.
    largest = float(z.detach().abs().max()) if z.numel() else 0.0
    return 64 * torch.finfo(z.dtype).eps * (1.0 + largest)


class ResidualBlock(Bijector):
    r"""Invertible residual block :math:`z = x + g(x)`, :math:`\mathrm{Lip}(g) < 1`.

    The normalizing direction (``forward``, data to latent) is the cheap residual map, as in
    Residual Flows, so the density of a point costs one pass plus the log-determinant; sampling
    (``inverse``) solves :math:`x = z - g(x)` by the fixed-point iteration
    :math:`x_{k+1} = z - g(x_k)`, :math:`x_0 = z`, a contraction (Banach): it stops when
    :math:`\max |x_{k+1} - x_k| \le` ``atol`` and raises :class:`FixedPointError` if that has not
    happened after ``max_iter`` steps. ``g`` must be Lipschitz below 1 (build it from
    :class:`~flowkit.nn.SpectralNormLinear` / :class:`~flowkit.nn.SpectralNormConv2d` layers and
    1-Lipschitz activations, e.g. :class:`~flowkit.nn.LipschitzMLP`).

    The log-determinant :math:`\log\det(I + J_g(x))` (positive: the eigenvalues of :math:`J_g`
    lie in the unit disc) is computed one of three ways:

    * ``"exact"``: the full Jacobian by one vector-Jacobian product per event element and
      ``slogdet``; :math:`O(D)` passes, for testing and small dimensions.
    * ``"russian_roulette"``: the unbiased estimator of Residual Flows,
      :math:`\sum_{k=1}^{N} \frac{(-1)^{k+1}}{k} \frac{v^T J^k v}{P(N \ge k)}` with
      :math:`v \sim N(0, I)` (Hutchinson) and
      :math:`N = n_{\text{exact}} + M`, :math:`M \sim \mathrm{Geometric}(p)` on
      :math:`\{0, 1, \dots\}`, one draw per call. Its gradient is the Neumann-series estimator
      (section 3.2): :math:`\partial_\theta \log\det(I + J) \approx
      \big(\sum_{k=0}^{N} \frac{(-1)^k}{P(N \ge k)} v^T J^k\big)\, \partial_\theta J\, v`,
      computed by one differentiable vector-Jacobian product, so the power series is never kept
      in the autograd graph (memory independent of :math:`N`).
    * ``"neumann"``: the same value estimate, with the gradient taken through the truncated series
      instead (every term in the graph, the i-ResNet way); more memory, the same expectation.

    In evaluation mode (``module.eval()``) ``eval_log_det`` is used instead (default
    ``"exact"``), so test likelihoods are exact; choose ``"russian_roulette"`` with
    ``eval_samples`` Hutchinson vectors for large events.

    The estimators draw from the block's own ``torch.Generator`` (seeded by ``seed``), never from
    torch's global random state: a training step is then reproducible from the seed and the
    step count. A stochastic log-determinant makes ``forward`` random, so a block trained with it
    must not sit inside a memory-saving :class:`~flowkit.bijectors.Compose` (whose backward re-runs
    ``forward``); the Neumann gradient is memory-saving already.

    ``inverse`` is differentiable: its gradients are the implicit function theorem's, with
    :math:`(I + J_g)^{-T}` applied by the same fixed-point iteration in the backward pass.

    Args:
        network: The residual function ``g``: maps ``(*batch, *event)`` to the same shape. If its
            ``forward`` takes a ``context`` argument the block is conditional,
            :math:`z = x + g(x, c)`, and ``g`` need be contractive in ``x`` only.
        event_rank: 1 for vectors, 3 for ``(C, H, W)`` images.
        log_det: ``"russian_roulette"``, ``"exact"`` or ``"neumann"``, used in training mode.
        eval_log_det: The method in evaluation mode (None: the same as ``log_det``).
        geometric_p: Success probability :math:`p` of the geometric stopping distribution.
        exact_terms: :math:`n_{\text{exact}}`, terms always computed (weight 1).
        eval_samples: Hutchinson vectors averaged per example in evaluation mode.
        atol: Tolerance of the fixed-point inverse (None: 64 ulps of ``1 + max|z|``).
        max_iter: Most fixed-point iterations before :class:`FixedPointError`.
        seed: Seed of the block's generator (None: drawn from torch's global generator once).

    Shapes:
        ``x``: ``(*batch, *event)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Behrmann et al., Invertible Residual Networks (2019); Chen et al., Residual Flows for
        Invertible Generative Modeling (2019).

    Example:
        >>> from flowkit.nn import LipschitzMLP
        >>> block = ResidualBlock(LipschitzMLP(2, (16,), coefficient=0.9), log_det="exact")
        >>> z, log_abs_det = block(torch.randn(5, 2))
        >>> x, _ = block.inverse(z)
        >>> log_abs_det.shape
        torch.Size([5])
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        event_rank: int = 1,
        log_det: str = "russian_roulette",
        eval_log_det: str | None = "exact",
        geometric_p: float = 0.5,
        exact_terms: int = 2,
        eval_samples: int = 1,
        atol: float | None = None,
        max_iter: int = 1000,
        seed: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(network, nn.Module):
            raise TypeError(
                f"ResidualBlock expects an nn.Module network, got {type(network).__name__}"
            )
        self.network = network
        self.pass_context = accepts_context(network)
        self.event_rank = check_int("ResidualBlock", "event_rank", event_rank, 1)
        check_choice("ResidualBlock", "log_det", log_det, LOG_DETS)
        if eval_log_det is not None:
            check_choice("ResidualBlock", "eval_log_det", eval_log_det, LOG_DETS)
        self.log_det = log_det
        self.eval_log_det = eval_log_det or log_det
        self.geometric_p = check_float(
            "ResidualBlock",
            "geometric_p",
            geometric_p,
            0.0,
            1.0,
            exclusive_minimum=True,
            exclusive_maximum=True,
        )
        self.exact_terms = check_int("ResidualBlock", "exact_terms", exact_terms, 1)
        self.eval_samples = check_int("ResidualBlock", "eval_samples", eval_samples, 1)
        self.atol = check_float(
            "ResidualBlock", "atol", atol, 0.0, exclusive_minimum=True, optional=True
        )
        self.max_iter = check_int("ResidualBlock", "max_iter", max_iter, 1)
        if seed is None:
            seed = int(torch.randint(0, 2**62, ()).item())
        self.generator = torch.Generator().manual_seed(seed)

    # The generator's state travels in the state dict, so a checkpointed run resumes with the
    # same estimator draws it would have made without the interruption.
    def get_extra_state(self) -> Tensor:
        """The estimator generator's state (saved with the weights)."""
        return self.generator.get_state()

    def set_extra_state(self, state: Any) -> None:
        """Restore the estimator generator's state from :meth:`get_extra_state`."""
        self.generator.set_state(torch.as_tensor(state, dtype=torch.uint8).cpu())

    # --- the map --------------------------------------------------------------------------------
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent, ``z = x + g(x)``; return ``(z, log_abs_det)``."""
        self._check(x, "input")
        method = self.log_det if self.training else self.eval_log_det
        samples = 1 if self.training else self.eval_samples
        if method == "exact":
            gx, log_abs_det = self._exact(x, context)
        else:
            gx, log_abs_det = self._series(
                x, context, samples, neumann_gradient=method == "russian_roulette"
            )
        return x + gx, log_abs_det

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Solve ``x + g(x) = z`` by fixed-point iteration; return ``(x, log_abs_det)``."""
        self._check(z, "latent")
        atol = self.atol if self.atol is not None else _default_atol(z)
        with torch.no_grad():
            x = z.clone()
            for _ in range(self.max_iter):
                step = z - self._g(x, context)
                change = float((step - x).abs().max()) if x.numel() else 0.0
                x = step
                if change <= atol:
                    break
            else:
                raise FixedPointError(
                    f"ResidualBlock.inverse did not converge in {self.max_iter} iterations: last "
                    f"step {change:.3g} > atol {atol:.3g} (is the network's Lipschitz constant "
                    "below 1?)"
                )
        if torch.is_grad_enabled():
            x = self._implicit_step(z, x, context, atol)
        _, log_abs_det = self.forward(x, context)
        return x, -log_abs_det

    def _implicit_step(
        self, z: Tensor, root: Tensor, context: Tensor | None, atol: float
    ) -> Tensor:
        """The root with the implicit function theorem's gradients, as a differentiable step.

        ``x = z - g(root)`` has the root's value; a hook turns the gradient ``a`` arriving at it
        into ``w = (I + J_g)^{-T} a`` (solving ``w = a - J_g^T w`` by the same contraction), so the
        step's own backward gives ``dL/dz = w`` and ``dL/dtheta = -w^T dg/dtheta`` exactly.
        """
        x = z - self._g(root, context)
        if not x.requires_grad:
            return x
        with torch.enable_grad():
            leaf = root.detach().requires_grad_(True)
            g_root = self._g(leaf, context)

        def solve(incoming: Tensor) -> Tensor:
            w = incoming
            for _ in range(self.max_iter):
                (product,) = torch.autograd.grad(g_root, leaf, w, retain_graph=True)
                step = incoming - product
                change = float((step - w).abs().max()) if w.numel() else 0.0
                w = step
                if change <= atol:
                    return w
            raise FixedPointError(
                f"ResidualBlock.inverse's backward did not converge in {self.max_iter} "
                f"iterations: last step {change:.3g} > atol {atol:.3g}"
            )

        x.register_hook(solve)
        return x

    def forward_shape(self, shape: Shape) -> torch.Size:
        """``z`` has the shape of ``x``."""
        self._check_rank(shape, self.event_rank, "input")
        return torch.Size(shape)

    def _g(self, x: Tensor, context: Tensor | None) -> Tensor:
        return self.network(x, context) if self.pass_context else self.network(x)

    # --- log-determinants -----------------------------------------------------------------------
    def _event_sum(self, value: Tensor) -> Tensor:
        return value.flatten(value.dim() - self.event_rank).sum(-1)

    def _exact(self, x: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        grad_on = torch.is_grad_enabled()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self._g(leaf, context)
            batch_shape = x.shape[: x.dim() - self.event_rank]
            size = math.prod(x.shape[x.dim() - self.event_rank :])
            flat = gx.reshape(*batch_shape, size)
            rows = []
            for i in range(size):
                (row,) = torch.autograd.grad(
                    flat[..., i].sum(), leaf, retain_graph=True, create_graph=grad_on
                )
                rows.append(row.reshape(*batch_shape, size))
            jacobian = torch.stack(rows, dim=-2)
            eye = torch.eye(size, dtype=x.dtype, device=x.device)
            _, log_abs_det = torch.linalg.slogdet(eye + jacobian)
        if not grad_on:
            return gx.detach(), log_abs_det.detach()
        return gx, log_abs_det

    def _draw_terms(self) -> int:
        extra = torch.empty(()).geometric_(self.geometric_p, generator=self.generator)
        # torch's geometric counts trials to the first success (1, 2, ...): M = trials - 1.
        return self.exact_terms + int(extra.item()) - 1

    def _tail_weight(self, k: int) -> float:
        """``1 / P(N >= k)``: terms up to ``exact_terms`` are always included."""
        if k <= self.exact_terms:
            return 1.0
        return (1.0 - self.geometric_p) ** -(k - self.exact_terms)

    def _series(
        self, x: Tensor, context: Tensor | None, samples: int, neumann_gradient: bool
    ) -> tuple[Tensor, Tensor]:
        grad_on = torch.is_grad_enabled()
        terms = self._draw_terms()
        with torch.enable_grad():
            leaf = x if x.requires_grad else x.detach().requires_grad_(True)
            gx = self._g(leaf, context)
            total = x.new_zeros(x.shape[: x.dim() - self.event_rank])
            for _ in range(samples):
                v = torch.randn(x.shape, generator=self.generator, dtype=x.dtype).to(x.device)
                if neumann_gradient or not grad_on:
                    total = total + self._roulette_neumann(leaf, gx, v, terms, grad_on)
                else:
                    total = total + self._roulette_through(leaf, gx, v, terms)
            log_abs_det = total / samples
        if not grad_on:
            return gx.detach(), log_abs_det.detach()
        return gx, log_abs_det

    def _roulette_neumann(
        self, leaf: Tensor, gx: Tensor, v: Tensor, terms: int, grad_on: bool
    ) -> Tensor:
        value = torch.zeros_like(self._event_sum(v))
        power = v  # (J^T)^k v, the row vector v^T J^k
        neumann = v.clone()
        for k in range(1, terms + 1):
            (power,) = torch.autograd.grad(gx, leaf, power, retain_graph=True)
            weight = self._tail_weight(k)
            value = value + (-1) ** (k + 1) / k * weight * self._event_sum(power * v)
            neumann = neumann + (-1) ** k * weight * power
        if not grad_on:
            return value
        # w^T J v with w the Neumann sum held fixed: its gradient is the series' gradient estimate.
        (surrogate_row,) = torch.autograd.grad(gx, leaf, neumann.detach(), create_graph=True)
        surrogate = self._event_sum(surrogate_row * v)
        return value.detach() + surrogate - surrogate.detach()

    def _roulette_through(self, leaf: Tensor, gx: Tensor, v: Tensor, terms: int) -> Tensor:
        value = torch.zeros_like(self._event_sum(v))
        power = v
        for k in range(1, terms + 1):
            (power,) = torch.autograd.grad(gx, leaf, power, create_graph=True)
            value = value + (-1) ** (k + 1) / k * self._tail_weight(k) * self._event_sum(power * v)
        return value

    def _check(self, value: Tensor, what: str) -> None:
        self._check_rank(value.shape, self.event_rank, what)

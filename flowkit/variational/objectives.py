"""Losses for fitting a flow to an unnormalised target, and the effective sample size."""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.func import functional_call

from flowkit.distributions.flow import Flow

__all__ = [
    "OBJECTIVES",
    "alpha_2_loss",
    "effective_sample_size",
    "forward_kl_loss",
    "log_prob_detached",
    "reverse_kl_loss",
]

# The objectives fit() knows, by name.
OBJECTIVES = ("reverse_kl", "alpha_2", "forward_kl", "fab")


def reverse_kl_loss(log_q: Tensor, log_target: Tensor) -> Tensor:
    r"""Reverse KL up to :math:`\log Z`: :math:`\frac1N \sum_i \log q(x_i) - \log \tilde p(x_i)`.

    With :math:`x_i \sim q` drawn by reparameterisation (``flow.sample_and_log_prob``) its
    gradient is the reparameterised gradient of :math:`KL(q \,\|\, p) - \log Z`, mode-seeking.
    With ``log_q`` from :func:`log_prob_detached` at the same samples it is the path gradient
    ("sticking the landing"), whose variance vanishes as :math:`q \to p`.

    Args:
        log_q: :math:`\log q(x_i)`, shape ``(N,)``.
        log_target: :math:`\log \tilde p(x_i)`, shape ``(N,)``.

    References:
        Rezende & Mohamed, Variational Inference with Normalizing Flows (2015);
        Roeder, Wu & Duvenaud, Sticking the Landing (2017).

    Example:
        >>> reverse_kl_loss(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.5]))
        tensor(0.5000)
    """
    return (log_q - log_target).mean()


def alpha_2_loss(log_weights: Tensor, log_q: Tensor | None = None) -> Tensor:
    r"""The α = 2 divergence objective :math:`\log \frac1N \sum_i w_i^2`, with :math:`x_i \sim q`.

    :math:`w_i = \tilde p(x_i) / q(x_i)` are the importance weights (``log_weights`` their logs).
    The value estimates :math:`\log E_q[w^2] = 2 \log Z + D_2(p \,\|\, q)`, where
    :math:`D_2 = \log(1 + \chi^2(p \,\|\, q))` is Rényi's divergence of order 2; minimising it
    minimises the variance of the importance weights, so it covers the target's mass instead of
    seeking one mode.

    Two gradients:

    * With ``log_q``, :math:`\log q_\theta(x_i)` at the samples held fixed (``flow.log_prob`` of
      detached samples), the gradient is the self-normalised estimate
      :math:`-\sum_i \bar w_i \nabla_\theta \log q_\theta(x_i)` with
      :math:`\bar w_i = w_i^2 / \sum_j w_j^2` of the exact gradient
      :math:`-E_q[w^2 \nabla_\theta \log q_\theta] / E_q[w^2]`: the loss of FAB (Midgley et al.)
      with the flow's own samples in place of AIS samples, and of neural importance sampling.
      ``log_weights`` is then not differentiated. :func:`fit` uses this form.
    * Without, the reparameterised gradient through ``log_weights``,
      :math:`2 \sum_i \bar w_i \nabla \log w_i` (normflows' ``reverse_alpha_div`` at α = 2).
      It rewards moving samples to where the weights are small: once the effective sample size
      is low a step can throw the flow off the target, where every weight underflows and the
      estimate falls without bound.

    Args:
        log_weights: :math:`\log w_i`, shape ``(N,)``.
        log_q: :math:`\log q_\theta(x_i)` at the same samples, not differentiable in them,
            shape ``(N,)``; or None for the reparameterised gradient.

    References:
        Midgley et al., Flow Annealed Importance Sampling Bootstrap (ICLR 2023);
        Müller et al., Neural Importance Sampling (2019);
        Li & Turner, Rényi Divergence Variational Inference (2016).

    Example:
        >>> alpha_2_loss(torch.zeros(4))
        tensor(0.)
    """
    value = torch.logsumexp(2 * log_weights, dim=0) - math.log(log_weights.shape[0])
    if log_q is None:
        return value
    if log_q.shape != log_weights.shape:
        raise ValueError(
            f"alpha_2_loss expects log_q of the weights' shape {tuple(log_weights.shape)}, got "
            f"{tuple(log_q.shape)}"
        )
    weights = torch.softmax(2 * log_weights.detach(), dim=0)
    surrogate = -(weights * log_q).sum()
    # The value of the estimate, the gradient of the self-normalised surrogate.
    return value.detach() + (surrogate - surrogate.detach())


def forward_kl_loss(log_q: Tensor) -> Tensor:
    r"""Forward KL less the target's entropy: :math:`-\frac1N \sum_i \log q(x_i)`, x_i from p.

    Maximum likelihood on samples of the target; mass-covering.

    Args:
        log_q: :math:`\log q(x_i)` at target samples, shape ``(N,)``.

    Example:
        >>> forward_kl_loss(torch.tensor([-1.0, -3.0]))
        tensor(2.)
    """
    return -log_q.mean()


def log_prob_detached(flow: Flow, x: Tensor, context: Tensor | None = None) -> Tensor:
    r""":math:`\log q_\theta(x)` with the parameters held constant: gradients reach ``x`` only.

    The path-gradient ("sticking the landing") estimator of the reverse KL evaluates the density
    of the reparameterised samples :math:`x = T_\theta(z)` with :math:`\theta` detached, so the
    score term :math:`\nabla_\theta \log q_\theta(x)`, zero in expectation but not per sample,
    drops out. It costs one pass in the normalizing direction (``flow.log_prob``) besides the
    sampling pass. Parameters are swapped for detached views with ``torch.func.functional_call``;
    the flow itself is not modified.

    Args:
        flow: The flow.
        x: Points of shape ``(*batch, *event_shape)``, typically samples carrying gradients.
        context: The context, as for ``flow.log_prob``.

    References:
        Roeder, Wu & Duvenaud, Sticking the Landing (NeurIPS 2017);
        Vaitl, Nicoli, Nakajima & Kessel, Gradients should stay on path (2022).

    Example:
        >>> from flowkit.bijectors import Affine
        >>> from flowkit.distributions import StandardNormal
        >>> flow = Flow(StandardNormal((2,)), Affine(shape=(2,), event_rank=1))
        >>> x = torch.randn(3, 2, requires_grad=True)
        >>> log_q = log_prob_detached(flow, x)
        >>> torch.autograd.grad(log_q.sum(), [x, flow.bijector.shift], allow_unused=True)[1] is None
        True
    """
    detached = {name: parameter.detach() for name, parameter in flow.named_parameters()}
    return functional_call(flow, detached, (x,), {"context": context})


def effective_sample_size(log_weights: Tensor) -> Tensor:
    r"""Kish's effective sample size :math:`(\sum_i w_i)^2 / \sum_i w_i^2` of importance weights.

    Computed from the log-weights in a numerically stable way; :math:`-\infty` (zero weight) is
    allowed. Divide by ``N`` for the fraction in :math:`(0, 1]`.

    Args:
        log_weights: :math:`\log w_i`, shape ``(N,)``.

    Example:
        >>> effective_sample_size(torch.zeros(8))
        tensor(8.)
        >>> effective_sample_size(torch.tensor([0.0, -float("inf")]))
        tensor(1.)
    """
    return torch.exp(2 * torch.logsumexp(log_weights, 0) - torch.logsumexp(2 * log_weights, 0))

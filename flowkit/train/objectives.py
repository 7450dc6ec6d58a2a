"""Training objectives named by their unit: bits per dimension (images), nats per example."""

from __future__ import annotations

import math

from torch import Tensor, nn

from flowkit.distributions import Flow

__all__ = ["BitsPerDim", "NatsPerExample", "Objective", "bits_per_dim"]


def bits_per_dim(log_prob: Tensor, num_dims: int, n_bits: int = 8) -> Tensor:
    r"""Bits per dimension of discrete data from the flow's continuous log-density.

    Data with ``2**n_bits`` levels per dimension, scaled to :math:`[-1/2, 1/2]` and dequantised with
    uniform noise of one bin, has bins of width :math:`1 / 2^{n}`, so the discrete probability is
    about :math:`p(x) / 2^{nD}` and

    .. math:: \mathrm{bpd} = \frac{-\log p(x) + D \log 2^{n}}{D \log 2}.

    Args:
        log_prob: Log-density of each example, shape ``(*batch,)``.
        num_dims: Number of dimensions ``D`` of one example (``C * H * W``).
        n_bits: Bits per dimension of the data.
    """
    return (-log_prob + num_dims * n_bits * math.log(2.0)) / (num_dims * math.log(2.0))


class Objective(nn.Module):
    """A training objective as a module, so that DistributedDataParallel can wrap it.

    ``forward(x, context=None)`` returns a dict with ``loss`` (the scalar to minimise), the
    per-example value under :attr:`key` (``"bpd"`` or ``"nll"``), and whatever per-example metrics
    the flow's :meth:`~flowkit.Flow.auxiliary_loss` hook adds (Glow's class-prediction loss).
    Subclasses set :attr:`key`, :attr:`unit` and implement :meth:`per_example`.
    """

    key = "nll"
    unit = "nats"

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def per_example(self, log_prob: Tensor) -> Tensor:
        """The objective of each example from its log-density."""
        raise NotImplementedError

    def forward(self, x: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
        """The loss and the per-example metrics of one batch."""
        z, log_prob = self.flow.latent_and_log_prob(x, context)
        value = self.per_example(log_prob)
        out = {self.key: value, "loss": value.mean()}
        extra = self.flow.auxiliary_loss(z, context)
        if extra is not None:
            out["loss"] = out["loss"] + extra.loss
            out.update(extra.metrics)
        return out


class BitsPerDim(Objective):
    """Bits per dimension of images (uniform dequantisation and the discretisation constant).

    Args:
        flow: The model, over images scaled to :math:`[-1/2, 1/2]`.
        n_bits: Bits per dimension of the data.
    """

    key = "bpd"
    unit = "bits/dim"

    def __init__(self, flow: Flow, n_bits: int = 8) -> None:
        super().__init__(flow)
        self.n_bits = int(n_bits)
        self.num_dims = math.prod(flow.event_shape)

    def per_example(self, log_prob: Tensor) -> Tensor:
        """Bits per dimension of each image."""
        return bits_per_dim(log_prob, self.num_dims, self.n_bits)


class NatsPerExample(Objective):
    """Negative log-likelihood in nats per example, for vector data."""

    key = "nll"
    unit = "nats"

    def per_example(self, log_prob: Tensor) -> Tensor:
        """Negative log-density of each example."""
        return -log_prob

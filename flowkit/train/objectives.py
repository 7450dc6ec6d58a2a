"""Training objectives named by their unit: bits per dimension (images), nats per example."""

from __future__ import annotations

import math

from torch import Tensor, nn

from flowkit.distributions import Dequantized, Flow

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

    ``forward(*inputs)`` takes a batch as the training data view makes it and returns a dict with
    ``loss`` (the scalar to minimise), the per-example value under :attr:`key` (``"bpd"`` or
    ``"nll"``), and whatever per-example metrics the model's
    :meth:`~flowkit.Flow.auxiliary_loss` hook adds (Glow's class-prediction loss).
    """

    key = "nll"
    unit = "nats"

    def _finish(self, model: Flow | Dequantized, z: Tensor, value: Tensor, context: Tensor | None):
        out = {self.key: value, "loss": value.mean()}
        extra = model.auxiliary_loss(z, context)
        if extra is not None:
            out["loss"] = out["loss"] + extra.loss
            out.update(extra.metrics)
        return out


class BitsPerDim(Objective):
    r"""Bits per dimension of integer images: the model's bound on :math:`-\log_2 P(x) / D`.

    The model is a :class:`~flowkit.distributions.Dequantized` (a plain flow is wrapped with
    uniform dequantisation, Glow's objective). Inputs: the images reduced to ``n_bits`` integers,
    their dequantisation noise in :math:`[0, 1)`, the labels of a class-conditional model, and
    optional Gaussian training noise added to the dequantised values (``TrainConfig.noise_std``;
    the value is then the bound of the noisy data, not of the images).

    Args:
        model: The image model.
        n_bits: Bits per value of the data; must match a Dequantized model's.
    """

    key = "bpd"
    unit = "bits/dim"

    def __init__(self, model: Flow | Dequantized, n_bits: int = 8) -> None:
        super().__init__()
        from flowkit.train.data import image_model

        self.model = image_model(model, n_bits)
        self.n_bits = self.model.n_bits
        self.num_dims = self.model.num_dims

    def forward(
        self,
        levels: Tensor,
        noise: Tensor,
        context: Tensor | None = None,
        perturbation: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The loss and the per-example metrics of one batch."""
        model = self.model
        if perturbation is None:
            z, log_prob = model.latent_and_log_prob(levels, context, noise=noise)
        else:
            y, log_q = model.dequantize(levels, noise)
            z, log_density = model.flow.latent_and_log_prob(y + perturbation.to(y.dtype), context)
            log_prob = log_density - self.num_dims * self.n_bits * math.log(2.0) - log_q
        value = -log_prob / (self.num_dims * math.log(2.0))
        return self._finish(model, z, value, context)


class NatsPerExample(Objective):
    """Negative log-likelihood in nats per example, for vector data."""

    key = "nll"
    unit = "nats"

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
        """The loss and the per-example metrics of one batch."""
        z, log_prob = self.flow.latent_and_log_prob(x, context)
        return self._finish(self.flow, z, -log_prob, context)

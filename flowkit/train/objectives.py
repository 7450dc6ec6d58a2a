"""Training objectives named by their unit: bits per dimension (images), nats per example."""

from __future__ import annotations

from torch import Tensor, nn

from flowkit.distributions import Dequantized, Flow

__all__ = ["BitsPerDim", "NatsPerExample", "Objective"]


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

    The model is a :class:`~flowkit.distributions.Dequantized`, which owns the bound and its bits
    (a plain flow is wrapped with 8-bit uniform dequantisation, Glow's objective). Inputs: the
    model's integer images (:meth:`~flowkit.distributions.Dequantized.levels`), their
    dequantisation noise in :math:`[0, 1)`, the labels of a class-conditional model, and optional
    Gaussian training noise added to the dequantised values (the value is then the bound of the
    noisy data, not of the images).

    Args:
        model: The image model.
    """

    key = "bpd"
    unit = "bits/dim"

    def __init__(self, model: Flow | Dequantized) -> None:
        super().__init__()
        self.model = model if isinstance(model, Dequantized) else Dequantized(model)

    def forward(
        self,
        levels: Tensor,
        noise: Tensor,
        context: Tensor | None = None,
        perturbation: Tensor | None = None,
    ) -> dict[str, Tensor]:
        """The loss and the per-example metrics of one batch."""
        model = self.model
        z, log_prob = model.latent_and_log_prob(
            levels, context, noise=noise, perturbation=perturbation
        )
        return self._finish(model, z, model.to_bits_per_dim(log_prob), context)


class NatsPerExample(Objective):
    """Negative log-likelihood in nats per example, for vector data."""

    key = "nll"
    unit = "nats"

    def __init__(self, flow: Flow) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: Tensor, context: Tensor | None = None) -> dict[str, Tensor]:
        """The loss and the per-example metrics of one batch.

        A model whose :meth:`~flowkit.Flow.training_loss` hook returns a loss (a continuous flow
        trained by flow matching) trains on that instead of its negative log-likelihood.
        """
        replaced = self.flow.training_loss(x, context)
        if replaced is not None:
            out = {"loss": replaced.loss, **replaced.metrics}
            if replaced.nll is not None:
                out[self.key] = replaced.nll
            return out
        z, log_prob = self.flow.latent_and_log_prob(x, context)
        return self._finish(self.flow, z, -log_prob, context)

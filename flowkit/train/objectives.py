"""Training objectives: bits per dimension with the discretisation constant, and Glow's class loss."""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from flowkit.distributions import Flow

__all__ = ["BitsPerDim", "bits_per_dim"]


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


class BitsPerDim(nn.Module):
    """The training objective as a module, so DistributedDataParallel can wrap it.

    ``forward(x, labels=None)`` returns a dict with ``loss`` (the scalar to minimise), ``bpd``
    (per example, bits per dimension of the image), and, for class-conditional Glow models
    (``flow.config.num_classes``), ``class_bits`` (per example cross-entropy in bits, weighted by
    ``flow.config.class_weight`` in the loss as the official ``weight_y``) and ``correct``.

    Args:
        flow: The model.
        n_bits: Bits per dimension of the data.
    """

    def __init__(self, flow: Flow, n_bits: int = 8) -> None:
        super().__init__()
        self.flow = flow
        self.n_bits = int(n_bits)
        self.num_dims = math.prod(flow.event_shape)
        config = getattr(flow, "config", None)
        self.num_classes = getattr(config, "num_classes", None)
        self.class_weight = float(getattr(config, "class_weight", 0.0))

    def forward(self, x: Tensor, labels: Tensor | None = None) -> dict[str, Tensor]:
        context = labels if self.num_classes is not None else None
        z, log_prob = self.flow.latent_and_log_prob(x, context)
        bpd = bits_per_dim(log_prob, self.num_dims, self.n_bits)
        out = {"bpd": bpd, "loss": bpd.mean()}
        if self.num_classes is not None and labels is not None:
            from flowkit.presets.glow import class_logits

            logits = class_logits(self.flow, z, context)
            class_bits = F.cross_entropy(logits, labels, reduction="none") / math.log(2.0)
            out["class_bits"] = class_bits
            out["correct"] = (logits.argmax(-1) == labels).to(bpd.dtype)
            out["loss"] = out["loss"] + self.class_weight * class_bits.mean()
        return out

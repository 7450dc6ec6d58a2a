"""Linear bijectors over channels: invertible 1x1 convolutions (dense or LU) and permutations."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._tensors import check_event_shape
from flowkit.bijectors.base import Bijector, Shape
from flowkit.bijectors.cache import DerivedWeights
from flowkit.bijectors.precision import outside_autocast

__all__ = ["AffineConv1x1", "InvertibleConv1x1", "Permute"]


class InvertibleConv1x1(DerivedWeights, Bijector):
    r"""Invertible 1x1 convolution: the same learned :math:`C \times C` matrix at every pixel.

    :math:`z_{:,i,j} = W x_{:,i,j}`, :math:`\log|\det J| = H W \log|\det W|`.

    ``lu=True`` (the default, as in Glow's fast variant) parameterises
    :math:`W = P L (U + \mathrm{diag}(\mathrm{sign}(s) e^{\log|s|}))` with a fixed permutation
    :math:`P`, unit lower-triangular :math:`L`, strictly upper-triangular :math:`U` and a fixed
    sign, so :math:`\log|\det W| = \sum \log|s|` costs :math:`O(C)`. ``lu=False`` learns :math:`W`
    itself and takes its log-determinant by ``slogdet`` in float64. Both start from a random
    rotation.

    The weight, its inverse (computed in float64) and the log-determinant depend only on the
    parameters. Without autograd (evaluation, sampling) they are computed once per parameter change
    and cached by a :class:`~flowkit.bijectors.cache.ParameterCache` (through
    :class:`~flowkit.bijectors.cache.DerivedWeights`, as for the vector maps), so an optimizer step,
    ``load_state_dict`` or ``.to()`` invalidates the cache; with autograd they are built fresh on
    each call so gradients reach the parameters. Writes that bypass the version counter (through
    ``.data``, or a collective writing into a parameter) go unseen: write to the parameter itself
    under ``torch.no_grad()``, as :func:`flowkit.initialize` does after its broadcast.

    Args:
        channels: Number of channels ``C``.
        lu: Use the LU parameterisation.
        seed: Seed of the random rotation (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, C, H, W)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions (2018), 3.2-3.3.

    Example:
        >>> conv = InvertibleConv1x1(4, seed=0)
        >>> x = torch.randn(2, 4, 8, 8)
        >>> z, log_abs_det = conv(x)
        >>> bool(torch.allclose(conv.inverse(z)[0], x, atol=1e-5))
        True
    """

    permutation: Tensor
    sign_s: Tensor
    lower_mask: Tensor

    event_rank = 3

    def __init__(self, channels: int, *, lu: bool = True, seed: int | None = None) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"InvertibleConv1x1 expects channels >= 1, got {channels}")
        self.channels = int(channels)
        self.lu = bool(lu)
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        rotation = torch.linalg.qr(
            torch.randn(channels, channels, generator=generator, dtype=torch.float64)
        )[0]
        if self.lu:
            # rotation = p @ lower @ upper (partial pivoting, as LAPACK's getrf).
            p, lower, upper = torch.linalg.lu(rotation)
            diagonal = torch.diagonal(upper)
            self.register_buffer("permutation", p.float())
            self.register_buffer("sign_s", torch.sign(diagonal).float())
            self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
            self.lower = nn.Parameter(torch.tril(lower, -1).float())
            self.upper = nn.Parameter(torch.triu(upper, 1).float())
            self.log_s = nn.Parameter(diagonal.abs().log().float())
        else:
            self.weight = nn.Parameter(rotation.float())

    # The weight, inverse and log-determinant as functions of the parameters.
    def _compute_weight(self) -> Tensor:
        if not self.lu:
            return self.weight
        eye = torch.eye(self.channels, dtype=self.lower.dtype, device=self.lower.device)
        lower = self.lower * self.lower_mask + eye
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_s.exp())
        return self.permutation @ (lower @ upper)

    def _compute_log_det(self) -> Tensor:
        if self.lu:
            return self.log_s.sum()
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def _compute_inverse(self) -> Tensor:
        if not self.lu:
            return torch.linalg.inv(self.weight.double()).to(self.weight.dtype)
        # W^-1 = U^-1 L^-1 P^T, by triangular solves in float64.
        eye = torch.eye(self.channels, dtype=torch.float64, device=self.lower.device)
        mask = self.lower_mask.double()
        lower = self.lower.double() * mask + eye
        upper = self.upper.double() * mask.T + torch.diag(
            self.sign_s.double() * self.log_s.double().exp()
        )
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        return (upper_inv @ lower_inv @ self.permutation.double().T).to(self.lower.dtype)

    def _apply_matrix(self, x: Tensor, matrix: Tensor) -> Tensor:
        batch_shape = x.shape[:-3]
        x4 = x.reshape((-1,) + x.shape[-3:]) if len(batch_shape) != 1 else x
        y = F.conv2d(x4, matrix.view(self.channels, self.channels, 1, 1))
        return y.reshape(x.shape) if len(batch_shape) != 1 else y

    def _log_abs_det(self, x: Tensor, log_det: Tensor) -> Tensor:
        return (log_det * (x.shape[-1] * x.shape[-2])).expand(x.shape[:-3])

    @outside_autocast
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Multiply every pixel's channels by :math:`W`; return ``(z, log_abs_det)``."""
        check_event_shape("InvertibleConv1x1", x, (self.channels, None, None))
        weight = self._derived("weight")
        return self._apply_matrix(x, weight), self._log_abs_det(x, self._derived("log_det"))

    @outside_autocast
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Multiply every pixel's channels by :math:`W^{-1}`; return ``(x, log_abs_det)``."""
        check_event_shape("InvertibleConv1x1", z, (self.channels, None, None), "latent")
        inverse = self._derived("inverse")
        return self._apply_matrix(z, inverse), -self._log_abs_det(z, self._derived("log_det"))

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the channel count."""
        check_event_shape("InvertibleConv1x1", shape, (self.channels, None, None))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        """Channels and parameterisation, for ``repr``."""
        return f"{self.channels}, lu={self.lu}"


class Permute(Bijector):
    r"""A fixed permutation of the first event dimension (image channels, vector entries).

    :math:`z_i = x_{\pi(i)}`; :math:`\log|\det J| = 0`. Build one from an explicit permutation,
    or with :meth:`reverse` (Glow's "reverse") or :meth:`shuffle` (a seeded random permutation).
    The permutation is a buffer, saved in the state dict.

    Args:
        permutation: A permutation of ``range(C)``.
        event_rank: 1 for vectors ``(C,)``, 3 for images ``(C, H, W)``.

    Example:
        >>> Permute([2, 0, 1])(torch.tensor([[10.0, 20.0, 30.0]]))[0]
        tensor([[30., 10., 20.]])
    """

    permutation: Tensor
    inverse_permutation: Tensor

    def __init__(self, permutation: Sequence[int] | Tensor, *, event_rank: int = 1) -> None:
        super().__init__()
        permutation = torch.as_tensor(permutation, dtype=torch.long)
        channels = permutation.numel()
        if permutation.dim() != 1 or not torch.equal(
            torch.sort(permutation).values, torch.arange(channels)
        ):
            raise ValueError(
                f"Permute expects a permutation of range({channels}), got {permutation.tolist()}"
            )
        if event_rank < 1:
            raise ValueError(f"Permute expects event_rank >= 1, got {event_rank}")
        self.event_rank = int(event_rank)
        self.channels = channels
        self.register_buffer("permutation", permutation)
        self.register_buffer("inverse_permutation", torch.argsort(permutation))

    @classmethod
    def reverse(cls, channels: int, *, event_rank: int = 1) -> Permute:
        """Reverse the order of the channels (Glow's cheapest permutation)."""
        return cls(torch.arange(channels - 1, -1, -1), event_rank=event_rank)

    @classmethod
    def shuffle(cls, channels: int, *, seed: int = 0, event_rank: int = 1) -> Permute:
        """A random permutation drawn from a generator seeded with ``seed``."""
        generator = torch.Generator().manual_seed(seed)
        return cls(torch.randperm(channels, generator=generator), event_rank=event_rank)

    def _pattern(self) -> tuple[int | None, ...]:
        return (self.channels,) + (None,) * (self.event_rank - 1)

    def _permute(self, x: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
        y = x.index_select(x.dim() - self.event_rank, index)
        return y, x.new_zeros(x.shape[: x.dim() - self.event_rank])

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Permute the first event dimension; the log-determinant is zero."""
        check_event_shape("Permute", x, self._pattern())
        return self._permute(x, self.permutation)

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply the inverse permutation; the log-determinant is zero."""
        check_event_shape("Permute", z, self._pattern(), "latent")
        return self._permute(z, self.inverse_permutation)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the permuted dimension's size."""
        check_event_shape("Permute", shape, self._pattern())
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        """Size and event rank, for ``repr``."""
        return f"{self.channels}, event_rank={self.event_rank}"


class AffineConv1x1(DerivedWeights, Bijector):
    r"""A fixed invertible affine 1x1 convolution :math:`z_{:,i,j} = W x_{:,i,j} + c`.

    The weight and offset are buffers (no learning): this is what
    :func:`flowkit.performance.fuse_for_inference` makes of an ActNorm followed by an
    :class:`InvertibleConv1x1`. :math:`W^{-1}` and :math:`\log|\det W|` are computed in float64 and
    kept until the weight or the dtype changes.

    Args:
        weight: Invertible matrix of shape ``(C, C)``.
        bias: Offset of shape ``(C,)`` (zeros if None).

    Example:
        >>> conv = AffineConv1x1(torch.eye(3) * 2, torch.ones(3))
        >>> conv(torch.zeros(1, 3, 2, 2))[0][0, :, 0, 0]
        tensor([1., 1., 1.])
    """

    weight: Tensor
    bias: Tensor

    event_rank = 3

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2 or weight.shape[0] != weight.shape[1]:
            raise ValueError(
                f"AffineConv1x1 expects a square (C, C) weight, got {tuple(weight.shape)}"
            )
        sign, _ = torch.linalg.slogdet(weight.double())
        if float(sign) == 0:
            raise ValueError("AffineConv1x1 expects an invertible weight, got a singular matrix")
        self.channels = weight.shape[0]
        bias = torch.zeros(self.channels, dtype=weight.dtype) if bias is None else bias
        if bias.shape != (self.channels,):
            raise ValueError(
                f"AffineConv1x1 expects a bias of shape ({self.channels},), got {tuple(bias.shape)}"
            )
        self.register_buffer("weight", weight.clone())
        self.register_buffer("bias", bias.clone().to(weight.dtype))

    def _compute_weight(self) -> Tensor:
        return self.weight

    def _compute_inverse(self) -> Tensor:
        return torch.linalg.inv(self.weight.double()).to(self.weight.dtype)

    def _compute_log_det(self) -> Tensor:
        return torch.linalg.slogdet(self.weight.double())[1].to(self.weight.dtype)

    def _conv(self, x: Tensor, matrix: Tensor) -> Tensor:
        flat = x.reshape((-1,) + x.shape[-3:])
        return F.conv2d(flat, matrix.view(self.channels, self.channels, 1, 1)).reshape(x.shape)

    @outside_autocast
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply :math:`z = W x + b` at every pixel; return ``(z, log_abs_det)``."""
        check_event_shape("AffineConv1x1", x, (self.channels, None, None))
        log_det = self._derived("log_det")
        z = self._conv(x, self.weight) + self.bias.view(-1, 1, 1)
        return z, (log_det * (x.shape[-1] * x.shape[-2])).expand(x.shape[:-3])

    @outside_autocast
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Apply :math:`x = W^{-1} (z - b)` at every pixel; return ``(x, log_abs_det)``."""
        check_event_shape("AffineConv1x1", z, (self.channels, None, None), "latent")
        inverse, log_det = self._derived("inverse"), self._derived("log_det")
        x = self._conv(z - self.bias.view(-1, 1, 1), inverse)
        return x, -(log_det * (z.shape[-1] * z.shape[-2])).expand(z.shape[:-3])

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the channel count."""
        check_event_shape("AffineConv1x1", shape, (self.channels, None, None))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, checked as in ``forward_shape``."""
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        """Channels, for ``repr``."""
        return f"{self.channels}"

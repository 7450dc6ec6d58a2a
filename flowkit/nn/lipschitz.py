"""Lipschitz-constrained layers: spectrally normalised linear and conv maps, LipSwish."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_choice, check_float, check_int

__all__ = [
    "LipSwish",
    "LipschitzConvNet",
    "LipschitzMLP",
    "SpectralNormConv2d",
    "SpectralNormLinear",
    "refresh_spectral_norm",
]

# Power iterations run when a layer is built, so that its first estimate of the spectral norm is
# already converged; each later parameter change advances the vectors by ``power_iterations``.
INITIAL_POWER_ITERATIONS = 50
# Guards the normalisation of the power-iteration vectors against a zero weight.
NORM_EPS = 1e-12
# LipSwish's divisor: sup |d/dx x sigmoid(beta x)| = 1.0998... for every beta > 0 (Chen et al.).
LIPSWISH_BOUND = 1.1


def _normalize(value: Tensor) -> Tensor:
    return value / value.norm().clamp_min(NORM_EPS)


class _SpectralNorm(nn.Module):
    r"""Shared machinery: the weight scaled to spectral norm at most ``coefficient``.

    The weight used is :math:`W / \max(1, \hat\sigma / c)`, where :math:`\hat\sigma = u^T W v` is
    the power-iteration estimate of the largest singular value (of the matrix, or of the whole
    convolution operator). The vectors :math:`u, v` are buffers, saved with the model. They are
    advanced only in training mode, and only when the weight has changed since they were last
    advanced (keyed on the weight's version counter): every call at fixed parameters uses the same
    vectors, so ``forward`` is deterministic and free of side effects between optimizer steps, as
    invertible backpropagation and fixed-point inversion need. In evaluation mode the stored vectors
    are used as they are. :func:`refresh_spectral_norm` advances them explicitly (to a tight
    estimate before measuring a Lipschitz constant, say).

    The power iteration approaches :math:`\sigma` from below, so the bound is
    :math:`c\,\sigma / \hat\sigma`: above ``coefficient`` by the estimate's relative error, which
    is small after a few iterations except where the top two singular values nearly coincide
    (1.5e-4 after 500 iterations in the worst case the tests have met). Keep ``coefficient``
    that far below 1 where the block must stay invertible (Residual Flows use 0.97 or 0.98).
    """

    weight: Tensor
    bias: Tensor | None
    u: Tensor
    v: Tensor

    def __init__(self, coefficient: float, power_iterations: int) -> None:
        super().__init__()
        self.coefficient = check_float(
            type(self).__name__, "coefficient", coefficient, 0.0, exclusive_minimum=True
        )
        self.power_iterations = check_int(
            type(self).__name__, "power_iterations", power_iterations, 1
        )
        self._seen_version: tuple[int, int] | None = None

    def _apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def _apply_transpose(self, y: Tensor, weight: Tensor) -> Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def refresh(self, iterations: int | None = None) -> None:
        """Advance the vectors ``iterations`` times (default: ``power_iterations``)."""
        weight = self.weight.detach()
        v = self.v
        u = self.u
        for _ in range(iterations or self.power_iterations):
            u = _normalize(self._apply_weight(v.unsqueeze(0), weight).squeeze(0))
            v = _normalize(self._apply_transpose(u.unsqueeze(0), weight).squeeze(0))
        self.u.copy_(u)
        self.v.copy_(v)
        self._seen_version = (id(self.weight), self.weight._version)

    def spectral_norm(self) -> Tensor:
        r"""The power-iteration estimate :math:`\hat\sigma = u^T W v` (differentiable in ``W``)."""
        product = self._apply_weight(self.v.unsqueeze(0), self.weight).squeeze(0)
        return (self.u * product).sum()

    def normalized_weight(self) -> Tensor:
        """The weight scaled so that its spectral norm is at most ``coefficient``."""
        if self.training and self._seen_version != (id(self.weight), self.weight._version):
            self.refresh()
        sigma = self.spectral_norm()
        return self.weight / torch.clamp(sigma / self.coefficient, min=1.0)


class SpectralNormLinear(_SpectralNorm):
    r"""A linear layer whose weight has spectral norm at most ``coefficient`` (Lipschitz <= c).

    Args:
        in_features: Input size.
        out_features: Output size.
        coefficient: Bound :math:`c` on the spectral norm (ResFlow uses 0.97-0.98).
        power_iterations: Power iterations after each parameter change in training mode.
        bias: Add a learned bias.

    Shapes:
        ``x``: ``(*batch, in_features)``; output ``(*batch, out_features)``.

    References:
        Miyato et al., Spectral Normalization for GANs (2018); Behrmann et al., Invertible Residual
        Networks (2019).

    Example:
        >>> layer = SpectralNormLinear(3, 4, coefficient=0.9)
        >>> bool(torch.linalg.matrix_norm(layer.normalized_weight(), 2) <= 0.9 + 1e-4)
        True
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        coefficient: float = 0.97,
        power_iterations: int = 1,
        bias: bool = True,
    ) -> None:
        super().__init__(coefficient, power_iterations)
        in_features = check_int("SpectralNormLinear", "in_features", in_features, 1)
        out_features = check_int("SpectralNormLinear", "out_features", out_features, 1)
        linear = nn.Linear(in_features, out_features, bias=bias)
        self.weight = linear.weight
        self.bias = linear.bias if bias else None
        self.register_buffer("u", _normalize(torch.randn(out_features)))
        self.register_buffer("v", _normalize(torch.randn(in_features)))
        self.refresh(INITIAL_POWER_ITERATIONS)

    def _apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.linear(x, weight)

    def _apply_transpose(self, y: Tensor, weight: Tensor) -> Tensor:
        return F.linear(y, weight.t())

    def forward(self, x: Tensor) -> Tensor:
        """Apply the normalised linear map."""
        return F.linear(x, self.normalized_weight(), self.bias)


class SpectralNormConv2d(_SpectralNorm):
    r"""A stride-1 'same' convolution whose operator norm is at most ``coefficient``.

    The power iteration runs on the convolution operator itself, on inputs of spatial size
    ``input_size`` (as Residual Flows do), not on the reshaped kernel, so the bound is on the
    layer's true Lipschitz constant for that size.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        kernel_size: Odd kernel size (padding keeps the spatial size).
        input_size: ``(H, W)`` of the inputs.
        coefficient: Bound :math:`c` on the operator norm.
        power_iterations: Power iterations after each parameter change in training mode.

    Shapes:
        ``x``: ``(*batch, in_channels, H, W)``; output ``(*batch, out_channels, H, W)``.

    References:
        Chen et al., Residual Flows for Invertible Generative Modeling (2019), section 4.

    Example:
        >>> conv = SpectralNormConv2d(2, 4, 3, input_size=(4, 4), coefficient=0.9)
        >>> conv(torch.randn(5, 2, 4, 4)).shape
        torch.Size([5, 4, 4, 4])
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        input_size: Sequence[int],
        coefficient: float = 0.97,
        power_iterations: int = 1,
    ) -> None:
        super().__init__(coefficient, power_iterations)
        in_channels = check_int("SpectralNormConv2d", "in_channels", in_channels, 1)
        out_channels = check_int("SpectralNormConv2d", "out_channels", out_channels, 1)
        kernel_size = check_int("SpectralNormConv2d", "kernel_size", kernel_size, 1)
        if kernel_size % 2 == 0:
            raise ValueError(f"SpectralNormConv2d expects an odd kernel_size, got {kernel_size}")
        size = tuple(input_size)
        if len(size) != 2 or not all(isinstance(s, int) and s >= 1 for s in size):
            raise ValueError(f"SpectralNormConv2d expects input_size (H, W), got {input_size!r}")
        self.padding = kernel_size // 2
        conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=self.padding)
        self.weight = conv.weight
        self.bias = conv.bias
        self.register_buffer("u", _normalize(torch.randn(out_channels, *size)))
        self.register_buffer("v", _normalize(torch.randn(in_channels, *size)))
        self.refresh(INITIAL_POWER_ITERATIONS)

    def _apply_weight(self, x: Tensor, weight: Tensor) -> Tensor:
        return F.conv2d(x, weight, padding=self.padding)

    def _apply_transpose(self, y: Tensor, weight: Tensor) -> Tensor:
        return F.conv_transpose2d(y, weight, padding=self.padding)

    def forward(self, x: Tensor) -> Tensor:
        """Apply the normalised convolution."""
        batch = x.shape[:-3]
        out = F.conv2d(
            x.reshape(-1, *x.shape[-3:]), self.normalized_weight(), self.bias, 1, self.padding
        )
        return out.reshape(*batch, *out.shape[-3:])


class LipSwish(nn.Module):
    r"""LipSwish, :math:`x \sigma(\beta x) / 1.1` with learned :math:`\beta > 0`: 1-Lipschitz.

    :math:`\beta = \mathrm{softplus}(\rho)` with :math:`\rho` learned, starting at 0.5 as in the
    official code.

    References:
        Chen et al., Residual Flows for Invertible Generative Modeling (2019), section 4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.raw_beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor) -> Tensor:
        """Apply LipSwish elementwise."""
        return x * torch.sigmoid(F.softplus(self.raw_beta) * x) / LIPSWISH_BOUND


ACTIVATIONS = ("lipswish", "elu", "tanh")


def _activation(name: str) -> nn.Module:
    if name == "lipswish":
        return LipSwish()
    return nn.ELU() if name == "elu" else nn.Tanh()


class LipschitzMLP(nn.Module):
    r"""An MLP of spectrally normalised layers and 1-Lipschitz activations: Lipschitz < ``c``.

    The product of the layers' bounds is :math:`c^{L}` for :math:`L` layers, below ``coefficient``.
    With ``context_features`` a plain linear map of the context is added to the first layer's
    output: it shifts the function without changing its Lipschitz constant in ``x``, so a residual
    block built on it stays invertible for every context.

    Args:
        features: Input and output size.
        hidden_features: Widths of the hidden layers.
        context_features: Size of the context vector, or None.
        coefficient: Bound on each layer's spectral norm.
        activation: ``"lipswish"``, ``"elu"`` or ``"tanh"`` (all 1-Lipschitz).
        power_iterations: Power iterations after each parameter change in training mode.

    Shapes:
        ``x``: ``(*batch, features)``; ``context``: ``(*batch, context_features)``; output like
        ``x``.

    Example:
        >>> net = LipschitzMLP(2, (16, 16), coefficient=0.9)
        >>> net(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """

    def __init__(
        self,
        features: int,
        hidden_features: Sequence[int] = (64, 64),
        *,
        context_features: int | None = None,
        coefficient: float = 0.97,
        activation: str = "lipswish",
        power_iterations: int = 1,
    ) -> None:
        super().__init__()
        check_choice("LipschitzMLP", "activation", activation, ACTIVATIONS)
        self.features = check_int("LipschitzMLP", "features", features, 1)
        self.context_features = check_int(
            "LipschitzMLP", "context_features", context_features, 1, optional=True
        )
        widths = [features, *hidden_features, features]
        layers: list[nn.Module] = []
        for index, (inputs, outputs) in enumerate(zip(widths[:-1], widths[1:])):
            if index:
                layers.append(_activation(activation))
            layers.append(
                SpectralNormLinear(
                    inputs, outputs, coefficient=coefficient, power_iterations=power_iterations
                )
            )
        self.layers = nn.Sequential(*layers)
        self.context_embedding: nn.Linear | None = None
        if self.context_features is not None:
            self.context_embedding = nn.Linear(self.context_features, widths[1], bias=False)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        """Apply the network (to ``x`` and, when conditional, its context)."""
        if self.context_embedding is None:
            return self.layers(x)
        if context is None:
            raise ValueError(
                f"LipschitzMLP expects a context of {self.context_features} features, got None"
            )
        first, *rest = list(self.layers)
        h = first(x) + self.context_embedding(context)
        for layer in rest:
            h = layer(h)
        return h


class LipschitzConvNet(nn.Sequential):
    r"""Residual Flows' image network: 3x3, 1x1, 3x3 spectrally normalised convolutions.

    Activations come first, as in the official code (``ACT -> conv -> ACT -> conv -> ...``), so
    the block's input is transformed before the first convolution.

    Args:
        channels: Input and output channels.
        hidden_channels: Channels of the inner layers.
        input_size: ``(H, W)`` of the inputs (the power iteration runs at that size).
        coefficient: Bound on each convolution's operator norm.
        activation: ``"lipswish"``, ``"elu"`` or ``"tanh"``.

    Example:
        >>> net = LipschitzConvNet(4, 8, input_size=(2, 2), coefficient=0.9)
        >>> net(torch.randn(3, 4, 2, 2)).shape
        torch.Size([3, 4, 2, 2])
    """

    def __init__(
        self,
        channels: int,
        hidden_channels: int,
        *,
        input_size: Sequence[int],
        coefficient: float = 0.97,
        activation: str = "lipswish",
        power_iterations: int = 1,
    ) -> None:
        check_choice("LipschitzConvNet", "activation", activation, ACTIVATIONS)
        options = dict(
            input_size=input_size, coefficient=coefficient, power_iterations=power_iterations
        )
        super().__init__(
            _activation(activation),
            SpectralNormConv2d(channels, hidden_channels, 3, **options),  # type: ignore[arg-type]
            _activation(activation),
            SpectralNormConv2d(hidden_channels, hidden_channels, 1, **options),  # type: ignore[arg-type]
            _activation(activation),
            SpectralNormConv2d(hidden_channels, channels, 3, **options),  # type: ignore[arg-type]
        )


def refresh_spectral_norm(module: nn.Module, iterations: int = INITIAL_POWER_ITERATIONS) -> None:
    """Advance the power iteration of every spectrally normalised layer in ``module``."""
    for layer in module.modules():
        if isinstance(layer, _SpectralNorm):
            layer.refresh(iterations)

"""Sylvester flows: a planar flow with M hidden units, orthogonal and triangular factors."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._checks import check_bool, check_int
from flowkit._tensors import check_dtype, check_event_shape
from flowkit.bijectors._amortized import ContextOffsets
from flowkit.bijectors._monotone import solve_increasing
from flowkit.bijectors.base import Bijector, Shape
from flowkit.bijectors.linear_vector import householder_product

__all__ = ["HouseholderSylvester", "OrthogonalSylvester", "TriangularSylvester"]

# softplus(log(e - 1)) = 1: the raw diagonal at which r_ii * r~_ii = 0, so that R starts at zero
# and the flow at the identity.
IDENTITY_RAW_DIAGONAL = math.log(math.e - 1)


def _project(x: Tensor, q: Tensor) -> Tensor:
    """:math:`Q^T x` for ``x`` of shape ``(*batch, D)`` and ``Q`` of ``([*batch,] D, M)``."""
    return torch.einsum("...d,...dm->...m", x, q)


def _embed(v: Tensor, q: Tensor) -> Tensor:
    """:math:`Q v`, the inverse of :func:`_project` on the span of the columns."""
    return torch.einsum("...m,...dm->...d", v, q)


def _times(v: Tensor, matrix: Tensor) -> Tensor:
    """:math:`A v` for ``v`` of shape ``(*batch, M)`` and ``A`` of ``([*batch,] M, M)``."""
    return torch.einsum("...j,...ij->...i", v, matrix)


class _Sylvester(Bijector):
    r"""What the three Sylvester flows share: everything but the orthogonal factor :math:`Q`.

    Subclasses register the raw parameters of :math:`Q`, return them from
    ``_orthogonal_parameters()``, build :math:`Q` (``(*batch, D, M)``, orthonormal columns) from
    them in ``_orthogonal(*raw)``, and end their constructor with ``_amortize()``.
    """

    event_rank = 1
    upper_flat_indices: Tensor

    def __init__(
        self, features: int, columns: int, context_features: int | None, seed: int | None
    ) -> None:
        super().__init__()
        owner = type(self).__name__
        self.features = check_int(owner, "features", features, 1)
        self.columns = check_int(owner, "columns", columns, 1, self.features)
        self.context_features = check_int(
            owner, "context_features", context_features, 1, optional=True
        )
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        count = self.columns * (self.columns - 1) // 2
        rows, cols = torch.triu_indices(self.columns, self.columns, offset=1)
        self.register_buffer("upper_flat_indices", rows * self.columns + cols)
        # R starts at zero (the identity map); R~ at I plus small strictly upper entries, so that
        # R's first gradient, h(R~ Q^T z + b), depends on z.
        self.upper_entries = nn.Parameter(torch.zeros(count))
        self.raw_diagonal = nn.Parameter(torch.full((self.columns,), IDENTITY_RAW_DIAGONAL))
        tilde = torch.randn(count, generator=generator) / math.sqrt(self.columns)
        self.tilde_upper_entries = nn.Parameter(tilde)
        self.tilde_log_diagonal = nn.Parameter(torch.zeros(self.columns))
        self.bias = nn.Parameter(torch.zeros(self.columns))
        self.amortizer: ContextOffsets | None = None

    def _orthogonal_parameters(self) -> tuple[Tensor, ...]:
        raise NotImplementedError

    def _orthogonal(self, *raw: Tensor) -> Tensor:
        raise NotImplementedError

    def _raw(self) -> tuple[Tensor, ...]:
        shared = (
            self.upper_entries,
            self.raw_diagonal,
            self.tilde_upper_entries,
            self.tilde_log_diagonal,
            self.bias,
        )
        return shared + self._orthogonal_parameters()

    def _amortize(self) -> None:
        """Give every raw parameter a per-sample offset from the context, if there is one."""
        if self.context_features is not None:
            shapes = [raw.shape for raw in self._raw()]
            owner = type(self).__name__
            self.amortizer = ContextOffsets(owner, self.context_features, shapes)

    def _triangular(self, entries: Tensor, diagonal: Tensor) -> Tensor:
        size = self.columns
        flat = diagonal.new_zeros(entries.shape[:-1] + (size * size,))
        flat = flat.index_copy(-1, self.upper_flat_indices, entries)
        return flat.unflatten(-1, (size, size)) + torch.diag_embed(diagonal)

    def factors(
        self, context: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        r""":math:`Q, R, \tilde R`, the diagonal :math:`\rho` of :math:`\tilde R R`, and :math:`b`.

        :math:`\tilde r_{ii} = e^{s_i}` and :math:`\rho_i = r_{ii} \tilde r_{ii} =
        -1 + \mathrm{softplus}(a_i) > -1` for raw :math:`s, a`, so the map is invertible whatever
        their values. Shapes ``(D, M)``, ``(M, M)``, ``(M, M)``, ``(M,)``, ``(M,)``, with the
        context's batch shape in front when the flow is amortised.
        """
        raw = self._raw()
        if self.amortizer is not None:
            raw = tuple(self.amortizer.offset(raw, context))
        upper_entries, raw_diagonal, tilde_entries, tilde_log_diagonal, bias, *orthogonal = raw
        rho = F.softplus(raw_diagonal) - 1
        tilde_diagonal = tilde_log_diagonal.exp()
        upper = self._triangular(upper_entries, rho / tilde_diagonal)
        tilde = self._triangular(tilde_entries, tilde_diagonal)
        return self._orthogonal(*orthogonal), upper, tilde, rho, bias

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map latent to data in closed form; return ``(x, log_abs_det)``."""
        self._check(z, "latent")
        q, upper, tilde, rho, bias = self.factors(context)
        pre_activation = _times(_project(z, q), tilde) + bias
        x = z + _embed(_times(torch.tanh(pre_activation), upper), q)
        return x, self._log_abs_det(pre_activation, rho)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Map data to latent by back substitution of ``M`` scalar root finds."""
        self._check(x, "input")
        q, upper, tilde, rho, bias = self.factors(context)
        projected = _project(x, q)
        root = self._solve(
            projected.detach(), upper.detach(), tilde.detach(), rho.detach(), bias.detach()
        )
        # One Newton step under autograd: the value stays the root (to rounding), and its
        # gradient is the implicit function theorem's, -(dg/dv)^-1 dg/dtheta.
        tanh = torch.tanh(_times(root, tilde) + bias)
        residual = root + _times(tanh, upper) - projected
        slope = (1 - tanh.detach().square()).unsqueeze(-1) * tilde.detach()
        jacobian = torch.eye(self.columns, dtype=x.dtype, device=x.device) + upper.detach() @ slope
        correction = torch.linalg.solve_triangular(jacobian, residual.unsqueeze(-1), upper=True)
        root = root - correction.squeeze(-1)
        pre_activation = _times(root, tilde) + bias
        z = x - _embed(_times(torch.tanh(pre_activation), upper), q)
        return z, -self._log_abs_det(pre_activation, rho)

    def _solve(
        self, projected: Tensor, upper: Tensor, tilde: Tensor, rho: Tensor, bias: Tensor
    ) -> Tensor:
        r"""Solve :math:`v + R \tanh(\tilde R v + b) = Q^T x` for :math:`v`, last entry first.

        Both factors are upper triangular, so entry :math:`i` of the left side depends on
        :math:`v_i, \dots, v_M` only, and increases in :math:`v_i` with slope
        :math:`1 + \rho_i \tanh' > 0`: given the later entries it is one bracketed scalar root.
        """
        root = torch.zeros_like(projected)
        activations = torch.zeros_like(projected)
        for i in reversed(range(self.columns)):
            later = slice(i + 1, None)
            offset = (root[..., later] * tilde[..., i, later]).sum(-1) + bias[..., i]
            target = projected[..., i] - (activations[..., later] * upper[..., i, later]).sum(-1)
            scale, weight = upper[..., i, i], tilde[..., i, i]

            def equation(
                v: Tensor, scale=scale, weight=weight, offset=offset, rho=rho[..., i]
            ) -> tuple[Tensor, Tensor]:
                tanh = torch.tanh(weight * v + offset)
                return v + scale * tanh, 1 + rho * (1 - tanh.square())

            spread = scale.abs()
            root[..., i] = solve_increasing(equation, target, target - spread, target + spread)
            activations[..., i] = torch.tanh(weight * root[..., i] + offset)
        return root

    @staticmethod
    def _log_abs_det(pre_activation: Tensor, rho: Tensor) -> Tensor:
        r""":math:`\sum_i \log(1 + \rho_i \tanh'(\cdot)_i)`, the generative log-determinant."""
        derivative = 1 - torch.tanh(pre_activation).square()
        return torch.log1p(rho * derivative).sum(-1)

    def _check(self, value: Tensor, what: str) -> None:
        check_dtype(type(self).__name__, value, what)
        check_event_shape(type(self).__name__, value, (self.features,), what)

    def forward_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape(type(self).__name__, shape, (self.features,))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        """The shape unchanged, after checking the event size."""
        check_event_shape(type(self).__name__, shape, (self.features,), "latent")
        return torch.Size(shape)

    def extra_repr(self) -> str:
        """Features and hidden units, for ``repr``."""
        return f"{self.features}, columns={self.columns}"


class OrthogonalSylvester(_Sylvester):
    r"""Orthogonal Sylvester flow (van den Berg et al., 2018), closed-form in sampling.

    The generative map (``inverse``, latent :math:`z` to data :math:`x`) is
    :math:`x = z + Q R \tanh(\tilde R Q^T z + b)`, with
    :math:`\log|\det \partial x / \partial z|
    = \sum_{i=1}^{M} \log(1 + r_{ii} \tilde r_{ii} \tanh'(\cdot)_i)`:
    a planar flow with :math:`M` hidden units whose determinant, by Sylvester's identity, is that
    of a triangular matrix. :math:`R, \tilde R` are :math:`M \times M` upper triangular with
    :math:`\tilde r_{ii} = e^{s_i}` and
    :math:`r_{ii} \tilde r_{ii} = -1 + \mathrm{softplus}(a_i)`, above -1 for any raw
    :math:`s, a`, so the map is invertible for every value of the raw parameters
    (the paper bounds both diagonals by tanh instead, which caps each factor of the determinant
    at 2). :math:`Q` is the orthonormal factor of the QR decomposition of a learned
    :math:`D \times M` matrix, :math:`M \le D` (the paper's orthogonal variant, whose iterative
    orthogonalisation stops at a tolerance; the QR factor is orthonormal to working precision,
    which the log-determinant relies on).

    ``inverse`` is one pass, :math:`O(DM)` per sample: the direction variational inference samples
    in. ``forward`` (data to latent) has no closed form: :math:`z` keeps the component of :math:`x`
    orthogonal to :math:`Q`'s columns, and :math:`v = Q^T z` solves the triangular system
    :math:`v + R \tanh(\tilde R v + b) = Q^T x`, one increasing scalar equation per entry from the
    last to the first, each bracketed and solved by safeguarded Newton to working precision
    (:math:`M` sequential solves of typically 5-10 iterations). Gradients of ``forward`` are exact
    by the implicit function theorem (one differentiable Newton step at the root). The map starts
    as the identity (:math:`R = 0`). With ``context_features`` it is amortised, as in the paper:
    each sample's raw parameters (those of :math:`Q` included) are the shared ones plus a linear
    function of its context (an encoder's output), zero at the start.

    Args:
        features: Size ``D`` of the vectors.
        columns: Number ``M`` of hidden units and of orthonormal columns, at most ``D``
            (``D`` by default).
        context_features: Size ``C`` of the context vectors, or None for one map for all.
        seed: Seed of the random initial matrices (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, C)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.

    References:
        van den Berg, Hasenclever, Tomczak & Welling, Sylvester Normalizing Flows for Variational
        Inference (2018), section 3.

    Example:
        >>> flow = OrthogonalSylvester(4, columns=2, seed=0)
        >>> x, log_abs_det = flow.inverse(torch.randn(5, 4))
        >>> x.shape, log_abs_det.shape
        (torch.Size([5, 4]), torch.Size([5]))
    """

    def __init__(
        self,
        features: int,
        columns: int | None = None,
        *,
        context_features: int | None = None,
        seed: int | None = None,
    ) -> None:
        columns = features if columns is None else columns
        super().__init__(features, columns, context_features, seed)
        generator = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        self.matrix = nn.Parameter(torch.randn(self.features, self.columns, generator=generator))
        self._amortize()

    def _orthogonal_parameters(self) -> tuple[Tensor, ...]:
        return (self.matrix,)

    def _orthogonal(self, *raw: Tensor) -> Tensor:
        return torch.linalg.qr(raw[0])[0]


class HouseholderSylvester(_Sylvester):
    r"""Householder Sylvester flow (van den Berg et al., 2018), closed-form in sampling.

    The generative map (``inverse``, latent :math:`z` to data :math:`x`) is
    :math:`x = z + Q R \tanh(\tilde R Q^T z + b)`, with
    :math:`\log|\det \partial x / \partial z|
    = \sum_{i=1}^{M} \log(1 + r_{ii} \tilde r_{ii} \tanh'(\cdot)_i)`:
    a planar flow with :math:`M` hidden units whose determinant, by Sylvester's identity, is that
    of a triangular matrix. :math:`R, \tilde R` are :math:`M \times M` upper triangular with
    :math:`\tilde r_{ii} = e^{s_i}` and
    :math:`r_{ii} \tilde r_{ii} = -1 + \mathrm{softplus}(a_i)`, above -1 for any raw
    :math:`s, a`, so the map is invertible for every value of the raw parameters
    (the paper bounds both diagonals by tanh instead, which caps each factor of the determinant
    at 2). :math:`M = D` and :math:`Q = H_1 \cdots H_k` is a product of learned
    Householder reflections (see :func:`~flowkit.bijectors.householder_product`), orthogonal for
    any reflection vectors.

    ``inverse`` is one pass, :math:`O(DM)` per sample: the direction variational inference samples
    in. ``forward`` (data to latent) has no closed form: :math:`z` keeps the component of :math:`x`
    orthogonal to :math:`Q`'s columns, and :math:`v = Q^T z` solves the triangular system
    :math:`v + R \tanh(\tilde R v + b) = Q^T x`, one increasing scalar equation per entry from the
    last to the first, each bracketed and solved by safeguarded Newton to working precision
    (:math:`M` sequential solves of typically 5-10 iterations). Gradients of ``forward`` are exact
    by the implicit function theorem (one differentiable Newton step at the root). The map starts
    as the identity (:math:`R = 0`). With ``context_features`` it is amortised, as in the paper:
    each sample's raw parameters (those of :math:`Q` included) are the shared ones plus a linear
    function of its context (an encoder's output), zero at the start.

    Args:
        features: Size ``D`` of the vectors.
        reflections: Number ``k`` of reflections (``D`` by default; the paper uses few).
        context_features: Size ``C`` of the context vectors, or None for one map for all.
        seed: Seed of the random initial matrices (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, C)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.

    References:
        van den Berg, Hasenclever, Tomczak & Welling, Sylvester Normalizing Flows for Variational
        Inference (2018), section 3.

    Example:
        >>> flow = HouseholderSylvester(3, reflections=2, seed=0)
        >>> x, log_abs_det = flow.inverse(torch.randn(5, 3))
        >>> x.shape
        torch.Size([5, 3])
    """

    def __init__(
        self,
        features: int,
        reflections: int | None = None,
        *,
        context_features: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(features, features, context_features, seed)
        count = self.features if reflections is None else reflections
        self.reflections = check_int("HouseholderSylvester", "reflections", count, 1)
        generator = torch.Generator().manual_seed(seed + 1) if seed is not None else None
        self.vectors = nn.Parameter(
            torch.randn(self.reflections, self.features, generator=generator)
        )
        self._amortize()

    def _orthogonal_parameters(self) -> tuple[Tensor, ...]:
        return (self.vectors,)

    def _orthogonal(self, *raw: Tensor) -> Tensor:
        return householder_product(raw[0])

    def extra_repr(self) -> str:
        """Features and reflections, for ``repr``."""
        return f"{self.features}, reflections={self.reflections}"


class TriangularSylvester(_Sylvester):
    r"""Triangular Sylvester flow (van den Berg et al., 2018), closed-form in sampling.

    The generative map (``inverse``, latent :math:`z` to data :math:`x`) is
    :math:`x = z + Q R \tanh(\tilde R Q^T z + b)`, with
    :math:`\log|\det \partial x / \partial z|
    = \sum_{i=1}^{M} \log(1 + r_{ii} \tilde r_{ii} \tanh'(\cdot)_i)`:
    a planar flow with :math:`M` hidden units whose determinant, by Sylvester's identity, is that
    of a triangular matrix. :math:`R, \tilde R` are :math:`M \times M` upper triangular with
    :math:`\tilde r_{ii} = e^{s_i}` and
    :math:`r_{ii} \tilde r_{ii} = -1 + \mathrm{softplus}(a_i)`, above -1 for any raw
    :math:`s, a`, so the map is invertible for every value of the raw parameters
    (the paper bounds both diagonals by tanh instead, which caps each factor of the determinant
    at 2). :math:`M = D` and :math:`Q` is fixed: the identity, or with ``reverse=True``
    the reversal of the features. The paper alternates the two between consecutive steps
    (``reverse=k % 2 == 1`` for step ``k`` of a :class:`~flowkit.bijectors.Compose`).

    ``inverse`` is one pass, :math:`O(DM)` per sample: the direction variational inference samples
    in. ``forward`` (data to latent) has no closed form: :math:`z` keeps the component of :math:`x`
    orthogonal to :math:`Q`'s columns, and :math:`v = Q^T z` solves the triangular system
    :math:`v + R \tanh(\tilde R v + b) = Q^T x`, one increasing scalar equation per entry from the
    last to the first, each bracketed and solved by safeguarded Newton to working precision
    (:math:`M` sequential solves of typically 5-10 iterations). Gradients of ``forward`` are exact
    by the implicit function theorem (one differentiable Newton step at the root). The map starts
    as the identity (:math:`R = 0`). With ``context_features`` it is amortised, as in the paper:
    each sample's raw parameters (those of :math:`Q` included) are the shared ones plus a linear
    function of its context (an encoder's output), zero at the start.

    Args:
        features: Size ``D`` of the vectors.
        reverse: Take :math:`Q` as the reversal permutation instead of the identity.
        context_features: Size ``C`` of the context vectors, or None for one map for all.
        seed: Seed of the random initial matrices (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``context``: ``(*batch, C)``; ``z`` like ``x``;
        ``log_abs_det``: ``(*batch,)``.

    References:
        van den Berg, Hasenclever, Tomczak & Welling, Sylvester Normalizing Flows for Variational
        Inference (2018), section 3.

    Example:
        >>> flow = TriangularSylvester(3, reverse=True, seed=0)
        >>> x, log_abs_det = flow.inverse(torch.randn(5, 3))
        >>> x.shape
        torch.Size([5, 3])
    """

    permutation: Tensor

    def __init__(
        self,
        features: int,
        *,
        reverse: bool = False,
        context_features: int | None = None,
        seed: int | None = None,
    ) -> None:
        super().__init__(features, features, context_features, seed)
        self.reverse = check_bool("TriangularSylvester", "reverse", reverse)
        eye = torch.eye(self.features)
        self.register_buffer("permutation", eye.flip(-1) if self.reverse else eye)
        self._amortize()

    def _orthogonal_parameters(self) -> tuple[Tensor, ...]:
        return ()

    def _orthogonal(self, *raw: Tensor) -> Tensor:
        return self.permutation

    def extra_repr(self) -> str:
        """Features and order, for ``repr``."""
        return f"{self.features}, reverse={self.reverse}"

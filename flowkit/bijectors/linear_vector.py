"""Dense linear bijectors of vectors: LU, Householder (orthogonal), QR and SVD parameterisations."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flowkit._tensors import check_event_shape
from flowkit.bijectors.base import Bijector, Shape
from flowkit.bijectors.cache import DerivedWeights
from flowkit.bijectors.precision import outside_autocast

__all__ = [
    "HouseholderLinear",
    "LULinear",
    "QRLinear",
    "SVDLinear",
    "householder_product",
]

# A Householder vector shorter than this acts as the identity instead of dividing by ~0.
MIN_HOUSEHOLDER_NORM = 1e-12


def householder_product(vectors: Tensor) -> Tensor:
    r"""The orthogonal product :math:`Q = H_1 \cdots H_k` of reflections :math:`H_i`.

    :math:`H_i = I - 2 v_i v_i^T / \|v_i\|^2` reflects across the hyperplane orthogonal to
    :math:`v_i`.

    Every orthogonal :math:`D \times D` matrix is a product of at most :math:`D` reflections, so
    ``k = D`` vectors reach all of them (with :math:`\det Q = (-1)^k`).

    Args:
        vectors: The vectors :math:`v_i` as rows, shape ``(k, D)``, or ``(*batch, k, D)`` for a
            batch of products. A vector of norm below ``MIN_HOUSEHOLDER_NORM`` gives the identity.

    Returns:
        :math:`Q`, shape ``(D, D)`` (``(*batch, D, D)``), in the dtype of ``vectors``.

    Example:
        >>> q = householder_product(torch.randn(3, 3, dtype=torch.float64))
        >>> bool(torch.allclose(q.T @ q, torch.eye(3, dtype=torch.float64)))
        True
    """
    units = vectors / vectors.norm(dim=-1, keepdim=True).clamp_min(MIN_HOUSEHOLDER_NORM)
    size = vectors.shape[-1]
    eye = torch.eye(size, dtype=vectors.dtype, device=vectors.device)
    q = eye.expand(vectors.shape[:-2] + (size, size))
    for index in range(vectors.shape[-2]):
        u = units[..., index, :]
        # Q H = Q - 2 (Q u) u^T costs O(D^2) per reflection; no D x D reflection is formed.
        q = q - 2.0 * (q @ u.unsqueeze(-1)) * u.unsqueeze(-2)
    return q


def _random_rotation(features: int, seed: int | None) -> Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    gaussian = torch.randn(features, features, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(gaussian)[0]


def _random_vectors(count: int, features: int, seed: int | None) -> Tensor:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.randn(count, features, generator=generator)


class _DenseLinear(DerivedWeights, Bijector):
    r"""Shared machinery of dense linear maps :math:`z = W x + b` of vectors.

    Subclasses build :math:`W`, :math:`W^{-1}` and :math:`\log|\det W|` from their parameters in
    ``_compute_weight``, ``_compute_inverse`` and ``_compute_log_det``; these are cached outside
    autograd by :class:`~flowkit.bijectors.cache.DerivedWeights`, as for
    :class:`~flowkit.bijectors.InvertibleConv1x1`.
    """

    event_rank = 1

    def __init__(self, features: int, *, bias: bool) -> None:
        super().__init__()
        if features < 1:
            raise ValueError(f"{type(self).__name__} expects features >= 1, got {features}")
        self.features = int(features)
        self.bias: nn.Parameter | None
        self.register_parameter("bias", nn.Parameter(torch.zeros(self.features)) if bias else None)

    @outside_autocast
    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape(type(self).__name__, x, (self.features,))
        z = F.linear(x, self._derived("weight"), self.bias)
        # A copy, so that in-place edits of the result cannot reach the cached value.
        return z, self._derived("log_det").expand(x.shape[:-1]).clone()

    @outside_autocast
    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        check_event_shape(type(self).__name__, z, (self.features,), "latent")
        shifted = z if self.bias is None else z - self.bias
        x = F.linear(shifted, self._derived("inverse"))
        return x, -self._derived("log_det").expand(z.shape[:-1])

    def forward_shape(self, shape: Shape) -> torch.Size:
        check_event_shape(type(self).__name__, shape, (self.features,))
        return torch.Size(shape)

    def inverse_shape(self, shape: Shape) -> torch.Size:
        return self.forward_shape(shape)

    def extra_repr(self) -> str:
        return f"{self.features}, bias={self.bias is not None}"


def _triangle_indices(features: int, upper: bool) -> Tensor:
    """Row and column indices of the strict upper (or lower) triangle, shape ``(2, D(D-1)/2)``."""
    if upper:
        return torch.triu_indices(features, features, offset=1)
    return torch.tril_indices(features, features, offset=-1)


def _triangular(entries: Tensor, indices: Tensor, diagonal: Tensor) -> Tensor:
    """A triangular matrix with ``entries`` at ``indices`` and ``diagonal`` on the diagonal."""
    matrix = torch.diag(diagonal)
    return matrix.index_put((indices[0], indices[1]), entries)


def _reflection_count(owner: str, features: int, reflections: int | None) -> int:
    count = features if reflections is None else int(reflections)
    if count < 1:
        raise ValueError(f"{owner} expects reflections >= 1, got {reflections}")
    return count


class _ReflectionLinear(_DenseLinear):
    """Dense linear maps whose orthogonal factors are products of Householder reflections.

    One constructor for the QR and SVD forms: it validates ``reflections`` (``D`` by default),
    draws ``factors * reflections`` random vectors and hands them to ``_init_factors``.
    """

    factors: int = 1

    def __init__(
        self,
        features: int,
        reflections: int | None = None,
        *,
        bias: bool = True,
        seed: int | None = None,
    ) -> None:
        super().__init__(features, bias=bias)
        self.reflections = _reflection_count(type(self).__name__, self.features, reflections)
        self._init_factors(_random_vectors(self.factors * self.reflections, self.features, seed))

    def _init_factors(self, vectors: Tensor) -> None:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reflections={self.reflections}"


class LULinear(_DenseLinear):
    r"""Dense linear map :math:`z = W x + b` with :math:`W` in LU form.

    :math:`W = P L (U + \mathrm{diag}(\mathrm{sign} \odot e^{s}))` with a fixed permutation
    :math:`P`, a learned unit lower-triangular :math:`L`, a learned strictly upper-triangular
    :math:`U`, learned :math:`s` and a fixed sign, so that
    :math:`\log|\det J| = \sum_i s_i` costs :math:`O(D)`. The inverse
    :math:`W^{-1} = (U + \mathrm{diag}(\cdot))^{-1} L^{-1} P^T` is computed by triangular solves
    in float64. Weight, inverse and log-determinant are cached outside autograd as for
    :class:`~flowkit.bijectors.InvertibleConv1x1` (whose ``lu=True`` case is this map applied at
    every pixel).

    By default :math:`W` starts as a random rotation (its LU factors); ``identity_init`` starts
    from :math:`W = I`, useful after a fixed permutation.

    Args:
        features: Size ``D`` of the vectors.
        bias: Learn the shift :math:`b` (zero at the start).
        identity_init: Start from the identity instead of a random rotation.
        seed: Seed of the random rotation (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Kingma & Dhariwal, Glow: Generative Flow with Invertible 1x1 Convolutions (2018), 3.2;
        Durkan, Bekasov, Murray & Papamakarios, Neural Spline Flows (2019), appendix (LU linear
        layers between coupling steps).

    Example:
        >>> linear = LULinear(3, seed=0)
        >>> x = torch.randn(5, 3)
        >>> z, log_abs_det = linear(x)
        >>> bool(torch.allclose(linear.inverse(z)[0], x, atol=1e-5))
        True
    """

    lower_indices: Tensor
    upper_indices: Tensor
    permutation: Tensor
    sign: Tensor

    def __init__(
        self,
        features: int,
        *,
        bias: bool = True,
        identity_init: bool = False,
        seed: int | None = None,
    ) -> None:
        super().__init__(features, bias=bias)
        size = self.features
        if identity_init:
            permutation = torch.eye(size, dtype=torch.float64)
            lower = torch.eye(size, dtype=torch.float64)
            upper = torch.eye(size, dtype=torch.float64)
        else:
            permutation, lower, upper = torch.linalg.lu(_random_rotation(size, seed))
        diagonal = torch.diagonal(upper)
        self.register_buffer("lower_indices", _triangle_indices(size, upper=False))
        self.register_buffer("upper_indices", _triangle_indices(size, upper=True))
        self.register_buffer("permutation", permutation.float())
        self.register_buffer("sign", torch.sign(diagonal).float())
        rows, cols = self.lower_indices
        self.lower_entries = nn.Parameter(lower[rows, cols].float())
        rows, cols = self.upper_indices
        self.upper_entries = nn.Parameter(upper[rows, cols].float())
        self.log_diagonal = nn.Parameter(diagonal.abs().log().float())

    def _factors(self, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        ones = torch.ones(self.features, dtype=dtype, device=self.log_diagonal.device)
        lower = _triangular(self.lower_entries.to(dtype), self.lower_indices, ones)
        diagonal = self.sign.to(dtype) * self.log_diagonal.to(dtype).exp()
        upper = _triangular(self.upper_entries.to(dtype), self.upper_indices, diagonal)
        return lower, upper

    def _compute_weight(self) -> Tensor:
        lower, upper = self._factors(self.log_diagonal.dtype)
        return self.permutation @ (lower @ upper)

    def _compute_inverse(self) -> Tensor:
        lower, upper = self._factors(torch.float64)
        eye = torch.eye(self.features, dtype=torch.float64, device=lower.device)
        lower_inv = torch.linalg.solve_triangular(lower, eye, upper=False, unitriangular=True)
        upper_inv = torch.linalg.solve_triangular(upper, eye, upper=True)
        inverse = upper_inv @ lower_inv @ self.permutation.double().T
        return inverse.to(self.log_diagonal.dtype)

    def _compute_log_det(self) -> Tensor:
        return self.log_diagonal.sum()


class HouseholderLinear(_DenseLinear):
    r"""Orthogonal map :math:`z = Q x` with :math:`Q = H_1 \cdots H_k` a product of reflections.

    :math:`H_i = I - 2 v_i v_i^T / \|v_i\|^2` with learned :math:`v_i`; :math:`Q` is orthogonal
    for any :math:`v_i`, so the inverse is :math:`Q^T` and :math:`\log|\det J| = 0` (the map is
    volume-preserving). ``reflections = D`` (the default) reaches every orthogonal matrix of
    determinant :math:`(-1)^D`; fewer reflections cost less. :math:`Q` is cached outside autograd.

    Args:
        features: Size ``D`` of the vectors.
        reflections: Number ``k`` of reflections (``D`` by default).
        seed: Seed of the random initial vectors (None draws from torch's global generator).

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)`` (zeros).

    References:
        Tomczak & Welling, Improving Variational Auto-Encoders using Householder Flow (2016).

    Example:
        >>> rotation = HouseholderLinear(4, seed=0)
        >>> z, log_abs_det = rotation(torch.randn(2, 4))
        >>> log_abs_det
        tensor([0., 0.])
    """

    def __init__(
        self, features: int, reflections: int | None = None, *, seed: int | None = None
    ) -> None:
        super().__init__(features, bias=False)
        self.reflections = _reflection_count("HouseholderLinear", self.features, reflections)
        self.vectors = nn.Parameter(_random_vectors(self.reflections, self.features, seed))

    def _compute_weight(self) -> Tensor:
        return householder_product(self.vectors)

    def _compute_inverse(self) -> Tensor:
        return householder_product(self.vectors).T

    def _compute_log_det(self) -> Tensor:
        return self.vectors.new_zeros(())

    def extra_repr(self) -> str:
        """Features and number of reflections, for ``repr``."""
        return f"{self.features}, reflections={self.reflections}"


class QRLinear(_ReflectionLinear):
    r"""Dense linear map :math:`z = Q R x + b`, orthogonal :math:`Q` times triangular :math:`R`.

    :math:`Q` is a product of ``reflections`` Householder reflections (see
    :class:`HouseholderLinear`) and :math:`R = U + \mathrm{diag}(e^{s})` with a learned strictly
    upper-triangular :math:`U`, so the diagonal of :math:`R` stays positive and
    :math:`\log|\det J| = \sum_i s_i`. The inverse :math:`R^{-1} Q^T` uses a triangular solve in
    float64. It starts as a random rotation (:math:`R = I`).

    Args:
        features: Size ``D`` of the vectors.
        reflections: Number of Householder reflections in :math:`Q` (``D`` by default).
        bias: Learn the shift :math:`b` (zero at the start).
        seed: Seed of the random initial reflections.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Hoogeboom, van den Berg & Welling, Emerging Convolutions for Generative Normalizing Flows
        (2019), section 3.3 (QR-parameterised 1x1 convolutions).

    Example:
        >>> linear = QRLinear(3, seed=0)
        >>> z, log_abs_det = linear(torch.randn(5, 3))
        >>> log_abs_det.shape
        torch.Size([5])
    """

    upper_indices: Tensor

    def _init_factors(self, vectors: Tensor) -> None:
        self.vectors = nn.Parameter(vectors)
        self.register_buffer("upper_indices", _triangle_indices(self.features, upper=True))
        self.upper_entries = nn.Parameter(torch.zeros(self.upper_indices.shape[1]))
        self.log_diagonal = nn.Parameter(torch.zeros(self.features))

    def _upper(self, dtype: torch.dtype) -> Tensor:
        return _triangular(
            self.upper_entries.to(dtype), self.upper_indices, self.log_diagonal.to(dtype).exp()
        )

    def _compute_weight(self) -> Tensor:
        return householder_product(self.vectors) @ self._upper(self.vectors.dtype)

    def _compute_inverse(self) -> Tensor:
        upper = self._upper(torch.float64)
        q_transposed = householder_product(self.vectors.double()).T
        inverse = torch.linalg.solve_triangular(upper, q_transposed, upper=True)
        return inverse.to(self.vectors.dtype)

    def _compute_log_det(self) -> Tensor:
        return self.log_diagonal.sum()


class SVDLinear(_ReflectionLinear):
    r"""Dense linear map :math:`z = U \mathrm{diag}(e^{s}) V^T x + b` in singular value form.

    :math:`U` and :math:`V` are products of ``reflections`` Householder reflections each (see
    :class:`HouseholderLinear`) and :math:`e^{s}` are the singular values, so
    :math:`\log|\det J| = \sum_i s_i` and the inverse
    :math:`V \mathrm{diag}(e^{-s}) U^T` needs no solve. Bounding :math:`s` (e.g. by weight decay)
    bounds the condition number of :math:`W` directly. It starts as a random rotation
    (:math:`s = 0`).

    Args:
        features: Size ``D`` of the vectors.
        reflections: Number of Householder reflections in each of :math:`U` and :math:`V`
            (``D`` by default).
        bias: Learn the shift :math:`b` (zero at the start).
        seed: Seed of the random initial reflections.

    Shapes:
        ``x``: ``(*batch, D)``; ``z`` the same; ``log_abs_det``: ``(*batch,)``.

    References:
        Zhang, Lei & Dhillon, Stabilizing Gradients for Deep Neural Networks via Efficient SVD
        Parameterization (2018); Hoogeboom et al., The Convolution Exponential and Generalized
        Sylvester Flows (2020).

    Example:
        >>> linear = SVDLinear(3, seed=0)
        >>> z, log_abs_det = linear(torch.randn(5, 3))
        >>> log_abs_det.shape
        torch.Size([5])
    """

    factors = 2

    def _init_factors(self, vectors: Tensor) -> None:
        self.left_vectors = nn.Parameter(vectors[: self.reflections].clone())
        self.right_vectors = nn.Parameter(vectors[self.reflections :].clone())
        self.log_singular_values = nn.Parameter(torch.zeros(self.features))

    def _compute_weight(self) -> Tensor:
        left = householder_product(self.left_vectors)
        right = householder_product(self.right_vectors)
        return (left * self.log_singular_values.exp()) @ right.T

    def _compute_inverse(self) -> Tensor:
        left = householder_product(self.left_vectors.double())
        right = householder_product(self.right_vectors.double())
        inverse_values = torch.exp(-self.log_singular_values.double())
        return ((right * inverse_values) @ left.T).to(self.left_vectors.dtype)

    def _compute_log_det(self) -> Tensor:
        return self.log_singular_values.sum()

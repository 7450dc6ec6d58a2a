"""Internal helpers shared across flowkit: argument and tensor checks, reductions, compiling."""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar, overload

import torch
from torch import Tensor, nn
from torch.distributions import constraints

if TYPE_CHECKING:
    from typing_extensions import TypeGuard

__all__ = [
    "build_seeded",
    "MAX_BINS",
    "MAX_CLASSES",
    "MAX_FEATURES",
    "MAX_IMAGE_SIZE",
    "MAX_LEVELS",
    "MAX_PARAMETERS",
    "MAX_SEED",
    "MAX_STEPS",
    "MAX_WIDTH",
    "MIN_SEED",
    "accepts_context",
    "check_bool",
    "check_choice",
    "check_float",
    "check_int",
    "check_matches_module",
    "check_parameter_count",
    "check_sample_shape",
    "check_shape",
    "check_temperature",
    "mlp_parameter_count",
    "module_dtype_device",
    "every_nth",
    "call_network",
    "reduce_to_batch",
    "check_dtype",
    "check_event_shape",
    "check_finite",
    "check_support",
    "is_compiling",
    "sum_rightmost",
    "validation_enabled",
    "set_validation",
]

_VALIDATION = {"enabled": True}


def set_validation(enabled: bool) -> None:
    """Turn the value checks (finiteness, domains) on or off for the whole process.

    Shape and dtype checks cost only Python work and always run. Value checks read the data and, on
    a GPU, synchronise with the device; a tuned training loop may switch them off. They never run
    inside ``torch.compile``.
    """
    _VALIDATION["enabled"] = bool(enabled)


def validation_enabled() -> bool:
    """Whether value checks run now (on, and not being traced by ``torch.compile``)."""
    return _VALIDATION["enabled"] and not is_compiling()


def is_compiling() -> bool:
    """True while ``torch.compile`` (dynamo) traces the calling code."""
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and hasattr(compiler, "is_compiling"):
        return compiler.is_compiling()
    return torch._dynamo.is_compiling()  # torch 2.2


def sum_rightmost(value: Tensor, dims: int) -> Tensor:
    """Sum the ``dims`` rightmost dimensions of ``value`` (no-op for ``dims == 0``)."""
    if dims == 0:
        return value
    # flatten, not reshape(..., -1): an empty batch leaves -1 ambiguous.
    return value.flatten(value.dim() - dims).sum(-1)


def reduce_to_batch(log_abs_det: Tensor, batch_rank: int) -> Tensor:
    """Sum every dimension of ``log_abs_det`` after the first ``batch_rank`` (the batch)."""
    if log_abs_det.dim() == batch_rank:
        return log_abs_det
    return log_abs_det.flatten(batch_rank).sum(-1)


def _shape_str(shape: Sequence[int]) -> str:
    return "(" + ", ".join(str(int(s)) for s in shape) + ")"


def check_event_shape(
    name: str, x: Tensor | Sequence[int], expected: Sequence[int | None], what: str = "input"
) -> None:
    """Raise a ValueError unless the trailing dims of ``x`` (a tensor or shape) match ``expected``.

    ``None`` in ``expected`` matches any size. The message names both shapes.
    """
    shape = tuple(x.shape) if isinstance(x, Tensor) else tuple(x)
    rank = len(expected)
    if len(shape) < rank:
        raise ValueError(
            f"{name} expects {what} with event shape {_pattern(expected)} (at least {rank} dims), "
            f"got shape {_shape_str(shape)}"
        )
    actual = shape[len(shape) - rank :]
    for got, want in zip(actual, expected):
        if want is not None and got != want:
            raise ValueError(
                f"{name} expects {what} with event shape {_pattern(expected)}, "
                f"got event shape {_shape_str(actual)} (full shape {_shape_str(shape)})"
            )


def _pattern(expected: Sequence[int | None]) -> str:
    return "(" + ", ".join("*" if e is None else str(int(e)) for e in expected) + ")"


def check_dtype(name: str, x: Tensor, what: str = "input") -> None:
    """Raise a TypeError unless ``x`` is a floating-point tensor."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} expects {what} as a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{name} expects a floating-point {what} (float32 or float64), got dtype {x.dtype}; "
            "images stored as integers must first be dequantized (see flowkit.data)"
        )


def check_finite(name: str, x: Tensor, what: str = "input") -> None:
    """Raise a ValueError if ``x`` holds NaN or infinity (only while validation is enabled).

    Meta tensors carry no values, so they pass (shape inference runs through).
    """
    if not validation_enabled() or x.device.type == "meta":
        return
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        first = tuple(int(i) for i in (~finite).nonzero()[0])
        raise ValueError(
            f"{name} expects a finite {what}, got {bad} non-finite value(s) "
            f"(first at index {first}: {x[first].item()})"
        )


def check_support(
    name: str, x: Tensor, support: constraints.Constraint, what: str = "input"
) -> None:
    """Raise a ValueError if ``x`` leaves ``support`` (only while validation is enabled).

    The real line accepts everything, infinities included, so it costs nothing. Meta tensors carry
    no values and pass.
    """
    if support is constraints.real or not validation_enabled() or x.device.type == "meta":
        return
    inside = support.check(x)
    if not bool(inside.all()):
        outside = ~inside
        first = tuple(int(i) for i in outside.nonzero()[0])
        # An event constraint marks whole events: show the start of the first one outside.
        bad = x[first].detach().flatten()
        shown = bad[0].item() if bad.numel() == 1 else [round(v, 6) for v in bad[:6].tolist()]
        raise ValueError(
            f"{name} expects {what} values in {support}, got {int(outside.sum())} "
            f"{'' if bad.numel() == 1 else 'event(s) '}outside it (first at index {first}: "
            f"{shown})"
        )


def accepts_context(module: nn.Module) -> bool:
    """Whether ``module.forward`` takes a ``context`` argument (then flowkit passes it on)."""
    try:
        return "context" in inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return False


def every_nth(value: Tensor, dim: int, start: int, step: int) -> Tensor:
    """``value[..., start::step, ...]`` along ``dim``: de-interleaves stacked parameters."""
    index = [slice(None)] * value.dim()
    index[dim] = slice(start, None, step)
    return value[tuple(index)]


def call_network(
    network: nn.Module,
    x: Tensor,
    event_rank: int,
    context: Tensor | None,
    pass_context: bool,
) -> Tensor:
    """Call a conditioner network on ``x`` with its batch dimensions flattened into one.

    Convolutional layers take exactly one batch dimension, so a bijector with any batch shape
    (none, or several) hands its network ``(N, *event)`` and reshapes the result back. The context,
    when passed, shares ``x``'s batch dimensions and is flattened the same way.
    """
    batch_shape = x.shape[: x.dim() - event_rank]
    if len(batch_shape) == 1:
        return network(x, context) if pass_context else network(x)
    flat_x = x.reshape((-1,) + x.shape[x.dim() - event_rank :])
    if pass_context:
        flat_context = None
        if context is not None:
            context = context.expand(batch_shape + context.shape[len(batch_shape) :])
            flat_context = context.reshape((-1,) + context.shape[len(batch_shape) :])
        out = network(flat_x, flat_context)
    else:
        out = network(flat_x)
    return out.reshape(batch_shape + out.shape[1:])


# --- arguments: numbers, shapes, options ---------------------------------------------------------
# A model past this many parameters needs more than 8 GB in float32 before any activation: a config
# that asks for it is a typo (or a corrupt checkpoint), caught before anything is allocated.
MAX_PARAMETERS = 2**31
# Caps on single size fields, far above any published model (Glow: K=48, width 512; RealNVP: 8
# blocks; MAF/NSF: 20 steps, width 1024), so an absurd value fails at once, before a long build.
MAX_STEPS = 4096
MAX_LEVELS = 16
MAX_WIDTH = 65536
MAX_FEATURES = 2**24
MAX_IMAGE_SIZE = 65536
MAX_CLASSES = 2**20
MAX_BINS = 4096
# torch.manual_seed takes any int that fits 64 bits, signed or not.
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1


def _is_int(value: object) -> TypeGuard[numbers.Integral]:
    # bool is an int to Python but never a size or a count here.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _range_str(minimum: float | None, maximum: float | None) -> str:
    if minimum is not None and maximum is not None:
        return f"in [{minimum}, {maximum}]"
    if minimum is not None:
        return f">= {minimum}"
    if maximum is not None:
        return f"<= {maximum}"
    return "of any value"


@overload
def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: Literal[False] = False,
) -> int: ...


@overload
def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool,
) -> int | None: ...


def check_int(
    owner: str,
    name: str,
    value: object,
    minimum: int | None = None,
    maximum: int | None = None,
    *,
    optional: bool = False,
) -> int | None:
    """Return ``value`` as an int, or raise naming ``owner``, the field, the value and the range.

    Raises:
        TypeError: ``value`` is not an integer (bools and floats such as ``1.5`` or ``2.0`` are
            refused; so is None unless ``optional``).
        ValueError: ``value`` lies outside ``[minimum, maximum]``.
    """
    if value is None and optional:
        return None
    allowed = f"an int {_range_str(minimum, maximum)}" + (" or None" if optional else "")
    if not _is_int(value):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    number = int(value)
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        raise ValueError(f"{owner} expects {name} as {allowed}, got {number}")
    return number


@overload
def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: Literal[False] = False,
) -> float: ...


@overload
def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: bool,
) -> float | None: ...


def check_float(
    owner: str,
    name: str,
    value: object,
    minimum: float | None = None,
    maximum: float | None = None,
    *,
    exclusive_minimum: bool = False,
    exclusive_maximum: bool = False,
    optional: bool = False,
) -> float | None:
    """Return ``value`` as a finite float, or raise naming ``owner``, the field, value and range.

    Ints are accepted (as floats); bools, strings, NaN and infinities are not.
    """
    if value is None and optional:
        return None
    low = "" if minimum is None else (f"> {minimum}" if exclusive_minimum else f">= {minimum}")
    high = "" if maximum is None else (f"< {maximum}" if exclusive_maximum else f"<= {maximum}")
    bounds = " and ".join(b for b in (low, high) if b)
    allowed = (
        "a finite number" + (f" {bounds}" if bounds else "") + (" or None" if optional else "")
    )
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if (
        not math.isfinite(number)
        or (minimum is not None and (number <= minimum if exclusive_minimum else number < minimum))
        or (maximum is not None and (number >= maximum if exclusive_maximum else number > maximum))
    ):
        raise ValueError(f"{owner} expects {name} as {allowed}, got {number}")
    return number


def check_bool(owner: str, name: str, value: object) -> bool:
    """Return ``value`` if it is a bool; raise a TypeError naming the field otherwise."""
    if not isinstance(value, bool):
        raise TypeError(
            f"{owner} expects {name} as True or False, got {value!r} ({type(value).__name__})"
        )
    return value


def check_choice(owner: str, name: str, value: object, choices: Sequence[object]) -> None:
    """Raise a ValueError unless ``value`` is one of ``choices``."""
    if not any(
        value is choice or (type(value) is type(choice) and value == choice) for choice in choices
    ):
        raise ValueError(f"{owner} expects {name} in {tuple(choices)}, got {value!r}")


def check_shape(
    owner: str,
    name: str,
    value: object,
    *,
    rank: int | None = None,
    minimum: int = 1,
    maximum: int | None = None,
    labels: str | None = None,
) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ints, each in ``[minimum, maximum]``, of length ``rank``.

    Args:
        owner: Who checks (the class or function name), for the message.
        name: The field, for the message.
        value: A sequence of ints (a tuple, a list, a ``torch.Size``).
        rank: Required length, or None for any.
        minimum: Smallest allowed entry.
        maximum: Largest allowed entry, or None.
        labels: How to name the entries in the message, e.g. ``"(C, H, W)"``.
    """
    what = labels or (f"{rank} ints" if rank is not None else "a sequence of ints")
    allowed = f"{what}, each {_range_str(minimum, maximum)}"
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, torch.Size)):
        raise TypeError(
            f"{owner} expects {name} as {allowed}, got {value!r} ({type(value).__name__})"
        )
    entries = tuple(value)
    if rank is not None and len(entries) != rank:
        raise ValueError(
            f"{owner} expects {name} as {allowed}, got {entries} ({len(entries)} entries)"
        )
    for entry in entries:
        if not _is_int(entry):
            raise TypeError(
                f"{owner} expects {name} as {allowed}, got {entries} (entry {entry!r} is a "
                f"{type(entry).__name__})"
            )
        if int(entry) < minimum or (maximum is not None and int(entry) > maximum):
            raise ValueError(f"{owner} expects {name} as {allowed}, got {entries}")
    return tuple(int(e) for e in entries)


def check_parameter_count(owner: str, count: int, detail: str, limit: int = MAX_PARAMETERS) -> None:
    """Raise a ValueError if a model would have more than ``limit`` parameters.

    ``detail`` names the values that set the count, e.g. ``"K=64, hidden_channels=4096"``.
    """
    if count > limit:
        raise ValueError(
            f"{owner} with {detail} would have about {count:.3g} parameters, more than the limit "
            f"of {limit:.3g} ({limit * 4 / 2**30:.0f} GiB in float32); reduce these values"
        )


def mlp_parameter_count(inputs: int, widths: Sequence[int], outputs: int) -> int:
    """Weights and biases of a fully connected network ``inputs -> *widths -> outputs``."""
    sizes = (inputs, *widths, outputs)
    return sum((a + 1) * b for a, b in zip(sizes[:-1], sizes[1:]))


# --- sampling arguments --------------------------------------------------------------------------
def check_sample_shape(owner: str, n: object) -> torch.Size:
    """``None`` -> ``()``, an int ``n >= 0`` -> ``(n,)``, a sequence of ints ``>= 0`` -> itself.

    Raises:
        TypeError: ``n`` is a float, a bool, or a sequence holding something other than ints.
        ValueError: a count is negative.
    """
    allowed = "an int >= 0, a shape tuple of ints >= 0, or None"
    if n is None:
        return torch.Size()
    if _is_int(n):
        if int(n) < 0:
            raise ValueError(f"{owner} expects a number of samples as {allowed}, got {n}")
        return torch.Size((int(n),))
    if isinstance(n, (Sequence, torch.Size)) and not isinstance(n, (str, bytes)):
        entries = tuple(n)
        if not all(_is_int(e) for e in entries):
            raise TypeError(f"{owner} expects a number of samples as {allowed}, got {n!r}")
        if any(int(e) < 0 for e in entries):
            raise ValueError(f"{owner} expects a number of samples as {allowed}, got {entries}")
        return torch.Size(int(e) for e in entries)
    raise TypeError(
        f"{owner} expects a number of samples as {allowed}, got {n!r} ({type(n).__name__})"
    )


def check_temperature(owner: str, temperature: object) -> float:
    """Return the sampling temperature as a float; it must be a finite number >= 0."""
    value = check_float(owner, "temperature", temperature, 0.0)
    assert value is not None
    return value


# --- tensors against the module they enter -------------------------------------------------------
def module_dtype_device(module: nn.Module) -> tuple[torch.dtype | None, torch.device | None]:
    """The floating dtype of ``module``'s parameters and the device of its parameters or buffers.

    None where the module has none: a flow without parameters computes in any floating dtype, and
    one without tensors on any device.
    """
    dtype = device = None
    for parameter in module.parameters():
        device = parameter.device
        if parameter.is_floating_point():
            dtype = parameter.dtype
            break
    if device is None:
        for buffer in module.buffers():
            device = buffer.device
            break
    return dtype, device


def check_matches_module(
    owner: str,
    x: Tensor,
    dtype: torch.dtype | None,
    device: torch.device | None,
    what: str = "input",
    model: str = "model",
) -> None:
    """Raise unless floating ``x`` has the module's ``dtype`` and ``x`` sits on its ``device``.

    Raises:
        TypeError: A floating-point dtype other than the module's, naming both and the fix.
        ValueError: Another device than the module's, naming both.
    """
    if dtype is not None and x.is_floating_point() and x.dtype != dtype:
        raise TypeError(
            f"{owner} expects {what} of dtype {dtype} (the dtype of its parameters), got "
            f"{x.dtype}; convert the {what} ({_cast(dtype)}) or the {model} "
            f"({model}{_cast(x.dtype)[1:]})"
        )
    if device is not None and x.device != device and not _same_device(x.device, device):
        raise ValueError(
            f"{owner} expects {what} on device {device} (where its parameters are), got {what} on "
            f"{x.device}; move one of them (x.to({str(device)!r}) or "
            f"{model}.to({str(x.device)!r}))"
        )


_CASTS = {
    torch.float32: "x.float()",
    torch.float64: "x.double()",
    torch.float16: "x.half()",
    torch.bfloat16: "x.bfloat16()",
}


def _cast(dtype: torch.dtype) -> str:
    return _CASTS.get(dtype, f"x.to({dtype})")


def _same_device(a: torch.device, b: torch.device) -> bool:
    # cuda and cuda:0 name the same device when the index is implied.
    return a.type == b.type and (a.index is None or b.index is None or a.index == b.index)


_Built = TypeVar("_Built")


def build_seeded(seed: int | None, build: Callable[[torch.Generator | None], _Built]) -> _Built:
    """``build(generator)`` with every initial weight drawn from ``seed``; ``build(None)`` without.

    With a seed, torch's global random state is seeded for the construction and restored after it,
    and ``build`` gets a generator of its own seeded likewise (for draws it makes explicitly), so
    the same seed gives the same model whatever the caller's random state.
    """
    if seed is None:
        return build(None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build(torch.Generator().manual_seed(seed))

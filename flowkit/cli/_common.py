"""What every command shares: its errors, the checks of command-line values, the allocator."""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__: list[str] = []


# Exit statuses: argparse already exits with 2 for its own errors, and shells report a process
# stopped by Ctrl-C (SIGINT, signal 2) as 128 + 2.
EXIT_FAILURE = 1


EXIT_USAGE = 2


EXIT_INTERRUPTED = 130


# A process whose reader went away: shells report death by SIGPIPE (signal 13) as 128 + 13.
EXIT_BROKEN_PIPE = 141


class CommandError(Exception):
    """A failure the command found while running (exit status 1); the message is one line."""

    status = EXIT_FAILURE


class UsageError(CommandError):
    """A command-line value that is not allowed (exit status 2); the message names the value."""

    status = EXIT_USAGE


def one_line(text: object) -> str:
    """``text`` (a message or an exception) as one line: its lines joined by semicolons."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def check_positive(flag: str, value: int | None) -> None:
    if value is not None and value < 1:
        raise UsageError(f"{flag} expects a positive integer, got {value}")


def check_positive_float(flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UsageError(f"{flag} expects a finite number > 0, got {value}")


def check_fraction(flag: str, value: float | None) -> None:
    if value is not None and not 0 < value < 1:
        raise UsageError(f"{flag} expects a fraction between 0 and 1 (exclusive), got {value}")


def check_path(flag: str, value: str | None) -> None:
    if value is not None and not value.strip():
        raise UsageError(f"{flag} expects a path, got an empty string")


def check_temperatures(values: Sequence[float] | None) -> None:
    for value in values or ():
        if not (math.isfinite(value) and value >= 0):
            raise UsageError(f"--temperatures expects finite numbers >= 0, got {value}")


def check_new_outputs(paths: Sequence[Path], overwrite: bool) -> None:
    """A CommandError if a file among ``paths`` exists and ``overwrite`` was not given.

    Checked before any work, so a refused command costs nothing; a device or a pipe (such as
    ``/dev/stdout``) is not a result and is written as it is.
    """
    for path in paths:
        if path.is_dir():
            raise UsageError(f"--output expects a file, got the directory {path}")
    existing = [path for path in paths if path.is_file()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise CommandError(
            f"{existing[0]}{more} already exists; replace it with --overwrite or choose another "
            "--output"
        )


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; it replaces ``path`` in one step on success.

    An interrupted or failed write leaves ``path`` as it was, never half-written. The temporary
    name keeps the suffix, since image writers choose the format from it.
    """
    if path.exists() and not path.is_file():
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def first_overflow(
    values: Any, mean: Sequence[float], std: Sequence[float], dtype: Any
) -> tuple[int, int, float, float] | None:
    """The first value a model in ``dtype`` cannot compute with once standardised, or None.

    A flow's log-density squares the standardised values (the Gaussian base), so they must stay
    below ``sqrt(max / D)`` of the dtype, ``D`` values to a row: about 1e19 in float32, for a
    value 1e19 standard deviations from the training mean. Returns ``(row, column, value,
    standardised value)``.
    """
    import numpy as np
    import torch

    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or not values.size:
        return None
    limit = math.sqrt(torch.finfo(dtype).max / values.shape[1])
    with np.errstate(over="ignore", invalid="ignore"):
        standardised = (values - np.asarray(mean, dtype=np.float64)) / np.asarray(
            std, dtype=np.float64
        )
    bad = ~(np.abs(standardised) < limit)
    if not bad.any():
        return None
    row, column = (int(index) for index in np.argwhere(bad)[0])
    return row, column, float(values[row, column]), float(standardised[row, column])


def overflow_message(standardised: float, dtype: Any) -> str:
    """Why a :func:`first_overflow` value is refused, for the end of an error line."""
    name = str(dtype).removeprefix("torch.")
    return (
        f"{abs(standardised):.3g} standard deviations from the training mean, beyond what the "
        f"model's {name} arithmetic can square"
    )


def check_table_range(table: Any, statistics: dict[str, Any], dtype: Any) -> None:
    """A CommandError naming the first cell of ``table`` a model in ``dtype`` overflows on.

    ``statistics`` is the run's standardisation (``Standardization.to_dict()``); ``table`` a
    :class:`~flowkit.data.tables.Table` in float64.
    """
    parts = [(table.values, table.columns, statistics["mean"], statistics["std"])]
    if table.context is not None and statistics.get("context_mean"):
        parts.append(
            (
                table.context,
                table.context_columns,
                statistics["context_mean"],
                statistics["context_std"],
            )
        )
    for values, columns, mean, std in parts:
        found = first_overflow(values, mean, std, dtype)
        if found is not None:
            row, column, value, standardised = found
            raise CommandError(
                f"{table.source}: column {columns[column]!r}, data row {row + 1}, is {value:g}: "
                f"{overflow_message(standardised, dtype)}; remove the row or rescale the column"
            )


def _available_devices() -> list[str]:
    import torch

    devices = ["cpu"]
    if torch.cuda.is_available():
        devices += [f"cuda:{index}" for index in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return devices


def check_device(value: str | None, *, auto: bool = False) -> None:
    """A UsageError unless ``value`` names a device this machine has."""
    import torch

    if value is None or value == "cpu" or (auto and value == "auto"):
        return
    allowed = (["auto"] if auto else []) + _available_devices()
    try:
        device = torch.device(value)
    except RuntimeError:
        raise UsageError(f"--device expects one of {', '.join(allowed)}, got {value!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(
                f"--device {value}: CUDA is not available on this machine; available: "
                f"{', '.join(allowed)}"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UsageError(
                f"--device {value}: this machine has {torch.cuda.device_count()} CUDA device(s); "
                f"available: {', '.join(allowed)}"
            )
    elif device.type == "mps" and "mps" not in allowed:
        raise UsageError(f"--device {value}: MPS is not available; available: {', '.join(allowed)}")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise UsageError(f"--device expects one of {', '.join(allowed)}, got {value!r}")


def prepare_allocator() -> None:
    from flowkit.performance import tune_allocator

    # Large activations stay on the heap instead of being mapped and unmapped every step.
    tune_allocator()

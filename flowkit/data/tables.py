"""Tabular (vector) data: CSV / npy / npz readers, a seeded split, standardisation, a CSV writer."""

from __future__ import annotations

import csv
import math
import os
import re
import zipfile
import zlib
from array import array
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flowkit.data._io import to_path
from flowkit.data.base import DataError

__all__ = [
    "TABLE_SUFFIXES",
    "Standardization",
    "Table",
    "check_same_columns",
    "file_digest",
    "read_table",
    "split_indices",
    "split_table",
    "write_table",
]

TABLE_SUFFIXES = (".csv", ".npy", ".npz")
# Longer lists of column names are shortened in messages, so that one error stays one line.
_MAX_LISTED = 12
_PLAIN_INTEGER = re.compile(r"\d+")
# Anything np.load raises on a damaged or foreign file.
_NUMPY_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)
_CHOOSE = "--columns, or read_table's columns="


@dataclass(frozen=True, eq=False)
class Table:
    """Rows of float features, optionally with context (conditioning) columns.

    Args:
        values: Data, float64 ``(N, D)``.
        columns: The ``D`` names of the data columns.
        context: Context, float64 ``(N, K)``, or None when there are no context columns.
        context_columns: The ``K`` names of the context columns (empty without context).
        source: Where the rows came from (the path as given); errors name it.

    Example:
        >>> table = Table(np.array([[1.0, 2.0], [3.0, 4.0]]), ("a", "b"))
        >>> len(table), table.columns, table.context
        (2, ('a', 'b'), None)
    """

    values: np.ndarray
    columns: tuple[str, ...]
    context: np.ndarray | None = None
    context_columns: tuple[str, ...] = ()
    source: str = "<table>"

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(self.columns))
        object.__setattr__(self, "context_columns", tuple(self.context_columns))
        values = np.asarray(self.values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.columns):
            raise ValueError(
                f"Table expects values of shape (N, {len(self.columns)}) for columns "
                f"{_names(self.columns)}, got shape {values.shape}"
            )
        object.__setattr__(self, "values", values)
        if self.context is None:
            if self.context_columns:
                raise ValueError(
                    f"Table expects context for context columns {_names(self.context_columns)}, "
                    "got None"
                )
            return
        context = np.asarray(self.context, dtype=np.float64)
        if context.shape != (values.shape[0], len(self.context_columns)) or not context.shape[1]:
            raise ValueError(
                f"Table expects context of shape ({values.shape[0]}, "
                f"{len(self.context_columns)}) with at least one context column, got shape "
                f"{context.shape}"
            )
        object.__setattr__(self, "context", context)

    def __len__(self) -> int:
        return self.values.shape[0]

    def take(self, indices: Sequence[int] | np.ndarray) -> Table:
        """Return the rows at ``indices`` (in that order) as a new Table from the same source.

        Example:
            >>> Table(np.arange(6.0).reshape(3, 2), ("a", "b")).take([2, 0]).values
            array([[4., 5.],
                   [0., 1.]])
        """
        rows = np.asarray(indices, dtype=np.intp)
        context = None if self.context is None else self.context[rows]
        return Table(self.values[rows], self.columns, context, self.context_columns, self.source)


def read_table(
    path: str | os.PathLike[str],
    *,
    columns: Sequence[str] | None = None,
    context_columns: Sequence[str] | None = None,
) -> Table:
    r"""Read a table of float rows from a ``.csv``, ``.npy`` or ``.npz`` file (chosen by suffix).

    - ``.csv``: comma-separated, UTF-8, the first row a header of column names. Blank lines (and
      lines whose cells are all empty) are skipped. Every cell read must be a finite number.
    - ``.npy``: a 2-D numeric array whose columns are named ``x0``, ``x1``, ...; a 1-D array is
      the single column ``x0``.
    - ``.npz``: one 2-D array (columns named as for ``.npy``), or equally long 1-D arrays whose
      keys are the column names (``np.savez(path, x=..., y=...)``).

    Without ``columns``, every column not named in ``context_columns`` is data; a CSV column of
    text (an id, a label) is then an error that names it, rather than being dropped silently.

    Args:
        path: The file.
        columns: Data columns, in the order wanted; other columns are ignored.
        context_columns: Columns returned as ``Table.context`` (the flow's conditioning input).

    Returns:
        A Table with float64 values; ``source`` is ``path`` as given.

    Raises:
        DataError: On a missing, unreadable or malformed file, a non-numeric, empty or non-finite
            cell, or columns that cannot be chosen as asked. The one-line message starts with the
            file, then (for CSV) the 1-based line number (the header is line 1) and the column.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "points.csv")
        ...     with open(path, "w") as file:
        ...         _ = file.write("x,y,t\n0.5,1,0\n-2,3e-1,1\n")
        ...     table = read_table(path, context_columns=["t"])
        >>> table.columns, table.values.tolist(), table.context.tolist()
        (('x', 'y'), [[0.5, 1.0], [-2.0, 0.3]], [[0.0], [1.0]])
    """
    wanted = None if columns is None else _check_names("read_table", "columns", columns)
    context_wanted = (
        ()
        if context_columns is None
        else _check_names("read_table", "context_columns", context_columns)
    )
    file = to_path("read_table", path)
    source = str(os.fspath(path))
    if file.is_dir():
        raise DataError(f"{source}: is a directory, expected a {_suffix_list()} file")
    suffix = file.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise DataError(
            f"{source}: unsupported file type {suffix or '(no suffix)'!r}, expected one of "
            f"{_suffix_list()}"
        )
    both = [name for name in wanted or () if name in context_wanted]
    if both:
        raise DataError(f"{source}: column {both[0]!r} is asked for both as data and as context")
    if suffix == ".csv":
        return _read_csv(file, source, wanted, context_wanted)
    return _read_array_file(file, source, wanted, context_wanted)


def split_table(table: Table, test_fraction: float, seed: int) -> tuple[Table, Table]:
    """Split rows at random into a training and a test part; the same seed gives the same split.

    The test part gets ``round(test_fraction * N)`` rows; both parts keep the file's row order.

    Args:
        table: The rows to split.
        test_fraction: Share of rows held out, in ``(0, 1)``.
        seed: Seed of the permutation (``numpy.random.default_rng``).

    Returns:
        ``(train, test)``, disjoint, together all rows.

    Raises:
        DataError: If either part would be empty.

    Example:
        >>> table = Table(np.arange(10.0)[:, None], ("x",))
        >>> train, test = split_table(table, 0.3, seed=0)
        >>> len(train), len(test)
        (7, 3)
    """
    if not isinstance(table, Table):
        raise TypeError(f"split_table expects a Table, got {type(table).__name__}")
    kept, held = split_indices(
        len(table), test_fraction, seed, owner="split_table", name="test", source=table.source
    )
    return table.take(kept), table.take(held)


def split_indices(
    count: int,
    fraction: float,
    seed: int,
    *,
    stream: int = 0,
    owner: str = "split_indices",
    name: str = "held-out",
    source: str = "<table>",
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded indices of a random split of ``count`` rows: ``(kept, held)``, each sorted.

    ``held`` has ``round(fraction * count)`` rows. ``stream`` picks an independent permutation
    for the same seed (the validation split of a run uses stream 1, its test split stream 0).

    Raises:
        DataError: If either part would be empty.

    Example:
        >>> kept, held = split_indices(10, 0.3, seed=0)
        >>> len(kept), len(held), sorted([*kept, *held]) == list(range(10))
        (7, 3, True)
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise TypeError(f"{owner} expects {name}_fraction as a float, got {fraction!r}")
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"{owner} expects 0 < {name}_fraction < 1, got {fraction}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"{owner} expects seed as an int, got {seed!r}")
    size = round(fraction * count)
    if not 0 < size < count:
        raise DataError(
            f"{source}: {name}_fraction={fraction} of {count} rows gives {count - size} "
            f"training and {size} {name} rows; each part needs at least one"
        )
    generator = np.random.default_rng(seed if stream == 0 else (int(seed), int(stream)))
    order = generator.permutation(count)
    return np.sort(order[size:]), np.sort(order[:size])


def file_digest(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of a file's bytes, as hex: a run records it to recognise its data file."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_same_columns(train: Table, test: Table) -> None:
    """Raise a DataError unless ``test`` has the data and context columns of ``train``, in order.

    Example:
        >>> train = Table(np.zeros((1, 2)), ("x", "y"), source="a.csv")
        >>> try:
        ...     check_same_columns(train, Table(np.zeros((1, 2)), ("x", "z"), source="b.csv"))
        ... except DataError as error:
        ...     print(error)
        b.csv: data columns 'x', 'z' differ from a.csv's 'x', 'y' (missing 'y'; unexpected 'z')
    """
    differences = []
    for kind, expected, got in (
        ("data", train.columns, test.columns),
        ("context", train.context_columns, test.context_columns),
    ):
        if expected != got:
            missing = [name for name in expected if name not in got]
            extra = [name for name in got if name not in expected]
            parts = [f"missing {_names(missing)}"] if missing else []
            parts += [f"unexpected {_names(extra)}"] if extra else []
            differences.append(
                f"{kind} columns {_names(got)} differ from {train.source}'s {_names(expected)} "
                f"({'; '.join(parts) or 'same columns, other order'})"
            )
    if differences:
        raise DataError(f"{test.source}: {'; '.join(differences)}")


@dataclass(frozen=True)
class Standardization:
    r"""Per-column mean and standard deviation, to map data to zero mean and unit variance.

    ``apply`` computes :math:`(x - \mu) / \sigma` column by column and ``invert`` maps back.
    Statistics are float64, with the population standard deviation (``ddof=0``, numpy's default).

    Args:
        columns: Names of the data columns.
        mean: Mean of each data column.
        std: Standard deviation of each data column (positive).
        context_columns: Names of the context columns.
        context_mean: Mean of each context column.
        context_std: Standard deviation of each context column (positive).

    Example:
        >>> table = Table(np.array([[0.0, 10.0], [2.0, 30.0]]), ("a", "b"))
        >>> scaling = Standardization.fit(table)
        >>> scaling.mean, scaling.std
        ((1.0, 20.0), (1.0, 10.0))
        >>> scaling.apply(table.values).tolist()
        [[-1.0, -1.0], [1.0, 1.0]]
    """

    columns: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    context_columns: tuple[str, ...] = ()
    context_mean: tuple[float, ...] = ()
    context_std: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        for names, mean, std in (
            ("columns", "mean", "std"),
            ("context_columns", "context_mean", "context_std"),
        ):
            object.__setattr__(self, names, tuple(str(name) for name in getattr(self, names)))
            object.__setattr__(self, mean, tuple(float(value) for value in getattr(self, mean)))
            object.__setattr__(self, std, tuple(float(value) for value in getattr(self, std)))
            sizes = [len(getattr(self, field)) for field in (names, mean, std)]
            if len(set(sizes)) != 1:
                raise ValueError(
                    f"Standardization expects as many {mean} and {std} values as {names} "
                    f"({sizes[0]}), got {sizes[1]} and {sizes[2]}"
                )
            values = getattr(self, mean) + getattr(self, std)
            if not all(math.isfinite(value) for value in values):
                raise ValueError(f"Standardization expects finite {mean} and {std}, got {values}")
            if not all(value > 0 for value in getattr(self, std)):
                raise ValueError(
                    f"Standardization expects positive {std}, got {getattr(self, std)}"
                )

    @classmethod
    def fit(cls, table: Table) -> Standardization:
        """Measure the mean and standard deviation (``ddof=0``) of every column of ``table``.

        Raises:
            DataError: If the table has fewer than 2 rows, or a column is constant or not finite.
        """
        if len(table) < 2:
            raise DataError(
                f"{table.source}: need at least 2 rows to standardise, got {len(table)}"
            )
        context = np.zeros((len(table), 0)) if table.context is None else table.context
        for kind, names, values in (
            ("column", table.columns, table.values),
            ("context column", table.context_columns, context),
        ):
            for name, column in zip(names, values.T):
                if not np.isfinite(column).all():
                    raise DataError(f"{table.source}: {kind} {name!r} has non-finite values")
                if column.min() == column.max():
                    raise DataError(
                        f"{table.source}: {kind} {name!r} is constant (every value is "
                        f"{float(column[0])}) and cannot be standardised; leave it out "
                        f"({_CHOOSE})"
                    )
        statistics = []
        for kind, names, values in (
            ("column", table.columns, table.values),
            ("context column", table.context_columns, context),
        ):
            # Summing offsets from the first row keeps the digits of a column such as 1e9 plus a
            # small variation, which a plain sum of the values rounds away.
            offset = values[0] if len(values) else np.zeros(values.shape[1])
            mean = offset + (values - offset).mean(axis=0)
            std = np.sqrt(((values - mean) ** 2).mean(axis=0))
            for name, value in zip(names, std):
                # Differences too small to square in float64 give a zero standard deviation.
                if not (math.isfinite(value) and value > 0):
                    raise DataError(
                        f"{table.source}: {kind} {name!r} is constant once standardised in "
                        f"float64 (its standard deviation is {value}); leave it out ({_CHOOSE})"
                    )
            statistics.append((tuple(mean), tuple(std)))
        (mean, std), (context_mean, context_std) = statistics
        return cls(table.columns, mean, std, table.context_columns, context_mean, context_std)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Standardise data ``(..., D)``: subtract the mean and divide by the std per column."""
        values, mean, std = self._prepare("apply", values, self.mean, self.std)
        return (values - mean) / std

    def invert(self, values: np.ndarray) -> np.ndarray:
        """Undo ``apply`` on data ``(..., D)``: multiply by the std and add the mean per column."""
        values, mean, std = self._prepare("invert", values, self.mean, self.std)
        return values * std + mean

    def apply_context(self, context: np.ndarray) -> np.ndarray:
        """Standardise context ``(..., K)`` with the context columns' statistics."""
        context, mean, std = self._prepare(
            "apply_context", context, self.context_mean, self.context_std
        )
        return (context - mean) / std

    def to_dict(self) -> dict[str, list[str] | list[float]]:
        """Return the statistics as plain lists (what ``torch.load(weights_only=True)`` accepts)."""
        return {
            "columns": list(self.columns),
            "mean": list(self.mean),
            "std": list(self.std),
            "context_columns": list(self.context_columns),
            "context_mean": list(self.context_mean),
            "context_std": list(self.context_std),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> Standardization:
        """Rebuild from ``to_dict``'s output.

        Example:
            >>> scaling = Standardization(("a",), (1.5,), (2.0,))
            >>> Standardization.from_dict(scaling.to_dict()) == scaling
            True
        """
        fields = ("columns", "mean", "std", "context_columns", "context_mean", "context_std")
        if not isinstance(state, Mapping) or any(field not in state for field in fields):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"Standardization.from_dict expects keys {list(fields)}, got {got}")
        return cls(**{field: tuple(state[field]) for field in fields})

    def _prepare(
        self, method: str, values: np.ndarray, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        values = np.asarray(values)
        if values.dtype.kind not in "fiu":
            raise TypeError(f"Standardization.{method} expects numbers, got dtype {values.dtype}")
        if values.dtype.kind != "f":
            values = values.astype(np.float64)
        if values.ndim < 1 or values.shape[-1] != len(mean):
            raise ValueError(
                f"Standardization.{method} expects {len(mean)} columns on the last axis, got shape "
                f"{values.shape}"
            )
        return values, np.asarray(mean, values.dtype), np.asarray(std, values.dtype)


def write_table(path: str | os.PathLike[str], values: np.ndarray, columns: Sequence[str]) -> None:
    """Write rows to a CSV file with a header row, replacing the file if it exists.

    Each number is written with the fewest digits that read back to the same value in its own
    precision (float32 values round-trip as float32). Non-finite values are written as ``nan`` /
    ``inf``, which ``read_table`` rejects.

    Args:
        path: The ``.csv`` file to write.
        values: Integers or floats of shape ``(N, D)``.
        columns: The ``D`` column names.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as folder:
        ...     path = os.path.join(folder, "samples.csv")
        ...     write_table(path, np.array([[0.1, 2.0]], dtype=np.float32), ["x", "y"])
        ...     print(open(path).read(), end="")
        x,y
        0.1,2.0
    """
    names = _check_names("write_table", "columns", columns)
    array_ = np.asarray(values)
    if array_.dtype.kind not in "fiu" or array_.ndim != 2 or array_.shape[1] != len(names):
        raise ValueError(
            f"write_table expects numeric values of shape (N, {len(names)}) for columns "
            f"{_names(names)}, got dtype {array_.dtype} and shape {array_.shape}"
        )
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(names)
        if array_.dtype.itemsize < 8 and array_.dtype.kind == "f":
            # str() of a numpy scalar is the shortest text that round-trips in its own precision.
            writer.writerows([str(value) for value in row] for row in array_)
        else:
            # Python ints and floats (float64) are written by repr, which round-trips exactly.
            writer.writerows(array_.tolist())


def _check_names(function: str, argument: str, names: Sequence[str]) -> tuple[str, ...]:
    expects = f"{function} expects {argument} as"
    if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
        raise TypeError(f"{expects} a sequence of column names, got {type(names).__name__}")
    if not all(isinstance(name, str) and name for name in names):
        raise TypeError(f"{expects} non-empty strings, got {list(names)!r}")
    if not names or len(set(names)) != len(names):
        raise ValueError(f"{expects} distinct column names, got {list(names)!r}")
    return tuple(names)


def _names(names: Sequence[str]) -> str:
    shown = [repr(name) for name in names]
    if len(shown) > _MAX_LISTED:
        shown = [*shown[: _MAX_LISTED - 2], "...", shown[-1]]
        return ", ".join(shown) + f" ({len(names)} columns)"
    return ", ".join(shown) or "(none)"


def _suffix_list() -> str:
    return ", ".join(TABLE_SUFFIXES)


def _select(
    source: str,
    available: Sequence[str],
    wanted: tuple[str, ...] | None,
    context_wanted: tuple[str, ...],
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Resolve the data and context column names, or raise naming the available ones."""
    for kind, names in (("column", wanted or ()), ("context column", context_wanted)):
        for name in names:
            if name not in available:
                raise DataError(
                    f"{source}: {kind} {name!r} not found; available columns: {_names(available)}"
                )
    if wanted is None:
        wanted = tuple(name for name in available if name not in context_wanted)
        if not wanted:
            raise DataError(
                f"{source}: no data columns left after taking context columns "
                f"{_names(context_wanted)}"
            )
    return wanted, context_wanted


def _build(
    source: str, columns: dict[str, np.ndarray], wanted: tuple[str, ...], context: tuple[str, ...]
) -> Table:
    values = np.column_stack([columns[name] for name in wanted])
    context_values = np.column_stack([columns[name] for name in context]) if context else None
    return Table(values, wanted, context_values, context, source)


def _read_csv(
    file: Path, source: str, wanted: tuple[str, ...] | None, context_wanted: tuple[str, ...]
) -> Table:
    default = wanted is None
    reader = None
    try:
        with open(file, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle, strict=True)
            header = next((row for row in reader if _filled(row)), None)
            if header is None:
                raise DataError(f"{source}: empty file, expected a header row of column names")
            names = _check_header(source, reader.line_num, header, default)
            wanted, context_wanted = _select(source, names, wanted, context_wanted)
            cells = _CsvColumns(source, names, wanted + context_wanted)
            for row in reader:
                if _filled(row):
                    cells.add(reader.line_num, row)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{source}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except csv.Error as error:
        line = reader.line_num if reader is not None else 1
        raise DataError(f"{source}, line {line}: malformed CSV ({error})") from None
    except OSError as error:
        raise DataError(f"{source}: cannot read file ({error.strerror or error})") from None
    return _build(source, cells.finish(default, wanted, context_wanted), wanted, context_wanted)


def _filled(row: list[str]) -> bool:
    return any(cell.strip() for cell in row)


def _check_header(source: str, line: int, header: list[str], default: bool) -> list[str]:
    names = [cell.strip() for cell in header]
    where = f"{source}, line {line}"
    if len(names) == 1 and any(mark in names[0] for mark in ";\t"):
        raise DataError(f"{where}: one column named {names[0]!r}; expected comma-separated values")
    seen = set()
    for name in names:
        if name and name in seen:
            raise DataError(f"{where}: duplicate column name {name!r} in the header")
        seen.add(name)
    # A header of integers ("0,1,2", as pandas writes a frame built from an array) is a header;
    # any other row of numbers is data, so the header row is missing.
    if all(_is_number(name) for name in names) and not all(
        _PLAIN_INTEGER.fullmatch(name) for name in names
    ):
        raise DataError(
            f"{where}: the first row holds numbers ({', '.join(names[:3])}"
            f"{', ...' if len(names) > 3 else ''}), expected a header of column names"
        )
    if default and "" in names:
        raise DataError(
            f"{where}: column {names.index('') + 1} has no name in the header; name it, or "
            f"choose the data columns ({_CHOOSE})"
        )
    return names


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


class _CsvColumns:
    """Collects the cells of the used CSV columns as floats, remembering the first bad cells."""

    def __init__(self, source: str, names: list[str], used: tuple[str, ...]) -> None:
        self.source = source
        self.width = len(names)
        self.used = [(names.index(name), name) for name in used]
        self.values = {name: array("d") for name in used}
        self.numeric = dict.fromkeys(used, False)
        # The first text cell and the first bad (text, empty or non-finite) cell of each column,
        # as (line, message): the errors report the earliest one.
        self.text: dict[str, tuple[int, str]] = {}
        self.bad: dict[str, tuple[int, str]] = {}
        self.rows = 0

    def add(self, line: int, row: list[str]) -> None:
        if len(row) != self.width:
            raise DataError(
                f"{self.source}, line {line}: expected {self.width} cells (one per column of the "
                f"header), got {len(row)}"
            )
        self.rows += 1
        for index, name in self.used:
            cell = row[index].strip()
            try:
                value = float(cell)
            except ValueError:
                value = math.nan
                problem = f"not a number: {cell!r}" if cell else "empty cell (missing value)"
                if cell:
                    self.text.setdefault(name, (line, problem))
                self.bad.setdefault(name, (line, problem))
            else:
                self.numeric[name] = True
                if not math.isfinite(value):
                    self.bad.setdefault(name, (line, f"non-finite value {cell!r}"))
            self.values[name].append(value)

    def finish(
        self, default: bool, wanted: tuple[str, ...], context: tuple[str, ...]
    ) -> dict[str, np.ndarray]:
        if not self.rows:
            raise DataError(f"{self.source}: the header is the only row, expected data rows")
        if default:
            text = [name for name in wanted if name in self.text and not self.numeric[name]]
            if text:
                line, problem = self.text[text[0]]
                raise DataError(
                    f"{self.source}: non-numeric column(s) {_names(text)} (line {line}, column "
                    f"{text[0]!r}: {problem}); choose the data columns ({_CHOOSE})"
                )
        problems = [
            (self.bad[name][0], order, name)
            for order, name in enumerate(wanted + context)
            if name in self.bad
        ]
        if problems:
            line, _, name = min(problems)
            raise DataError(f"{self.source}, line {line}, column {name!r}: {self.bad[name][1]}")
        return {
            name: np.frombuffer(values, dtype=np.float64) for name, values in self.values.items()
        }


def _read_array_file(
    file: Path, source: str, wanted: tuple[str, ...] | None, context_wanted: tuple[str, ...]
) -> Table:
    try:
        loaded = np.load(file, allow_pickle=False)
    except _NUMPY_ERRORS as error:
        raise DataError(
            f"{source}: not a readable {file.suffix.lower()} file ({type(error).__name__}: {error})"
        ) from None
    if isinstance(loaded, np.ndarray):
        columns = _matrix_columns(source, "the array", loaded)
    else:
        with loaded:
            columns = _npz_columns(
                source, {key: _member(source, loaded, key) for key in loaded.files}
            )
    wanted, context_wanted = _select(source, list(columns), wanted, context_wanted)
    problems = []
    for order, name in enumerate(wanted + context_wanted):
        rows = np.flatnonzero(~np.isfinite(columns[name]))
        if rows.size:
            problems.append((int(rows[0]), order, name))
    if problems:
        row, _, name = min(problems)
        raise DataError(
            f"{source}, row {row} (0-based), column {name!r}: non-finite value {columns[name][row]}"
        )
    return _build(source, columns, wanted, context_wanted)


def _member(source: str, archive: np.lib.npyio.NpzFile, key: str) -> np.ndarray:
    try:
        return archive[key]
    except _NUMPY_ERRORS as error:
        raise DataError(
            f"{source}: cannot read npz member {key!r} ({type(error).__name__}: {error})"
        ) from None


def _check_numeric(source: str, what: str, data: np.ndarray) -> None:
    if data.dtype.kind not in "iuf":
        raise DataError(f"{source}: expected integers or floats, got dtype {data.dtype} in {what}")


def _matrix_columns(source: str, what: str, data: np.ndarray) -> dict[str, np.ndarray]:
    """Columns ``x0``, ``x1``, ... of a 2-D array; a 1-D array is the one column ``x0``."""
    _check_numeric(source, what, data)
    if data.ndim not in (1, 2):
        raise DataError(f"{source}: expected {what} to be 1-D or 2-D, got shape {data.shape}")
    if not data.size:
        raise DataError(f"{source}: no data, {what} has shape {data.shape}")
    data = data.reshape(len(data), -1)
    return {f"x{index}": data[:, index].astype(np.float64) for index in range(data.shape[1])}


def _npz_columns(source: str, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Columns of an npz: its one 2-D array, or its 1-D arrays named by their keys."""
    if not arrays:
        raise DataError(f"{source}: empty npz archive, expected arrays of numbers")
    if len(arrays) == 1 and next(iter(arrays.values())).ndim == 2:
        key, data = next(iter(arrays.items()))
        return _matrix_columns(source, f"member {key!r}", data)
    for key, data in arrays.items():
        _check_numeric(source, f"member {key!r}", data)
    if len({data.shape for data in arrays.values()}) != 1 or next(iter(arrays.values())).ndim != 1:
        shapes = ", ".join(f"{key!r} {data.shape}" for key, data in arrays.items())
        raise DataError(
            f"{source}: expected one 2-D array or equally long 1-D arrays (one per column), "
            f"got {shapes}"
        )
    if not len(next(iter(arrays.values()))):
        raise DataError(f"{source}: no data, the arrays are empty")
    return {key: data.astype(np.float64) for key, data in arrays.items()}

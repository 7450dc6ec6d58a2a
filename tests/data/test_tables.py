import io
import zipfile

import numpy as np
import pytest
import torch

from flowkit.data import (
    DataError,
    Standardization,
    Table,
    check_same_columns,
    read_table,
    split_table,
    write_table,
)
from flowkit.data.tables import file_digest, split_indices


def write_text(folder, name, text, encoding="utf-8"):
    path = folder / name
    path.write_bytes(text.encode(encoding))
    return path


def error_of(path, **kwargs):
    """Read ``path``, expecting a one-line DataError that starts with the path; return it."""
    with pytest.raises(DataError) as caught:
        read_table(path, **kwargs)
    message = str(caught.value)
    assert message.startswith(str(path)), message
    assert "\n" not in message
    return message


def random_rows(rows, cols, seed):
    return np.random.default_rng(seed).normal(size=(rows, cols)) * 10.0 ** np.arange(cols)


# Formats


def test_csv_reads_every_column_by_default(tmp_path):
    path = write_text(tmp_path, "t.csv", "a,b,c\n1,2.5,-3e2\n4,5,6\n")
    table = read_table(path)
    assert table.columns == ("a", "b", "c")
    assert table.values.dtype == np.float64
    np.testing.assert_array_equal(table.values, [[1, 2.5, -300], [4, 5, 6]])
    assert table.context is None and table.context_columns == ()
    assert len(table) == 2
    assert table.source == str(path)


def test_csv_tolerates_bom_crlf_blank_lines_spaces_and_quotes(tmp_path):
    text = '\ufeff"x, m", y\r\n\r\n 1 , 2\r\n,\r\n"3",4\r\n\r\n'
    table = read_table(write_text(tmp_path, "t.csv", text))
    assert table.columns == ("x, m", "y")
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4]])


def test_source_is_the_path_as_given(tmp_path, monkeypatch):
    write_text(tmp_path, "t.csv", "a\n1\n")
    monkeypatch.chdir(tmp_path)
    assert read_table("t.csv").source == "t.csv"


def test_npy_columns_are_named_by_position(tmp_path):
    data = random_rows(5, 3, seed=0)
    np.save(tmp_path / "m.npy", data)
    table = read_table(tmp_path / "m.npy")
    assert table.columns == ("x0", "x1", "x2")
    np.testing.assert_array_equal(table.values, data)


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_npy_vector_is_one_column_of_float64(tmp_path, dtype):
    data = np.arange(4, dtype=dtype)
    np.save(tmp_path / "v.npy", data)
    table = read_table(tmp_path / "v.npy")
    assert table.columns == ("x0",) and table.values.dtype == np.float64
    np.testing.assert_array_equal(table.values[:, 0], data.astype(np.float64))


def test_npz_with_one_matrix(tmp_path):
    data = random_rows(4, 2, seed=1)
    np.savez(tmp_path / "m.npz", anything=data)
    table = read_table(tmp_path / "m.npz")
    assert table.columns == ("x0", "x1")
    np.testing.assert_array_equal(table.values, data)


def test_npz_with_named_vectors(tmp_path):
    x, y, t = random_rows(6, 3, seed=2).T
    np.savez_compressed(tmp_path / "v.npz", x=x, y=y, t=t.astype(np.float32))
    table = read_table(tmp_path / "v.npz", context_columns=["t"])
    assert table.columns == ("x", "y") and table.context_columns == ("t",)
    np.testing.assert_array_equal(table.values, np.stack([x, y], axis=1))
    np.testing.assert_array_equal(table.context[:, 0], t.astype(np.float32))
    single = tmp_path / "one.npz"
    np.savez(single, speed=x)
    assert read_table(single).columns == ("speed",)


# Column selection


@pytest.mark.parametrize("suffix", [".csv", ".npz"])
def test_columns_choose_and_order(tmp_path, suffix):
    data = random_rows(5, 4, seed=3)
    names = ["a", "b", "c", "d"]
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        write_table(path, data, names)
    else:
        np.savez(path, **dict(zip(names, data.T)))
    table = read_table(path, columns=["d", "a"], context_columns=["c"])
    assert table.columns == ("d", "a") and table.context_columns == ("c",)
    np.testing.assert_array_equal(table.values, data[:, [3, 0]])
    np.testing.assert_array_equal(table.context, data[:, [2]])


def test_default_columns_exclude_context(tmp_path):
    data = random_rows(3, 3, seed=4)
    np.save(tmp_path / "m.npy", data)
    table = read_table(tmp_path / "m.npy", context_columns=["x2", "x0"])
    assert table.columns == ("x1",) and table.context_columns == ("x2", "x0")
    np.testing.assert_array_equal(table.values, data[:, [1]])
    np.testing.assert_array_equal(table.context, data[:, [2, 0]])


def test_explicit_columns_skip_text_and_unnamed_columns(tmp_path):
    path = write_text(tmp_path, "t.csv", ",id,x,label\n0,a7,1.5,cat\n1,b2,2.5,dog\n")
    table = read_table(path, columns=["x"])
    np.testing.assert_array_equal(table.values, [[1.5], [2.5]])
    message = error_of(path, columns=["x"], context_columns=["label"])
    assert message == f"{path}, line 2, column 'label': not a number: 'cat'"


def test_integer_header_is_a_header(tmp_path):
    table = read_table(write_text(tmp_path, "t.csv", "0,1\n0.5,1.5\n"))
    assert table.columns == ("0", "1")
    np.testing.assert_array_equal(table.values, [[0.5, 1.5]])


# CSV errors


@pytest.mark.parametrize(
    ("cell", "expected"),
    [
        ("abc", "not a number: 'abc'"),
        ("1,2", "not a number: '1,2'"),
        ("", "empty cell (missing value)"),
        ("nan", "non-finite value 'nan'"),
        ("-Infinity", "non-finite value '-Infinity'"),
    ],
)
def test_bad_cell_names_line_and_column(tmp_path, cell, expected):
    quoted = f'"{cell}"' if "," in cell else cell
    path = write_text(tmp_path, "t.csv", f"x,y\n1,2\n3,4\n5,{quoted}\n7,oops\n")
    message = error_of(path)
    assert message == f"{path}, line 4, column 'y': {expected}"


def test_earliest_bad_cell_is_reported(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y,z\n1,2,3\n4,,x\n,5,6\n")
    assert (
        error_of(path, columns=["z", "x", "y"]) == f"{path}, line 3, column 'z': not a number: 'x'"
    )
    assert (
        error_of(path, columns=["x", "y"])
        == f"{path}, line 3, column 'y': empty cell (missing value)"
    )


def test_context_cells_are_checked(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,c\n1,2\n3,inf\n")
    assert (
        error_of(path, context_columns=["c"])
        == f"{path}, line 3, column 'c': non-finite value 'inf'"
    )


def test_text_columns_by_default_are_named(tmp_path):
    path = write_text(tmp_path, "t.csv", "id,x,label,y\nr1,1,cat,2\nr2,3,,4\n")
    message = error_of(path)
    assert "non-numeric column(s) 'id', 'label'" in message
    assert "line 2, column 'id': not a number: 'r1'" in message
    assert "--columns" in message


def test_text_in_a_numeric_column_is_a_cell_error(tmp_path):
    path = write_text(tmp_path, "t.csv", "x\n1\n2\nn/a\n")
    assert error_of(path) == f"{path}, line 4, column 'x': not a number: 'n/a'"


@pytest.mark.parametrize(("row", "count"), [("1,2,3", 3), ("1", 1)])
def test_ragged_row(tmp_path, row, count):
    path = write_text(tmp_path, "t.csv", f"x,y\n1,2\n\n{row}\n")
    message = error_of(path)
    assert (
        message == f"{path}, line 4: expected 2 cells (one per column of the header), got {count}"
    )


@pytest.mark.parametrize("text", ["", "\n\n", " , \n"])
def test_empty_file(tmp_path, text):
    path = write_text(tmp_path, "t.csv", text)
    assert "empty file, expected a header row" in error_of(path)


def test_header_only(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y\n\n")
    assert "the header is the only row" in error_of(path)


def test_duplicate_column_names(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y, x\n1,2,3\n")
    assert error_of(path) == f"{path}, line 1: duplicate column name 'x' in the header"


def test_unnamed_column_by_default(tmp_path):
    path = write_text(tmp_path, "t.csv", ",x\n0,1\n")
    message = error_of(path)
    assert message.startswith(f"{path}, line 1: column 1 has no name in the header")
    assert "--columns" in message


def test_numbers_in_the_header_row(tmp_path):
    path = write_text(tmp_path, "t.csv", "0.5,1.5\n2,3\n")
    assert "line 1: the first row holds numbers (0.5, 1.5)" in error_of(path)


def test_semicolon_separated(tmp_path):
    path = write_text(tmp_path, "t.csv", "x;y\n1;2\n")
    assert "line 1: one column named 'x;y'; expected comma-separated values" in error_of(path)


def test_not_utf8(tmp_path):
    path = write_text(tmp_path, "t.csv", "x\n\xe9\n", encoding="latin-1")
    assert "not UTF-8 text" in error_of(path)


def test_malformed_csv_names_line(tmp_path):
    path = write_text(tmp_path, "t.csv", 'x,y\n1,2\n3,"4\n')
    assert error_of(path).startswith(f"{path}, line 3: malformed CSV")


# Column requests


def test_unknown_column_lists_available(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y\n1,2\n")
    message = error_of(path, columns=["x", "z"])
    assert message == f"{path}: column 'z' not found; available columns: 'x', 'y'"


def test_long_column_lists_are_shortened(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((2, 40)))
    message = error_of(tmp_path / "m.npy", columns=["y"])
    assert "'x0', 'x1'" in message and "'x39' (40 columns)" in message and "'x20'" not in message


def test_missing_context_column(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((2, 2)))
    message = error_of(tmp_path / "m.npy", context_columns=["t"])
    assert message.endswith("context column 't' not found; available columns: 'x0', 'x1'")


def test_column_both_data_and_context(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y\n1,2\n")
    message = error_of(path, columns=["x", "y"], context_columns=["y"])
    assert message == f"{path}: column 'y' is asked for both as data and as context"


def test_no_data_column_left(tmp_path):
    path = write_text(tmp_path, "t.csv", "x,y\n1,2\n")
    assert "no data columns left" in error_of(path, context_columns=["y", "x"])


@pytest.mark.parametrize(
    ("columns", "error"),
    [
        ("x", TypeError),
        (["x", 1], TypeError),
        (["x", ""], TypeError),
        ([], ValueError),
        (["x", "x"], ValueError),
    ],
)
def test_bad_column_arguments(tmp_path, columns, error):
    path = write_text(tmp_path, "t.csv", "x,y\n1,2\n")
    with pytest.raises(error, match="read_table expects columns as"):
        read_table(path, columns=columns)
    with pytest.raises(error, match="read_table expects context_columns as"):
        read_table(path, context_columns=columns)


# File errors


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match="nope.csv: no such file or directory"):
        read_table(tmp_path / "nope.csv")


def test_directory(tmp_path):
    (tmp_path / "d.csv").mkdir()
    assert "is a directory, expected a .csv, .npy, .npz file" in error_of(tmp_path / "d.csv")


@pytest.mark.parametrize("name", ["t.txt", "t"])
def test_unknown_suffix(tmp_path, name):
    path = write_text(tmp_path, name, "x\n1\n")
    assert "unsupported file type" in error_of(path)
    assert "expected one of .csv, .npy, .npz" in error_of(path)


def test_suffix_is_case_insensitive(tmp_path):
    assert read_table(write_text(tmp_path, "T.CSV", "x\n1\n")).columns == ("x",)


@pytest.mark.parametrize("shape", [(), (2, 3, 4)])
def test_npy_of_wrong_rank(tmp_path, shape):
    np.save(tmp_path / "m.npy", np.zeros(shape))
    assert f"expected the array to be 1-D or 2-D, got shape {shape}" in error_of(tmp_path / "m.npy")


@pytest.mark.parametrize("data", [np.array(["a", "b"]), np.array([True]), np.array([1j])])
def test_npy_of_non_numeric_dtype(tmp_path, data):
    np.save(tmp_path / "m.npy", data)
    assert f"got dtype {data.dtype} in the array" in error_of(tmp_path / "m.npy")


def test_npy_of_objects_is_refused(tmp_path):
    np.save(tmp_path / "m.npy", np.array([1.0, "a"], dtype=object), allow_pickle=True)
    assert "not a readable .npy file" in error_of(tmp_path / "m.npy")


@pytest.mark.parametrize("shape", [(0, 3), (3, 0), (0,)])
def test_npy_without_data(tmp_path, shape):
    np.save(tmp_path / "m.npy", np.zeros(shape))
    assert "no data" in error_of(tmp_path / "m.npy")


def test_npy_non_finite_names_row_and_column(tmp_path):
    data = np.zeros((4, 3))
    data[3, 0] = np.inf
    data[2, 1] = np.nan
    np.save(tmp_path / "m.npy", data)
    message = error_of(tmp_path / "m.npy")
    assert message == f"{tmp_path / 'm.npy'}, row 2 (0-based), column 'x1': non-finite value nan"
    # Columns that are not read are not checked.
    assert read_table(tmp_path / "m.npy", columns=["x2"]).values.shape == (4, 1)


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_truncated_or_garbage_array_files(tmp_path, suffix):
    path = tmp_path / f"m{suffix}"
    saver = np.save if suffix == ".npy" else np.savez
    saver(path, np.arange(100.0).reshape(20, 5))
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    assert f"not a readable {suffix} file" in error_of(path)
    path.write_bytes(b"x,y\n1,2\n")
    assert f"not a readable {suffix} file" in error_of(path)


def test_corrupt_npz_member(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        member = io.BytesIO()
        np.save(member, np.arange(64.0))
        archive.writestr("x.npy", member.getvalue())
    data = bytearray(buffer.getvalue())
    data[data.index(b"\x93NUMPY") + 200] ^= 0xFF  # a payload byte: the CRC no longer matches
    path = tmp_path / "m.npz"
    path.write_bytes(bytes(data))
    assert "cannot read npz member 'x'" in error_of(path)


@pytest.mark.parametrize(
    ("arrays", "expected"),
    [
        ({"x": np.zeros(3), "y": np.zeros(4)}, "'x' (3,), 'y' (4,)"),
        ({"x": np.zeros(3), "m": np.zeros((3, 2))}, "'x' (3,), 'm' (3, 2)"),
        ({"m": np.zeros((3, 2, 2))}, "'m' (3, 2, 2)"),
    ],
)
def test_npz_of_wrong_layout(tmp_path, arrays, expected):
    np.savez(tmp_path / "m.npz", **arrays)
    message = error_of(tmp_path / "m.npz")
    assert "expected one 2-D array or equally long 1-D arrays (one per column)" in message
    assert message.endswith(f"got {expected}")


def test_npz_non_numeric_member(tmp_path):
    np.savez(tmp_path / "m.npz", x=np.zeros(2), name=np.array(["a", "b"]))
    assert "got dtype <U1 in member 'name'" in error_of(tmp_path / "m.npz")


def test_npz_empty(tmp_path):
    np.savez(tmp_path / "m.npz")
    assert "empty npz archive" in error_of(tmp_path / "m.npz")
    np.savez(tmp_path / "n.npz", x=np.zeros(0), y=np.zeros(0))
    assert "no data" in error_of(tmp_path / "n.npz")


# Splitting


def context_table(rows, seed=0):
    data = random_rows(rows, 3, seed)
    return Table(data[:, :2], ("a", "b"), data[:, 2:], ("c",), source="rows.csv")


@pytest.mark.parametrize(
    ("rows", "fraction", "test_size"), [(10, 0.2, 2), (7, 0.5, 4), (3, 0.1, 0)]
)
def test_split_sizes_disjoint_and_complete(rows, fraction, test_size):
    if test_size == 0:
        with pytest.raises(DataError, match=r"rows\.csv: test_fraction=0\.1 of 3 rows gives 3"):
            split_table(context_table(rows), fraction, seed=0)
        return
    table = context_table(rows)
    train, test = split_table(table, fraction, seed=0)
    assert (len(train), len(test)) == (rows - test_size, test_size)
    together = np.concatenate([train.values, test.values])
    # Every row lands in exactly one part, and context stays with its row.
    assert sorted(map(tuple, together)) == sorted(map(tuple, table.values))
    for part in (train, test):
        index = [int(np.flatnonzero((table.values == row).all(axis=1))[0]) for row in part.values]
        assert index == sorted(index)
        np.testing.assert_array_equal(part.context, table.context[index])
        assert part.columns == table.columns and part.source == table.source


def test_split_is_seeded():
    table = context_table(50)
    first, second = split_table(table, 0.3, seed=7), split_table(table, 0.3, seed=7)
    np.testing.assert_array_equal(first[1].values, second[1].values)
    other = split_table(table, 0.3, seed=8)
    assert not np.array_equal(first[1].values, other[1].values)


def test_split_leaving_no_training_row():
    with pytest.raises(DataError, match="gives 0 training and 2 test rows"):
        split_table(context_table(2), 0.9, seed=0)


@pytest.mark.parametrize(
    ("fraction", "error"), [(0.0, ValueError), (1.0, ValueError), ("0.2", TypeError)]
)
def test_split_checks_fraction(fraction, error):
    with pytest.raises(error, match="test_fraction"):
        split_table(context_table(10), fraction, seed=0)


# Column matching


def test_same_columns_pass():
    check_same_columns(context_table(3), context_table(5, seed=1))


@pytest.mark.parametrize(
    ("columns", "context_columns", "expected"),
    [
        (
            ("b", "a"),
            ("c",),
            "data columns 'b', 'a' differ from rows.csv's 'a', 'b' (same columns, other order)",
        ),
        (
            ("a", "z"),
            ("c",),
            "data columns 'a', 'z' differ from rows.csv's 'a', 'b' (missing 'b'; unexpected 'z')",
        ),
        (
            ("a", "b"),
            ("d",),
            "context columns 'd' differ from rows.csv's 'c' (missing 'c'; unexpected 'd')",
        ),
    ],
)
def test_different_columns(columns, context_columns, expected):
    other = Table(np.zeros((1, 2)), columns, np.zeros((1, 1)), context_columns, source="other.csv")
    with pytest.raises(DataError) as caught:
        check_same_columns(context_table(3), other)
    assert str(caught.value) == f"other.csv: {expected}"


def test_missing_context_is_a_difference():
    other = Table(np.zeros((1, 2)), ("a", "b"), source="other.csv")
    with pytest.raises(
        DataError, match=r"other\.csv: context columns \(none\) differ .* \(missing 'c'\)$"
    ):
        check_same_columns(context_table(3), other)


# Standardisation


def test_standardization_matches_numpy_population_std():
    table = context_table(20)
    scaling = Standardization.fit(table)
    np.testing.assert_allclose(scaling.mean, table.values.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(scaling.std, table.values.std(axis=0, ddof=0), rtol=1e-14)
    np.testing.assert_allclose(scaling.context_mean, table.context.mean(axis=0), rtol=1e-14)
    np.testing.assert_allclose(scaling.context_std, table.context.std(axis=0, ddof=0), rtol=1e-14)
    assert scaling.columns == ("a", "b") and scaling.context_columns == ("c",)
    standard = scaling.apply(table.values)
    np.testing.assert_allclose(standard.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(standard.std(axis=0), 1.0, rtol=1e-12)
    np.testing.assert_allclose(scaling.invert(standard), table.values, rtol=1e-12)
    context = scaling.apply_context(table.context)
    np.testing.assert_allclose(context.std(axis=0), 1.0, rtol=1e-12)


def test_standardization_keeps_float32():
    scaling = Standardization.fit(context_table(5))
    out = scaling.apply(np.ones((3, 2), dtype=np.float32))
    assert out.dtype == np.float32 and scaling.invert(out).dtype == np.float32


def test_standardization_without_context():
    scaling = Standardization.fit(Table(np.array([[1.0], [3.0]]), ("x",)))
    assert (scaling.mean, scaling.std, scaling.context_mean) == ((2.0,), (1.0,), ())


@pytest.mark.parametrize("kind", ["column", "context column"])
def test_constant_column_is_named(kind):
    values = np.array([[1.0, 0.1], [2.0, 0.1], [3.0, 0.1]])
    if kind == "column":
        table = Table(values, ("x", "flat"), source="rows.csv")
    else:
        table = Table(values[:, :1], ("x",), values[:, 1:], ("flat",), source="rows.csv")
    with pytest.raises(
        DataError, match=rf"^rows\.csv: {kind} 'flat' is constant \(every value is 0\.1\)"
    ):
        Standardization.fit(table)


def test_standardization_needs_two_rows():
    with pytest.raises(DataError, match=r"rows\.csv: need at least 2 rows to standardise, got 1"):
        Standardization.fit(context_table(1))


def test_standardization_survives_a_weights_only_checkpoint(tmp_path):
    scaling = Standardization.fit(context_table(8))
    torch.save({"standardization": scaling.to_dict()}, tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)["standardization"]
    assert Standardization.from_dict(state) == scaling


def test_standardization_rejects_bad_input():
    scaling = Standardization(("a", "b"), (0.0, 1.0), (1.0, 2.0))
    with pytest.raises(
        ValueError, match=r"apply expects 2 columns on the last axis, got shape \(4, 3\)"
    ):
        scaling.apply(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="expects keys"):
        Standardization.from_dict({"columns": ["a"]})
    with pytest.raises(ValueError, match="positive std"):
        Standardization(("a",), (0.0,), (0.0,))
    with pytest.raises(ValueError, match="as many mean and std values as columns"):
        Standardization(("a", "b"), (0.0,), (1.0,))


# Writing


def test_write_read_round_trip_float64(tmp_path):
    data = random_rows(6, 3, seed=5) * np.array([1e-12, 1.0, 1e15])
    write_table(tmp_path / "s.csv", data, ["u", "v", "w"])
    table = read_table(tmp_path / "s.csv")
    assert table.columns == ("u", "v", "w")
    np.testing.assert_array_equal(table.values, data)


def test_write_read_round_trip_float32_and_short_text(tmp_path):
    data = random_rows(6, 2, seed=6).astype(np.float32)
    write_table(tmp_path / "s.csv", data, ["a,b", "c"])
    np.testing.assert_array_equal(read_table(tmp_path / "s.csv").values.astype(np.float32), data)
    cells = (tmp_path / "s.csv").read_text().splitlines()[1].split(",")
    assert max(len(cell) for cell in cells) <= 15  # float32 digits, not float64's


def test_write_integers(tmp_path):
    data = np.array([[1, -2], [3, 40]], dtype=np.int64)
    write_table(tmp_path / "s.csv", data, ["a", "b"])
    assert (tmp_path / "s.csv").read_text() == "a,b\n1,-2\n3,40\n"
    np.testing.assert_array_equal(read_table(tmp_path / "s.csv").values, data)


def test_write_rejects_mismatched_columns(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(N, 2\)"):
        write_table(tmp_path / "s.csv", np.zeros((3, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="distinct"):
        write_table(tmp_path / "s.csv", np.zeros((3, 2)), ["a", "a"])
    with pytest.raises(ValueError, match="dtype bool"):
        write_table(tmp_path / "s.csv", np.zeros((3, 2), dtype=bool), ["a", "b"])


def test_split_indices_is_seeded_and_its_streams_are_independent():
    kept, held = split_indices(100, 0.2, seed=3)
    assert len(held) == 20 and sorted([*kept, *held]) == list(range(100))
    again = split_indices(100, 0.2, seed=3)
    assert np.array_equal(held, again[1]) and np.array_equal(kept, again[0])
    assert not np.array_equal(held, split_indices(100, 0.2, seed=3, stream=1)[1])
    assert not np.array_equal(held, split_indices(100, 0.2, seed=4)[1])
    # split_table holds out exactly split_indices' rows.
    table = Table(np.arange(100.0)[:, None], ("x",))
    assert np.array_equal(split_table(table, 0.2, seed=3)[1].values[:, 0], held)


def test_file_digest_changes_when_rows_are_appended(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("x\n1\n2\n")
    before = file_digest(path)
    assert file_digest(path) == before and len(before) == 64
    with open(path, "a") as file:
        file.write("3\n")
    assert file_digest(path) != before


def test_standardization_keeps_the_digits_of_a_large_offset():
    rng = np.random.default_rng(0)
    small = rng.standard_normal(1000)
    table = Table((1e9 + 1e-3 * small)[:, None], ("big",))
    scaling = Standardization.fit(table)
    # The statistics of the variation itself, recovered through the 1e9 offset in float64.
    assert scaling.mean[0] - 1e9 == pytest.approx(1e-3 * small.mean(), abs=1e-6)
    assert scaling.std[0] == pytest.approx(1e-3 * small.std(), rel=1e-5)
    standardised = scaling.apply(table.values)[:, 0].astype(np.float32)
    expected = (small - small.mean()) / small.std()
    assert np.abs(standardised - expected).max() < 1e-3


def test_a_column_whose_spread_underflows_is_named():
    table = Table(np.array([[0.0, 1.0], [1e-300, 2.0]]), ("tiny", "fine"), source="t.csv")
    with pytest.raises(DataError, match="t.csv: column 'tiny' is constant once standardised"):
        Standardization.fit(table)

"""stmgt.data.tables: reading user tables, checked against hand-computed values and plain pandas/datetime."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd
import pytest

from stmgt.data.tables import (
    NA_TOKENS,
    id_column,
    missing_cells,
    numeric_column,
    parse_timestamps,
    read_table,
    require_columns,
    row_location,
    row_position,
)
from stmgt.errors import ConfigError, DataError


def _times(values) -> list[datetime]:
    return [pd.Timestamp(v).to_pydatetime() for v in values]


# ---------------------------------------------------------------------- positions
def test_row_position_counts_the_csv_header_as_line_1():
    assert row_position("obs.csv", 0) == "line 2"
    assert row_position("obs.csv", 41) == "line 43"
    assert row_position("obs.parquet", 0) == "row 0"
    assert row_location("edges.csv", 3) == "edges.csv line 5"
    assert row_location("store", 7) == "store row 7"


# ---------------------------------------------------------------------- read_table
def test_read_table_na_tokens_text_ids_and_stripped_header(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("node_id, value ,note\n007,1.5,NA\n008,null,none\n009,N/A,#n/a\n010, NaN ,x\n011,,n/a\n")
    df = read_table(f, text_columns=("node_id",))
    assert list(df.columns) == ["node_id", "value", "note"]
    assert df["node_id"].tolist() == ["007", "008", "009", "010", "011"]  # text, leading zeros kept
    v = df["value"].to_numpy(dtype=float)
    assert v[0] == 1.5 and np.isnan(v[1:]).all()
    # "none" is not an NA token: it stays text; every NA token (any case) is missing
    assert df["note"].isna().tolist() == [True, False, True, False, True]
    assert df["note"][1] == "none" and df["note"][3] == "x"


def test_read_table_text_columns_match_a_header_with_spaces(tmp_path):
    """`` node_id `` is the node_id column: its ids stay text (``007`` is not the number 7)."""
    f = tmp_path / "obs.csv"
    f.write_text(" node_id ,value\n007,1\n")
    df = read_table(f, text_columns=("node_id",))
    assert list(df.columns) == ["node_id", "value"] and df["node_id"].tolist() == ["007"]


def test_read_table_without_text_columns_reads_ids_as_numbers(tmp_path):
    f = tmp_path / "t.csv"
    f.write_text("node_id,value\n007,1\n")
    assert read_table(f)["node_id"].tolist() == [7]


def test_na_tokens_are_the_documented_ones():
    assert {t.lower() for t in NA_TOKENS} == {"", "na", "nan", "null", "n/a", "#n/a"}


def test_read_table_parquet_matches_pandas(tmp_path):
    pytest.importorskip("pyarrow")
    frame = pd.DataFrame({"timestamp": pd.to_datetime(["2024-05-01 08:00", "2024-05-01 08:05"]),
                          "node_id": ["a", "b"], "value": [1.0, np.nan]})
    f = tmp_path / "obs.parquet"
    frame.to_parquet(f)
    pd.testing.assert_frame_equal(read_table(f), pd.read_parquet(f))


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "the file is empty; it needs a header row and data rows"),
        ("a,b\n1,2,3\n4,5\n", r"^t\.csv line 2: 3 fields but the header has 2; quote values"),
        ("a,b\n1,2\n3,4,5\n", r"t\.csv: cannot be read as CSV \(.*line 3.*\); save it as UTF-8 CSV$"),
        ("\n\n", "the file is empty"),
    ],
)
def test_read_table_refuses(tmp_path, text, match):
    f = tmp_path / "t.csv"
    f.write_text(text)
    with pytest.raises(DataError, match=match):
        read_table(f)


def test_read_table_refuses_non_utf8(tmp_path):
    f = tmp_path / "t.csv"
    f.write_bytes("node_id,value\nStraße,1\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"cannot be read as CSV .*save it as UTF-8 CSV"):
        read_table(f)


def test_require_columns_names_missing_and_found():
    df = pd.DataFrame(columns=["time", "value"])
    require_columns(df, ("value",), "o.csv", "hint")  # present: nothing happens
    with pytest.raises(DataError) as e:
        require_columns(df, ("timestamp", "node_id", "value"), "o.csv", "Rename them.")
    assert str(e.value) == "o.csv: missing column(s) timestamp, node_id; found: time, value. Rename them."


# ---------------------------------------------------------------------- columns
def test_missing_cells():
    text = pd.Series(["1", " NA ", "null", "x", None, "#n/a", "NAN", "", "0"], dtype=object)
    assert missing_cells(text).tolist() == [False, True, True, False, True, True, True, True, False]
    num = pd.Series([1.0, np.nan, 0.0])
    assert missing_cells(num).tolist() == [False, True, False]


def test_numeric_column_parses_like_float():
    cells = [" 3.5", "-2", "1e3", "NA", "", "0", "null"]
    out = numeric_column(pd.Series(cells, dtype=object), "o.csv", "value", allow_missing=True)
    assert out.dtype == np.float64
    expected = [3.5, -2.0, 1000.0, np.nan, np.nan, 0.0, np.nan]
    np.testing.assert_array_equal(out, np.array(expected))


def test_numeric_column_returns_a_copy_of_numbers():
    col = pd.Series([1.0, 2.0, np.nan])
    out = numeric_column(col, "o.parquet", "value", allow_missing=True)
    out[0] = 99.0
    assert col[0] == 1.0


@pytest.mark.parametrize(
    "cells, allow, message",
    [
        (["1", "4,5"], True, "o.csv line 3: value '4,5' is not a number; write a plain number (decimal point '.')"
                             " or leave the cell empty (empty, NA, NaN, null, n/a and #N/A mean missing)"),
        (["1", "inf"], True, "o.csv line 3: value 'inf' is not a number"),
        (["x"], False, "o.csv line 2: value 'x' is not a number; write a plain number (decimal point '.')"),
        (["1", "2", " "], False, "o.csv line 4: value is empty; every row needs a value"),
    ],
)
def test_numeric_column_refuses(cells, allow, message):
    with pytest.raises(DataError) as e:
        numeric_column(pd.Series(cells, dtype=object), "o.csv", "value", allow_missing=allow)
    assert str(e.value).startswith(message)
    if not allow:
        assert "leave the cell empty" not in str(e.value)


def test_numeric_column_hint_and_numbers_in_messages():
    with pytest.raises(DataError) as e:
        numeric_column(pd.Series([1.0, np.inf]), "o.parquet", "weight", allow_missing=True, hint="")
    assert str(e.value) == "o.parquet row 1: weight inf is not a number; write a plain number (decimal point '.')"


def test_id_column():
    col = pd.Series([7, " a ", "007", "b c"], index=[10, 11, 12, 13], dtype=object)
    out = id_column(col, "o.csv", "node_id")
    assert out.tolist() == ["7", "a", "007", "b c"]
    assert out.index.tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match=r"^edges\.csv line 3: source is empty; every row needs a source$"):
        id_column(pd.Series(["a", "  "]), "edges.csv", "source")
    with pytest.raises(DataError, match="line 2: target is empty"):
        id_column(pd.Series([None, "a"], dtype=object), "edges.csv", "target")


# ---------------------------------------------------------------------- timestamps
def test_iso_timestamps_match_pandas():
    text = ["2024-05-01 08:05:00", "2024-05-01 08:10", "2024-12-31T23:55:00"]
    out = parse_timestamps(pd.Series(text, index=[5, 6, 7]), "o.csv")
    assert out.dtype == np.dtype("datetime64[ns]")
    assert out.index.tolist() == [0, 1, 2]
    assert out.tolist() == pd.to_datetime(pd.Series(text), format="ISO8601").tolist()


def test_rows_in_another_layout_are_read_one_by_one():
    out = parse_timestamps(pd.Series(["2024-05-01 08:00", "May 2, 2024 09:30"]), "o.csv")
    assert out.tolist() == _times(["2024-05-01 08:00", "2024-05-02 09:30"])


def test_a_shared_utc_offset_keeps_the_local_time():
    out = parse_timestamps(pd.Series(["2024-05-01T08:05:00+02:00", "2024-05-01T09:05:00+02:00"]), "o.csv")
    assert out.tolist() == [datetime(2024, 5, 1, 8, 5), datetime(2024, 5, 1, 9, 5)]
    aware = pd.Series(pd.to_datetime(["2024-05-01 08:05"]).tz_localize("Europe/Berlin"))
    assert parse_timestamps(aware, "o.parquet").tolist() == [datetime(2024, 5, 1, 8, 5)]


def test_day_first_and_month_first_follow_the_only_order_the_dates_allow():
    notes: list[str] = []
    out = parse_timestamps(pd.Series(["13/04/2024 08:00", "03/04/2024 09:30"]), "o.csv", notes=notes)
    assert out.tolist() == [datetime(2024, 4, 13, 8), datetime(2024, 4, 3, 9, 30)]
    assert notes == ["dates: day-first (dd/mm/yyyy), as line 2 '13/04/2024 08:00' shows"]
    out = parse_timestamps(pd.Series(["04/03/2024", "04/13/2024"]), "o.csv")
    assert out.tolist() == [datetime(2024, 4, 3), datetime(2024, 4, 13)]


def test_ambiguous_dates_need_dayfirst():
    text = pd.Series(["03/04/2024 08:00", "05/06/2024 09:30"])
    with pytest.raises(DataError, match=r"line 2 '03/04/2024 08:00' can be read day-first or month-first"):
        parse_timestamps(text, "o.csv")
    notes: list[str] = []
    assert parse_timestamps(text, "o.csv", dayfirst=True, notes=notes)[0] == datetime(2024, 4, 3, 8)
    assert notes == ["dates: day-first, as dayfirst=True says"]
    assert parse_timestamps(text, "o.csv", dayfirst=False)[0] == datetime(2024, 3, 4, 8)


def test_dates_that_contradict_or_mix_orders_are_refused():
    with pytest.raises(DataError, match=r"line 3 '04/13/2024': this date cannot be day-first"):
        parse_timestamps(pd.Series(["01/02/2024", "04/13/2024"]), "o.csv", dayfirst=True)
    with pytest.raises(DataError, match=r"row 0 '13/04/2024': this date cannot be month-first"):
        parse_timestamps(pd.Series(["13/04/2024"]), "o.parquet", dayfirst=False)
    with pytest.raises(DataError, match=r"dates mix day-first \(line 2 '13/04/2024'\) and month-first \(line 3"):
        parse_timestamps(pd.Series(["13/04/2024", "04/13/2024"]), "o.csv")


def test_timestamp_format_is_used_exactly():
    fmt = "%d.%m.%Y %H:%M"
    text = ["01.02.2024 07:30", "28.02.2024 23:59"]
    notes: list[str] = []
    out = parse_timestamps(pd.Series(text), "o.csv", timestamp_format=fmt, notes=notes)
    assert out.tolist() == [datetime.strptime(t, fmt) for t in text]
    assert notes == [f"dates: read with timestamp_format {fmt!r}"]
    with pytest.raises(DataError, match=r"o\.csv line 3: timestamp '2024-02-28 23:59' does not match"):
        parse_timestamps(pd.Series(["01.02.2024 07:30", "2024-02-28 23:59"]), "o.csv", timestamp_format=fmt)
    with pytest.raises(ConfigError, match="give dayfirst or timestamp_format, not both"):
        parse_timestamps(pd.Series(text), "o.csv", dayfirst=True, timestamp_format=fmt)


@pytest.mark.parametrize(
    "cells, message",
    [
        (["2024-05-01", " "], "o.csv line 3: timestamp is empty; every row needs a timestamp"),
        (["2024-05-01", None], "o.csv line 3: timestamp is empty"),
        (["2024-05-01", "soon"], "o.csv line 3: timestamp 'soon' is not a date/time; write it as ISO 8601"),
        (["2024-05-01", "3000-01-01"], "o.csv line 3: timestamp '3000-01-01' is not a date/time"),
    ],
)
def test_bad_timestamps_are_refused(cells, message):
    with pytest.raises(DataError) as e:
        parse_timestamps(pd.Series(cells, dtype=object), "o.csv")
    assert str(e.value).startswith(message)

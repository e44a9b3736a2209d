"""Reading user tables: CSV/parquet files, number, id and timestamp columns, with one-line errors.

The your-own-city loader (:mod:`stmgt.data.loaders.city`) and ``stmgt predict``
(:mod:`stmgt.predict`, also behind ``stmgt serve``) read long-format tables the same way, through
these helpers:

* :func:`read_table`: a CSV or parquet file -> :class:`pandas.DataFrame`; only the
  :data:`NA_TOKENS` (any case) become missing, id columns stay text (``007`` stays ``007``).
* :func:`numeric_column`: a column -> ``float64`` array ``[rows]`` (missing cells NaN).
* :func:`id_column`: a column -> stripped text ids (a :class:`pandas.Series` of ``str``).
* :func:`parse_timestamps`: a column -> ``datetime64[ns]`` local wall-clock times, with the
  ``dd/mm`` vs ``mm/dd`` order checked rather than guessed.
* :func:`require_columns`, :func:`missing_cells`, :func:`row_position`, :func:`row_location`.

Every problem raises a one-line :class:`~stmgt.errors.DataError` naming the file and the row (for
a CSV file ``line 1`` is the header, so data row ``i`` (0-based) is ``line i + 2``; for other
files it is ``row i``) and saying how to fix it.
"""

from __future__ import annotations

import csv
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from stmgt.errors import ConfigError, DataError

#: Cell texts read as "not observed" (case-insensitive); any other text in a number column is an error.
NA_TOKENS = ("", "NA", "NaN", "null", "n/a", "#N/A")
_NA_LOWER = frozenset(t.lower() for t in NA_TOKENS)
_NA_VALUES = sorted({v for t in NA_TOKENS for v in (t, t.lower(), t.upper(), t.title())})
_DMY = r"^(\d{1,2})([/.\-])(\d{1,2})\2(\d{4}|\d{2})(?!\d)"
_ISO_HINT = "or write ISO 8601 dates (2024-05-01 08:05)"
#: The default ``hint`` of :func:`numeric_column` when missing cells are allowed.
MISSING_HINT = " or leave the cell empty (empty, NA, NaN, null, n/a and #N/A mean missing)"

__all__ = [
    "MISSING_HINT",
    "NA_TOKENS",
    "id_column",
    "missing_cells",
    "numeric_column",
    "parse_timestamps",
    "read_table",
    "require_columns",
    "row_location",
    "row_position",
]


# ---------------------------------------------------------------------- positions in messages
def row_position(file: str, i: int) -> str:
    """Where data row ``i`` (0-based) of ``file`` is, for a message: ``"line {i + 2}"`` for a
    ``.csv`` name (line 1 is the header), else ``"row {i}"``."""
    return f"line {i + 2}" if file.endswith(".csv") else f"row {i}"


def row_location(file: str, i: int) -> str:
    """``"{file} {row_position(file, i)}"``, e.g. ``"observations.csv line 7"``."""
    return f"{file} {row_position(file, i)}"


def _shown(x) -> str:
    """A cell for a message: text quoted, numbers plain (never ``np.float64(...)``)."""
    if hasattr(x, "item") and not isinstance(x, str):
        x = x.item()
    return repr(x) if isinstance(x, str) else str(x)


# ---------------------------------------------------------------------- files
def read_table(path: Path, *, text_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """A CSV or parquet file as a frame, column names stripped of spaces.

    Args:
        path: an existing file; ``.parquet`` is read as parquet, any other suffix as CSV (UTF-8,
            ``,``-separated, spaces after a separator skipped).
        text_columns: CSV columns read as text, not numbers (ids: ``007`` stays ``007``); default none.

    Returns:
        The table; in a CSV only the :data:`NA_TOKENS` (any case) become missing (NaN).

    Refuses (:class:`~stmgt.errors.DataError`) an empty file, a file that is not UTF-8 CSV or
    parquet, and a CSV line with more fields than the header (naming the first such line).
    """
    if path.stat().st_size == 0:
        raise DataError(
            f"{path}: the file is empty; it needs a header row and data rows (see docs/your_own_city.md)"
        )
    try:
        df = pd.read_parquet(path) if path.suffix == ".parquet" else _read_csv(path, text_columns)
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; it needs a header row and data rows") from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        kind = path.suffix[1:].upper()
        raise DataError(f"{path}: cannot be read as {kind} ({msg}); save it as UTF-8 {kind}") from None
    if df is None:
        _too_many_fields(path)
    df.columns = [str(c).strip() for c in df.columns]
    return df


def _read_csv(path: Path, text_columns: tuple[str, ...]) -> pd.DataFrame | None:
    """The CSV as a frame, or ``None`` when pandas warns about extra fields on some line."""
    header = pd.read_csv(path, nrows=0, skipinitialspace=True, index_col=False).columns
    text = {c: str for c in header if str(c).strip() in text_columns}  # " node_id " is node_id too
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", pd.errors.ParserWarning)
        df = pd.read_csv(path, dtype=text, skipinitialspace=True,
                         keep_default_na=False, na_values=_NA_VALUES, index_col=False)
    if any(issubclass(w.category, pd.errors.ParserWarning) for w in caught):
        return None
    return df


def _too_many_fields(path: Path) -> None:
    """Name the first CSV line with more fields than the header (pandas would shift or drop them)."""
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, skipinitialspace=True)
        header = next(rows, [])
        for n, row in enumerate(rows, start=2):
            if len(row) > len(header):
                raise DataError(
                    f"{path.name} line {n}: {len(row)} fields but the header has {len(header)}; quote values that"
                    " contain commas (\"41,5\"), use '.' as the decimal point, or add the missing column name"
                )
    raise DataError(f"{path.name}: some lines have more fields than the header; make every line match it")


def require_columns(df: pd.DataFrame, cols: tuple[str, ...], file: str, hint: str) -> None:
    """Refuse a table that lacks any of ``cols``; the message names the missing and the found
    columns, then ``hint`` (a sentence on what the file needs). Returns nothing."""
    missing = [c for c in cols if c not in df.columns]
    if missing:
        found = ", ".join(map(str, df.columns)) or "none"
        raise DataError(
            f"{file}: missing column(s) {', '.join(missing)}; found: {found}. {hint}"
        )


# ---------------------------------------------------------------------- columns
def missing_cells(col: pd.Series) -> np.ndarray:
    """``[rows]`` bool: cells that mean "not observed": missing (NaN/None), or in a text column
    one of :data:`NA_TOKENS` (any case, surrounding spaces ignored). Never raises."""
    blank = col.isna().to_numpy()
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        blank = blank | col.astype(str).str.strip().str.lower().isin(_NA_LOWER).to_numpy()
    return blank


def numeric_column(
    col: pd.Series, file: str, name: str, *, allow_missing: bool, hint: str = MISSING_HINT,
) -> np.ndarray:
    """A column of numbers (or number texts) -> a new ``float64`` array ``[rows]``.

    Args:
        col: the column; text cells are stripped of spaces before parsing.
        file: the file name for messages (its ``.csv`` suffix picks line numbers, see
            :func:`row_position`).
        name: the column name for messages.
        allow_missing: ``True``: :func:`missing_cells` become NaN; ``False``: an empty cell is refused.
        hint: appended to the "not a number" message when ``allow_missing``; default
            :data:`MISSING_HINT` (how to write a missing cell).

    Returns:
        ``float64 [rows]``, NaN where a cell is missing.

    Refuses (:class:`~stmgt.errors.DataError`, naming the first bad row) a cell that is not a
    finite number (text, ``inf``), and an empty cell unless ``allow_missing``.
    """
    if col.dtype == object or pd.api.types.is_string_dtype(col.dtype):
        num = pd.to_numeric(col.astype(str).str.strip(), errors="coerce")
    else:
        num = pd.to_numeric(col, errors="coerce")
    num = num.astype("float64").to_numpy(copy=True)
    blank = missing_cells(col)
    bad = (~np.isfinite(num) & ~blank) | (np.isinf(num))
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{row_location(file, i)}: {name} {_shown(col.iloc[i])} is not a number; write a plain number"
            f" (decimal point '.'){hint if allow_missing else ''}"
        )
    if not allow_missing and blank.any():
        i = int(np.argmax(blank))
        raise DataError(f"{row_location(file, i)}: {name} is empty; every row needs a {name}")
    num[blank] = np.nan
    return num


def id_column(col: pd.Series, file: str, name: str) -> pd.Series:
    """Ids (node or edge ends) -> a :class:`pandas.Series` of ``str``, stripped, index ``0..rows-1``.

    Numbers are kept as read (``7`` -> ``"7"``); read the column as text (``text_columns`` of
    :func:`read_table`) to keep ``007``. Refuses (:class:`~stmgt.errors.DataError`) an empty or
    missing id, naming the first such row of ``file`` and the column ``name``.
    """
    s = col.astype("string").str.strip()
    empty = s.isna() | (s == "")
    if empty.any():
        i = int(np.argmax(empty.to_numpy()))
        raise DataError(f"{row_location(file, i)}: {name} is empty; every row needs a {name}")
    return s.astype(str).reset_index(drop=True)


# ---------------------------------------------------------------------- timestamps
def parse_timestamps(
    col: pd.Series, file: str, *, dayfirst: bool | None = None, timestamp_format: str | None = None,
    notes: list[str] | None = None,
) -> pd.Series:
    """A timestamp column -> ``datetime64[ns]`` local wall-clock times, index ``0..rows-1``.

    A UTC offset shared by every row is dropped (the local time is kept); rows with different
    offsets are converted to UTC first. A column already of datetime type is only made tz-naive
    (local time kept). Otherwise the text of each row is parsed.

    Args:
        col: the column (text or datetime).
        file: the file name for messages.
        dayfirst: ``True`` reads ``03/04/2024`` as 3 April, ``False`` as March 4; default
            ``None``: the one order the dates allow (a day above 12 tells), refused when none tells.
        timestamp_format: strftime codes (e.g. ``"%d/%m/%Y %H:%M"``) every row must follow exactly;
            default ``None`` (pandas reads each row).
        notes: when given, a one-line note on how dates were read (``"dates: ..."``) is appended.

    Refuses: an empty or unparsable timestamp, dates that contradict ``dayfirst``, mix both orders
    or are ambiguous with no ``dayfirst`` (:class:`~stmgt.errors.DataError`); ``dayfirst`` together
    with ``timestamp_format``, or a format that is no date format (:class:`~stmgt.errors.ConfigError`).
    """
    if dayfirst is not None and timestamp_format is not None:
        raise ConfigError("give dayfirst or timestamp_format, not both (a format already fixes the order)")
    if pd.api.types.is_datetime64_any_dtype(col.dtype):
        ts = col
        if getattr(ts.dt, "tz", None) is not None:
            ts = ts.dt.tz_localize(None)  # keep the local wall-clock time
        ts = ts.astype("datetime64[ns]")
    else:
        text = id_column(col, file, "timestamp")  # stripped texts; an empty cell is refused
        if timestamp_format is not None:
            ts = _parse_with_format(text, file, timestamp_format, notes)
        else:
            ts = _parse_inferred(text, file, _date_order(text, file, dayfirst, notes))
    if ts.isna().any():
        i = int(np.argmax(ts.isna().to_numpy()))
        raise DataError(f"{row_location(file, i)}: timestamp is empty; every row needs a timestamp")
    return ts.astype("datetime64[ns]").reset_index(drop=True)


def _parse_with_format(text: pd.Series, file: str, fmt: str, notes: list[str] | None) -> pd.Series:
    """Every text parsed with the strftime format ``fmt``; a row that does not match is refused."""
    try:
        ts = _to_datetime(text, format=fmt)
    except (ValueError, TypeError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(
            f"timestamp_format {fmt!r} is not a date format ({msg}); use strftime"
            " codes, e.g. '%d/%m/%Y %H:%M'"
        ) from None
    bad = ts.isna().to_numpy()
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(
            f"{row_location(file, i)}: timestamp {text.iloc[i]!r} does not match timestamp_format"
            f" {fmt!r}; fix the row or the format"
        )
    if notes is not None:
        notes.append(f"dates: read with timestamp_format {fmt!r}")
    return ts


def _parse_inferred(text: pd.Series, file: str, dayfirst: bool | None) -> pd.Series:
    """Texts parsed by pandas in the layout of the first row, other layouts row by row."""
    ts = _to_datetime(text, dayfirst=bool(dayfirst))
    bad = ts.isna().to_numpy()
    if bad.any():  # rows in another layout than the first one: try them one by one
        ts[bad] = _to_datetime(text[bad], format="mixed", dayfirst=bool(dayfirst)).to_numpy()
        bad = ts.isna().to_numpy()
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{row_location(file, i)}: timestamp {text.iloc[i]!r} is not a date/time; write it as"
                " ISO 8601, e.g. 2024-05-01 08:05:00"
            )
    return ts


def _to_datetime(text: pd.Series, **kw) -> pd.Series:
    """:func:`pandas.to_datetime` without its format-inference warnings (and mixed offsets -> UTC)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ts = pd.to_datetime(text, errors="coerce", **kw)
        except (ValueError, TypeError):  # mixed UTC offsets
            ts = pd.to_datetime(text, errors="coerce", utc=True, **kw)
    if getattr(ts.dt, "tz", None) is not None:
        ts = ts.dt.tz_localize(None)  # keep the local wall-clock time
    try:
        return ts.astype("datetime64[ns]")
    except (ValueError, OverflowError):  # a year outside 1677..2262: not a usable date here
        ok = ts.notna() & (ts >= pd.Timestamp.min) & (ts <= pd.Timestamp.max)
        return ts.where(ok).astype("datetime64[ns]")


def _date_order(text: pd.Series, file: str, dayfirst: bool | None, notes: list[str] | None) -> bool | None:
    """Check ``dd/mm/yyyy`` vs ``mm/dd/yyyy`` dates: refuse ambiguous or contradicting ones.

    Returns ``dayfirst`` to parse with: the given one, or the only order the data allow.
    """
    has, day_first, month_first = _date_evidence(text)
    if not has.any():
        return dayfirst

    def ex(mask: np.ndarray) -> str:
        i = int(np.argmax(mask))
        return f"{row_position(file, i)} {text.iloc[i]!r}"

    if dayfirst is True and month_first.any():
        raise DataError(
            f"{file} {ex(month_first)}: this date cannot be day-first (dd/mm/yyyy), as dayfirst=True says;"
            f" fix the row, or drop dayfirst if the file is month-first, {_ISO_HINT}"
        )
    if dayfirst is False and day_first.any():
        raise DataError(
            f"{file} {ex(day_first)}: this date cannot be month-first (mm/dd/yyyy), as dayfirst=False says;"
            f" fix the row, or pass dayfirst=True if the file is day-first, {_ISO_HINT}"
        )
    if dayfirst is None:
        dayfirst, why = _order_from_dates(file, has, day_first, month_first, ex)
    else:
        why = f"{'day' if dayfirst else 'month'}-first, as dayfirst={dayfirst} says"
    if notes is not None:
        notes.append(f"dates: {why}")
    return dayfirst


def _date_evidence(text: pd.Series) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``[rows]`` bools: has a ``nn/nn/yyyy`` date; only day-first fits; only month-first fits."""
    parts = text.str.extract(_DMY)
    has = parts[0].notna().to_numpy()
    a = pd.to_numeric(parts[0], errors="coerce").fillna(0).to_numpy()
    b = pd.to_numeric(parts[2], errors="coerce").fillna(0).to_numpy()
    day_first = has & (a > 12) & (b <= 12)  # only dd/mm fits
    month_first = has & (b > 12) & (a <= 12)  # only mm/dd fits
    return has, day_first, month_first


def _order_from_dates(file: str, has, day_first, month_first, ex) -> tuple[bool, str]:
    """``(dayfirst, why)`` when no order was given: the one order the dates allow, else refused."""
    if day_first.any() and month_first.any():
        raise DataError(
            f"{file}: dates mix day-first ({ex(day_first)}) and month-first ({ex(month_first)});"
            f" write every date in one order, {_ISO_HINT}"
        )
    if day_first.any():
        return True, f"day-first (dd/mm/yyyy), as {ex(day_first)} shows"
    if month_first.any():
        return False, f"month-first (mm/dd/yyyy), as {ex(month_first)} shows"
    raise DataError(
        f"{file}: dates such as {ex(has)} can be read day-first or month-first and no day above 12"
        " tells which; say which with dayfirst=True (dd/mm/yyyy) or dayfirst=False (mm/dd/yyyy)"
        ' (stmgt data check --dayfirst / --no-dayfirst, or {"dayfirst": true} in city.json),'
        f" {_ISO_HINT}"
    )

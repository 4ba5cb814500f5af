"""Rendering results for people and scripts: an aligned table for a terminal, CSV with a header,
JSON as records. Shared by every command that prints rows.

Every string may come from hostile data. CSV neutralises spreadsheet formulas (OWASP's advice: a
text cell starting with =, +, -, @, tab or CR gets a leading single quote) unless raw CSV is
asked for; tables show control characters, escape sequences and bidi overrides visibly instead
of sending them to the terminal; JSON keeps every value as it is."""

from __future__ import annotations

import csv
import json
import os
import re
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("table", "csv", "json")

# Set to 1 for CSV exactly as stored (for machine consumers); commands' --csv-raw does the same.
CSV_RAW_ENV = "SURVEILLANCE_CSV_RAW"
_csv_raw: ContextVar[bool] = ContextVar("csv_raw", default=False)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

# C0 controls, DEL, C1 controls, and the Unicode marks that reorder or hide text on screen
# (bidi embeddings, overrides and isolates, directional marks, zero-width joiners, BOM).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def default_format() -> str:
    """A table on a terminal, CSV when piped."""
    return "table" if sys.stdout.isatty() else "csv"


def csv_raw() -> bool:
    """Whether CSV keeps formula-like text as is: $SURVEILLANCE_CSV_RAW=1 or inside `raw_csv()`."""
    return _csv_raw.get() or os.environ.get(CSV_RAW_ENV, "").strip() == "1"


@contextmanager
def raw_csv(raw: bool = True) -> Iterator[None]:
    """Within the block, CSV output keeps formula-like text as is (the --csv-raw option)."""
    token = _csv_raw.set(raw)
    try:
        yield
    finally:
        _csv_raw.reset(token)


def formula_safe(value: Any) -> Any:
    """A text cell that a spreadsheet would run as a formula, prefixed with a single quote.

    Only text: numbers (-1.5 in a numeric column) are untouched, while the text "-1" is
    prefixed, because a text column holds what a report said, not a number."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def p_text(value: Any) -> str:
    """A p value as an analyst writes it: '<0.001' below 0.001, else two significant figures
    ('n/a' when missing); the report's tables and the figures' alt texts both use it."""
    if value is None or pd.isna(value):
        return "n/a"
    return "<0.001" if float(value) < 0.001 else f"{float(value):.2g}"


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20 or code == 0x7F:
        return "^" + chr(code ^ 0x40)
    return f"<U+{code:04X}>"


def terminal_safe(text: str) -> str:
    """Text that cannot move the cursor, clear the screen, ring the bell or reorder what follows:
    control characters shown in caret notation (ESC as ^[, BEL as ^G, CR as ^M), C1 controls and
    bidi or zero-width marks as <U+202E>."""
    return _UNSAFE.sub(_visible, text)


def _plain_value(value: Any) -> Any:
    """Lists (DuckDB LIST columns arrive as numpy arrays) as Python lists; dates as ISO text."""
    if value is pd.NaT:
        return None
    if isinstance(value, np.ndarray):
        return [_plain_value(v) for v in value.tolist()]
    if isinstance(value, list | tuple):
        return [_plain_value(v) for v in value]
    if isinstance(value, pd.Timestamp | datetime | date):
        if isinstance(value, date) and not isinstance(value, datetime):
            return value.isoformat()
        ts = pd.Timestamp(value)
        return ts.date().isoformat() if ts == ts.normalize() else ts.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _flatten(frame: pd.DataFrame, separator: str) -> pd.DataFrame:
    """List cells joined with a separator, dates as ISO text: for CSV and terminal tables."""
    out = frame.copy()
    for column in out.columns:
        values = [_plain_value(v) for v in out[column].astype(object)]
        if any(isinstance(v, list) for v in values):
            values = [separator.join(map(str, v)) if isinstance(v, list) else v for v in values]
        out[column] = pd.Series(values, index=out.index, dtype=object)
    return out


def _map_text(frame: pd.DataFrame, function: Any) -> pd.DataFrame:
    """Apply `function` to every text cell and to the column names."""
    out = frame.copy()
    for column in out.columns:
        values = [function(v) if isinstance(v, str) else v for v in out[column].tolist()]
        out[column] = pd.Series(values, index=out.index, dtype=out[column].dtype)
    out.columns = [function(c) if isinstance(c, str) else c for c in out.columns]
    return out


def _blank_missing(frame: pd.DataFrame) -> pd.DataFrame:
    """Missing values as empty cells, so a person never reads NaN, None, NaT or <NA>."""
    out = frame.copy()
    for column in out.columns:
        values = out[column].tolist()
        if any(_missing(v) for v in values):
            values = ["" if _missing(v) else v for v in values]
            out[column] = pd.Series(values, index=out.index, dtype=object)
    return out


TABLE_WIDTH = 80
CELL_WIDTH = 32


def _fit(frame: pd.DataFrame, width: int) -> tuple[pd.DataFrame, int]:
    """Cells cut to CELL_WIDTH and as many leading columns as fit in `width` characters."""
    cut = frame.copy()
    for column in cut.columns:
        values = [
            v if not isinstance(v, str) or len(v) <= CELL_WIDTH else v[: CELL_WIDTH - 1] + "…"
            for v in cut[column]
        ]
        cut[column] = pd.Series(values, index=cut.index, dtype=cut[column].dtype)
    keep = len(cut.columns)
    while (
        keep > 1 and max(map(len, cut.iloc[:, :keep].to_string(index=False).splitlines())) > width
    ):
        keep -= 1
    return cut.iloc[:, :keep], len(cut.columns) - keep


def _wrapped(frame: pd.DataFrame, column: str, width: int) -> str:
    """A left-aligned table whose `column` (the last one shown) wraps onto continuation lines
    within `width`, so long descriptions are read whole rather than cut."""
    others = [c for c in frame.columns if c != column]
    text = frame.astype(str)
    widths = [max(len(str(c)), *(len(v) for v in text[c])) for c in others]
    indent = sum(widths) + 2 * len(others)
    room = max(width - indent, 24)
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(others, widths, strict=True)) + "  " + column
    ]
    for _, row in text.iterrows():
        head = "  ".join(row[c].ljust(w) for c, w in zip(others, widths, strict=True))
        parts = textwrap.wrap(row[column], room, break_on_hyphens=False) or [""]
        lines.append((head + "  " + parts[0]).rstrip())
        lines.extend(" " * indent + part for part in parts[1:])
    return "\n".join(lines)


def render(
    frame: pd.DataFrame, fmt: str, max_rows: int | None = None, wrap: str | None = None
) -> str:
    """One DataFrame as text in the given format; max_rows limits only the table form.

    CSV has a header, ISO dates and list fields joined by ';', formula-like text neutralised
    (see `formula_safe`; `csv_raw` turns that off); JSON is a list of records. The table fits
    an 80-column terminal: long cells are cut (or, for the `wrap` column, wrapped) and columns
    that do not fit are left out, with a note; missing values are blank and control characters
    visible. CSV and JSON always carry everything."""
    if fmt == "csv":
        flat = _flatten(frame, ";")
        if not csv_raw():
            flat = _map_text(flat, formula_safe)
        return _csv_text(flat)
    if fmt == "json":
        return json.dumps(_records(frame), indent=2, default=str, ensure_ascii=False) + "\n"
    if fmt == "table":
        head = frame if max_rows is None else frame.head(max_rows)
        flat = _map_text(_blank_missing(_flatten(head, "; ")), terminal_safe)
        if wrap is not None and wrap in frame.columns and not frame.empty:
            return _wrapped(flat, terminal_safe(wrap), TABLE_WIDTH) + "\n" + _more(frame, max_rows)
        shown, hidden = _fit(flat, TABLE_WIDTH)
        text = "(no rows)" if frame.empty else shown.to_string(index=False)
        if hidden and not frame.empty:
            text += f"\n({hidden} more columns not shown: use --format csv or json)"
        return text + "\n" + _more(frame, max_rows)
    raise ValueError(f"unknown format {fmt!r}")


class _Rows(list[str]):
    """A file for csv.writer that keeps each row's text apart (it writes one row per call)."""

    def write(self, text: str) -> None:
        self.append(text)


def _csv_text(frame: pd.DataFrame) -> str:
    """CSV with LF line ends whose fields are quoted when they hold a delimiter, a quote, LF or
    CR (pandas leaves a lone CR unquoted, which ends the row for most readers)."""
    rows = _Rows()
    writer = csv.writer(rows, lineterminator="\r\n")  # CR in the terminator: CR gets quoted
    writer.writerow(map(str, frame.columns))
    columns = [["" if _missing(v) else v for v in frame[c].tolist()] for c in frame.columns]
    writer.writerows(zip(*columns, strict=True))
    return "".join(row[:-2] + "\n" for row in rows)


def _missing(value: Any) -> bool:
    """None, pd.NA or a float NaN: what `_flatten` leaves of a missing value."""
    return value is None or value is pd.NA or (isinstance(value, float) and value != value)


def _more(frame: pd.DataFrame, max_rows: int | None) -> str:
    if max_rows is not None and len(frame) > max_rows:
        return f"... {len(frame) - max_rows} more rows (use --format csv for all)\n"
    return ""


def render_json(data: Any) -> str:
    """Plain data as indented JSON."""
    return json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = frame.astype(object).to_dict(orient="records")
    return [{k: _none_if_missing(_plain_value(v)) for k, v in r.items()} for r in records]


def _none_if_missing(value: Any) -> Any:
    if isinstance(value, list):
        return value
    return None if pd.isna(value) else value

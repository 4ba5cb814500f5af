"""Rendering results for people and scripts: an aligned table for a terminal, CSV with a header,
JSON as records. Shared by every command that prints rows."""

from __future__ import annotations

import json
import sys
from datetime import date, datetime
from typing import Any

import numpy as np
import pandas as pd

FORMATS = ("table", "csv", "json")


def default_format() -> str:
    """A table on a terminal, CSV when piped."""
    return "table" if sys.stdout.isatty() else "csv"


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


def render(frame: pd.DataFrame, fmt: str, max_rows: int | None = None) -> str:
    """One DataFrame as text in the given format; max_rows limits only the table form.

    CSV has a header, ISO dates and list fields joined by ';'; JSON is a list of records. The
    table fits an 80-column terminal: long cells are cut and columns that do not fit are left
    out, with a note; CSV and JSON always carry everything."""
    if fmt == "csv":
        return str(_flatten(frame, ";").to_csv(index=False))
    if fmt == "json":
        return json.dumps(_records(frame), indent=2, default=str, ensure_ascii=False) + "\n"
    if fmt == "table":
        shown, hidden = _fit(
            _flatten(frame if max_rows is None else frame.head(max_rows), "; "), TABLE_WIDTH
        )
        text = "(no rows)" if frame.empty else shown.to_string(index=False)
        if hidden and not frame.empty:
            text += f"\n({hidden} more columns not shown: use --format csv or json)"
        if max_rows is not None and len(frame) > max_rows:
            text += f"\n... {len(frame) - max_rows} more rows (use --format csv for all)"
        return text + "\n"
    raise ValueError(f"unknown format {fmt!r}")


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

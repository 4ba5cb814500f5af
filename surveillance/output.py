"""Rendering results for people and scripts: an aligned table for a terminal, CSV with a header,
JSON as records. Shared by every command that prints rows."""

from __future__ import annotations

import json
import sys
from typing import Any

import pandas as pd

FORMATS = ("table", "csv", "json")


def default_format() -> str:
    """A table on a terminal, CSV when piped."""
    return "table" if sys.stdout.isatty() else "csv"


def render(frame: pd.DataFrame, fmt: str, max_rows: int | None = None) -> str:
    """One DataFrame as text in the given format; max_rows limits only the table form."""
    if fmt == "csv":
        return str(frame.to_csv(index=False, date_format="%Y-%m-%d"))
    if fmt == "json":
        return json.dumps(_records(frame), indent=2, default=str, ensure_ascii=False) + "\n"
    if fmt == "table":
        shown = frame if max_rows is None else frame.head(max_rows)
        text = "(no rows)" if frame.empty else shown.to_string(index=False)
        if max_rows is not None and len(frame) > max_rows:
            text += f"\n... {len(frame) - max_rows} more rows (use --format csv for all)"
        return text + "\n"
    raise ValueError(f"unknown format {fmt!r}")


def render_json(data: Any) -> str:
    """Plain data as indented JSON."""
    return json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n"


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = frame.astype(object).where(frame.notna(), None)
    return list(out.to_dict(orient="records"))

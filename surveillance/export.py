"""Writing a result to a file or stdout: table, CSV and JSON through `output.render`, Parquet
through DuckDB (no pyarrow needed). Reads a DataFrame; writes the file named, atomically, and
never over a database file or, without `force`, over an existing file."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import duckdb
import pandas as pd

from .errors import UsageError
from .output import FORMATS, default_format, render

EXPORT_FORMATS = (*FORMATS, "parquet")
_SUFFIX_FORMATS = {".csv": "csv", ".json": "json", ".parquet": "parquet", ".txt": "table"}
# DuckDB's database and write-ahead-log files: an export must never replace one.
_DATABASE_SUFFIXES = (".duckdb", ".wal")


def output_format(fmt: str | None, output: Path | None) -> str:
    """The format asked for; else the output file's suffix (.csv, .json, .parquet, .txt); else
    a table on a terminal and CSV when piped."""
    if fmt is not None:
        if fmt not in EXPORT_FORMATS:
            raise UsageError(f"unknown format {fmt!r}; use {', '.join(EXPORT_FORMATS)}")
        return fmt
    if output is not None and output.suffix.lower() in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[output.suffix.lower()]
    return default_format()


def check_target(output: Path, database: Path | None = None, force: bool = False) -> None:
    """Refuse an output path that is the database in use (or its .wal), any .duckdb or .wal
    file, a folder, or, unless `force`, a file that already exists."""
    target = output.resolve()
    if database is not None:
        db = database.resolve()
        if target in (db, db.with_name(db.name + ".wal")) or (
            target.exists() and db.exists() and os.path.samefile(target, db)
        ):
            raise UsageError(f"{output}: is the database in use; choose another output file")
    if target.name.lower().endswith(_DATABASE_SUFFIXES):
        raise UsageError(f"{output}: will not write over a DuckDB file (.duckdb, .wal)")
    if target.is_dir():
        raise UsageError(f"{output}: is a folder; give a file name")
    if target.exists() and not force:
        raise UsageError(f"{output}: exists; use --force to replace it")


def write_output(
    frame: pd.DataFrame,
    fmt: str | None,
    output: Path | None = None,
    *,
    force: bool = False,
    database: Path | None = None,
) -> None:
    """Write the frame in the format (see `output_format`) to `output`, or to stdout if None.

    Parquet is binary and needs a file. A file is checked by `check_target` (never the
    `database` in use, never an existing file unless `force`), written beside its target and
    renamed into place, so an error never leaves half a file."""
    fmt = output_format(fmt, output)
    if fmt == "parquet" and output is None:
        raise UsageError("--format parquet writes a file: give --output FILE")
    if output is None:
        sys.stdout.write(render(frame, fmt))
        sys.stdout.flush()
        return
    check_target(output, database, force)
    partial = output.with_name(output.name + ".partial")
    try:
        if fmt == "parquet":
            _write_parquet(frame, partial)
        else:
            partial.write_text(render(frame, fmt), encoding="utf-8", newline="")
        os.replace(partial, output)
    except (OSError, duckdb.Error) as e:
        partial.unlink(missing_ok=True)
        message = e.strerror if isinstance(e, OSError) and e.strerror else str(e).splitlines()[0]
        raise UsageError(f"{output}: cannot write: {message}") from e


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    """The frame as a Parquet file, by DuckDB's own writer (the path is an argument, not SQL)."""
    with duckdb.connect() as con:
        con.from_df(frame).write_parquet(str(path))

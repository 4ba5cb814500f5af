"""The stages after ingest, run in order: load zips, rebuild the clean layer, extract the
built-in substances. `load` is what the `load` command and the demo call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pandas as pd

from . import clean, extract, ingest


def current_dedup(con: duckdb.DuckDBPyConnection) -> str:
    """The dedup mode of the last rebuild ('fda' if there was none)."""
    try:
        row = con.execute("SELECT any_value(dedup_mode) FROM dedup_log").fetchone()
    except duckdb.CatalogException:
        return "fda"
    return str(row[0]) if row and row[0] else "fda"


def clean_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the clean layer was rebuilt from exactly the quarters now loaded.

    False after a run that loaded quarters but was killed before its rebuild finished."""
    try:
        row = con.execute("SELECT any_value(raw_fingerprint) FROM dedup_log").fetchone()
    except duckdb.Error:
        return False
    return row is not None and row[0] == ingest.quarters_fingerprint(con)


def rebuild(
    con: duckdb.DuckDBPyConnection,
    dedup: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Rebuild the clean layer and the built-in substances' hits; return the dedup step counts.

    dedup None keeps the mode of the last rebuild."""
    dedup = dedup or current_dedup(con)
    if progress:
        progress(f"rebuilding the clean layer (dedup {dedup})")
    steps = clean.rebuild(con, dedup=dedup)
    for name, n_cases in extract.extract_builtins(con).items():
        if progress:
            progress(f"{name}: {n_cases} cases")
    return steps


def load(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    dedup: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ingest.QuarterLoad]:
    """Load zips into the raw layer, then rebuild everything downstream of it."""
    results = ingest.load(con, paths, progress=progress)
    rebuild(con, dedup=dedup, progress=progress)
    return results

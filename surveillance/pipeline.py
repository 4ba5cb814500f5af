"""The stages after ingest, run in order: load zips, rebuild the clean layer, extract the
built-in substances; and `repair`, which brings whatever `freshness.check` finds behind up to
date. `load` is what the `load` command and the demo call."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

import duckdb
import pandas as pd

from . import clean, extract, freshness, ingest
from .freshness import clean_is_current, current_dedup

__all__ = ["clean_is_current", "current_dedup", "load", "rebuild", "repair"]


def rebuild(
    con: duckdb.DuckDBPyConnection,
    dedup: str | None = None,
    progress: Callable[[str], None] | None = None,
    incremental: bool = False,
) -> pd.DataFrame:
    """Rebuild the clean layer and the built-in substances' hits; return the dedup step counts.

    dedup None keeps the mode of the last rebuild. `incremental` (what `load` and `repair` ask
    for) re-derives only the cases that the quarters loaded, replaced or removed since the last
    rebuild affect, in either dedup mode, unless the tool version, schema or clean definition
    changed (`clean.rebuild`); an explicit rebuild is full unless asked, so it also picks up a
    raw layer edited by other means than ingest.
    The clean layer commits before extraction; a run killed in between leaves extractions whose
    data fingerprint no longer matches, which `freshness.check` reports and `repair` finishes."""
    dedup = dedup or current_dedup(con)
    if progress:
        progress(f"rebuilding the clean layer (dedup {dedup})")
    steps = clean.rebuild(con, dedup=dedup, incremental=incremental)
    if progress and steps["rebuild_kind"].iloc[0] == "incremental":
        progress(f"incremental: {steps['n_cases_rederived'].iloc[0]} cases re-derived")
    for name, n_cases in extract.refresh(con).items():
        if progress:
            progress(f"{name}: {n_cases} cases")
    return steps


def repair(
    con: duckdb.DuckDBPyConnection, progress: Callable[[str], None] | None = None
) -> freshness.Staleness | None:
    """Rebuild what `freshness.check` finds older than its source; return what was behind."""
    stale = freshness.check(con, extract.builtin_term_files())
    if stale is None:
        return None
    if stale.layer == "clean":
        rebuild(con, progress=progress, incremental=True)
    else:
        extract.refresh(con)
    return stale


def load(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    dedup: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[ingest.QuarterLoad]:
    """Load zips into the raw layer, then rebuild everything downstream of it."""
    results = ingest.load(con, paths, progress=progress)
    rebuild(con, dedup=dedup, progress=progress, incremental=True)
    return results

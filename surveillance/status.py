"""What the database holds: quarters with their era and source zip, rows per raw table, rows
quarantined, the file's size, whether the derived tables are current with the loaded
quarters (`freshness.check`) and whether the next load re-derives only the cases it affects.
Read-only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb

from .clean import full_rebuild_reason
from .db import raw_table
from .errors import NoDataError
from .extract import builtin_term_files
from .faers_format import TABLES
from .freshness import check


def status(con: duckdb.DuckDBPyConnection, db_path: Path) -> dict[str, Any]:
    """Summary of the loaded quarters and the raw layer, as plain data (for table or JSON)."""
    count_cols = ", ".join(
        f"(SELECT count(*) FROM {raw_table(t)} r WHERE r.quarter = q.quarter) AS n_{t}_rows"  # noqa: S608
        for t in TABLES
    )
    quarters = con.execute(
        f"""SELECT q.quarter, q.era, q.source, q.zip_name, q.zip_sha256, q.synthetic,
            CAST(q.loaded_at AS VARCHAR) AS loaded_at, {count_cols},
            (SELECT count(*) FROM raw_deleted r WHERE r.quarter = q.quarter) AS n_deleted_caseids,
            (SELECT count(*) FROM quarantine x WHERE x.quarter = q.quarter) AS n_quarantined_rows
        FROM quarters q ORDER BY q.quarter"""  # noqa: S608 - identifiers from TABLES
    ).fetchdf()
    size = db_path.stat().st_size if db_path.exists() else 0
    wal = db_path.with_name(db_path.name + ".wal")
    if wal.exists():
        size += wal.stat().st_size
    tables = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    dedup = (
        con.execute(
            "SELECT step, n_reports, n_cases, dedup_mode FROM dedup_log ORDER BY step_order"
        ).fetchdf()
        if "dedup_log" in tables
        else None
    )
    substances = (
        con.execute(
            "SELECT substance, version, n_drug_rows, n_cases FROM substance_runs ORDER BY substance"
        ).fetchdf()
        if "substance_runs" in tables
        else None
    )
    try:
        stale = check(con, builtin_term_files())
        derived = "current" if stale is None else stale.refusal
    except NoDataError:
        derived = "nothing loaded"
    reason = full_rebuild_reason(con)
    return {
        "database": str(db_path),
        "derived_tables": derived,
        "next_load_rebuild": "incremental" if reason is None else f"full ({reason})",
        "database_bytes": size,
        "n_quarters": len(quarters),
        "quarters": quarters.to_dict(orient="records"),
        "dedup_steps": [] if dedup is None else dedup.to_dict(orient="records"),
        "substances": [] if substances is None else substances.to_dict(orient="records"),
    }

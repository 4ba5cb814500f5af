"""Opening the DuckDB database and creating its schema.

Every command goes through `connect`, which maps DuckDB's lock and I/O failures onto one-line
`DatabaseError`s and makes sure the schema exists. The raw layer's columns come from
`faers_format.CANONICAL`, so the schema and the ingest column maps cannot drift apart.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import duckdb

from .errors import DatabaseError
from .faers_format import CANONICAL, TABLES

SCHEMA_VERSION = 1
DEFAULT_DB = Path("data") / "surveillance.duckdb"


_FIXED_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS quarters (
        quarter VARCHAR PRIMARY KEY, era VARCHAR NOT NULL, source VARCHAR NOT NULL,
        zip_path VARCHAR NOT NULL, zip_name VARCHAR NOT NULL, zip_sha256 VARCHAR NOT NULL,
        zip_bytes BIGINT NOT NULL, synthetic BOOLEAN NOT NULL, tool_version VARCHAR NOT NULL,
        loaded_at TIMESTAMP NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS load_log (
        quarter VARCHAR NOT NULL, file VARCHAR NOT NULL, table_name VARCHAR NOT NULL,
        zip_sha256 VARCHAR NOT NULL, rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL,
        rows_quarantined BIGINT NOT NULL, tool_version VARCHAR NOT NULL,
        loaded_at TIMESTAMP NOT NULL, warning VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS quarantine (
        quarter VARCHAR NOT NULL, source VARCHAR NOT NULL, file VARCHAR NOT NULL,
        table_name VARCHAR NOT NULL, line_number BIGINT NOT NULL, raw_text VARCHAR NOT NULL,
        reason VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS raw_deleted (
        source VARCHAR NOT NULL, quarter VARCHAR NOT NULL, source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL, caseid VARCHAR NOT NULL)""",
)


def raw_table(table: str) -> str:
    """Name of the raw-layer table for a FAERS table ('drug' -> 'raw_drug')."""
    if table not in TABLES:
        raise ValueError(f"unknown FAERS table {table!r}")
    return f"raw_{table}"


def _raw_ddl(table: str) -> str:
    cols = ", ".join(f"{c} VARCHAR" for c in CANONICAL[table])
    return (
        f"CREATE TABLE IF NOT EXISTS {raw_table(table)} (source VARCHAR NOT NULL, "
        f"quarter VARCHAR NOT NULL, source_file VARCHAR NOT NULL, source_line BIGINT NOT NULL, "
        f"{cols})"
    )


def default_path() -> Path:
    """The database path: $SURVEILLANCE_DB if set, else data/surveillance.duckdb."""
    return Path(os.environ.get("SURVEILLANCE_DB") or DEFAULT_DB)


def connect(
    path: str | Path | None = None, *, read_only: bool = False
) -> duckdb.DuckDBPyConnection:
    """Open the database (creating it and its schema unless read_only), with one-line errors."""
    db_path = Path(path) if path is not None else default_path()
    if read_only and not db_path.exists():
        raise DatabaseError(f"{db_path}: no such database; run 'surveillance load' first")
    if not read_only:
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseError(f"{db_path}: cannot create its folder: {e.strerror}") from e
    try:
        con = duckdb.connect(str(db_path), read_only=read_only)
    except duckdb.Error as e:
        raise DatabaseError(_explain_open_error(db_path, e)) from e
    con.execute("SET enable_progress_bar = false")
    if not read_only:
        ensure_schema(con)
    return con


def _explain_open_error(db_path: Path, e: Exception) -> str:
    text = str(e)
    if "lock" in text.lower():
        pid = re.search(r"PID (\d+)", text)
        who = f" (PID {pid.group(1)})" if pid else ""
        return f"{db_path}: database is locked by another process{who}; try again when it finishes"
    first = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"{db_path}: cannot open database: {first}"


def _columns(con: duckdb.DuckDBPyConnection, table: str, temporary: bool) -> list[str]:
    rows = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE table_name = $t AND schema_name = 'main' "
        "AND database_name = CASE WHEN $tmp THEN 'temp' ELSE current_database() END "
        "ORDER BY column_index",
        {"t": table, "tmp": temporary},
    ).fetchall()
    return [r[0] for r in rows]


def ensure_derived_table(con: duckdb.DuckDBPyConnection, ddl: str) -> None:
    """Create a derived table from its `CREATE TABLE IF NOT EXISTS name (...)` statement.

    Derived tables (clean-layer logs, substance hits, signals) can always be rebuilt, so one
    left by an older version of the tool with other columns is dropped and created anew."""
    match = re.match(r"\s*CREATE TABLE IF NOT EXISTS (\w+) \(", ddl)
    if match is None:
        raise ValueError(f"not a CREATE TABLE IF NOT EXISTS statement: {ddl[:60]}")
    name = match.group(1)
    probe = ddl.replace(match.group(0), "CREATE OR REPLACE TEMP TABLE _ddl_probe (", 1)
    con.execute(probe)
    expected = _columns(con, "_ddl_probe", temporary=True)
    con.execute("DROP TABLE _ddl_probe")
    found = _columns(con, name, temporary=False)
    if found and found != expected:
        con.execute(f"DROP TABLE {name}")
    con.execute(ddl)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create every table that does not exist yet; refuse a database from a newer schema."""
    for ddl in (*_FIXED_DDL, *(_raw_ddl(t) for t in TABLES)):
        con.execute(ddl)
    row = con.execute("SELECT max(version) FROM schema_version").fetchone()
    found = row[0] if row else None
    if found is None:
        con.execute("INSERT INTO schema_version VALUES ($v)", {"v": SCHEMA_VERSION})
    elif found > SCHEMA_VERSION:
        raise DatabaseError(
            f"database schema version {found} is newer than this tool's ({SCHEMA_VERSION})"
        )

"""Opening the DuckDB database and creating or migrating its schema.

Every connection the tool opens goes through `connect` (the SQL sandbox through
`connection_config`): it refuses files that are not DuckDB databases before DuckDB reads them,
maps DuckDB's lock and I/O failures onto one-line `DatabaseError`s, never lets DuckDB install or
load an extension by itself, sets `memory_limit` and a `temp_directory` beside the database so
big work spills to disk, and creates or migrates the schema (`migrations.MIGRATIONS`). The raw
layer's columns come from `faers_format.CANONICAL`, so the schema and the ingest column maps
cannot drift apart.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import duckdb

from .errors import DatabaseError, UsageError
from .faers_format import CANONICAL, TABLES
from .migrations import LATEST, MIGRATIONS

SCHEMA_VERSION = LATEST
DEFAULT_DB = Path("data") / "surveillance.duckdb"
MEMORY_LIMIT_ENV = "SURVEILLANCE_MEMORY_LIMIT"
# DuckDB's own default is 80% of RAM. At most 4 GiB ran every step of the whole archive (91
# quarters, 17.9 M cases) with peak RSS under 4.8 GB, the first signals run's prior fit
# included (`make bench-archive`, 2026-11-30); work beyond the limit spills to the temp folder.
_RAM_SHARE = 0.5
_RAM_CAP_MIB = 4 * 1024
_MEMORY_LIMIT = re.compile(r"^\s*\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)\s*$", re.IGNORECASE)
_memory_override: ContextVar[str | None] = ContextVar("memory_limit_override", default=None)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_DUCKDB_MAGIC = b"DUCK"
_HEADER_BYTES = 3 * 4096  # the file header and two database headers before the first block


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


def check_memory_limit(text: str) -> str:
    """A DuckDB memory size such as '4GB' or '512MiB'; a UsageError for anything else."""
    if not _MEMORY_LIMIT.match(text):
        raise UsageError(f"memory limit {text!r}: give a size such as 4GB or 512MiB")
    return text.strip()


def default_memory_limit() -> str:
    """Half of the machine's memory, at most 4 GiB (1 GiB when the memory is unknown)."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return f"{_RAM_CAP_MIB // 4}MiB"
    return f"{min(int(ram * _RAM_SHARE) >> 20, _RAM_CAP_MIB)}MiB"


def memory_limit() -> str:
    """The memory limit of every connection: `memory_limit_override`, $SURVEILLANCE_MEMORY_LIMIT,
    else `default_memory_limit()`."""
    chosen = _memory_override.get() or os.environ.get(MEMORY_LIMIT_ENV)
    return check_memory_limit(chosen) if chosen else default_memory_limit()


@contextmanager
def memory_limit_override(limit: str | None) -> Iterator[None]:
    """Connections opened inside the block use `limit` (None: the usual choice)."""
    token = _memory_override.set(check_memory_limit(limit) if limit else None)
    try:
        yield
    finally:
        _memory_override.reset(token)


def temp_directory(db_path: Path) -> Path:
    """Where DuckDB spills work that does not fit in memory: `<db>.tmp` beside the database."""
    return db_path.with_name(db_path.name + ".tmp")


def connection_config(
    db_path: Path | None, memory: str | None = None, temp: Path | None = None
) -> dict[str, Any]:
    """The settings of every connection: no extension installed or loaded behind our back, a
    deliberate memory limit, and a temp folder (`temp_directory(db_path)` unless given; '' for
    none)."""
    if temp is None and db_path is not None:
        temp = temp_directory(db_path)
    return {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
        "memory_limit": memory or memory_limit(),
        "temp_directory": "" if temp is None else str(temp),
    }


def check_file(db_path: Path) -> None:
    """Refuse a file that is not a DuckDB database (empty, SQLite, anything else) by its header."""
    try:
        with db_path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise DatabaseError(f"{db_path}: cannot read the database: {e.strerror}") from e
    if not head:
        raise DatabaseError(f"{db_path}: empty file, not a DuckDB database")
    if head.startswith(_SQLITE_MAGIC):
        raise DatabaseError(f"{db_path}: a SQLite file, not a DuckDB database")
    if head[8:12] != _DUCKDB_MAGIC:
        raise DatabaseError(f"{db_path}: not a DuckDB database file")


def check_complete(con: duckdb.DuckDBPyConnection, db_path: Path) -> None:
    """Refuse a database file too short to hold the blocks in use (a truncated copy).

    Each used block has its own place in the file, so the file holds at least that many; free
    blocks at the end may be cut off by a checkpoint, so they are not counted. Skipped while a
    write-ahead log exists, whose replay may name blocks not yet written."""
    if db_path.with_name(db_path.name + ".wal").exists():
        return
    row = con.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()
    if row is None:
        return
    expected = _HEADER_BYTES + int(row[0]) * int(row[1])
    found = db_path.stat().st_size
    if found < expected:
        raise DatabaseError(
            f"{db_path}: truncated database file ({found:,} of {expected:,} bytes); "
            "restore it from a backup or load the quarters into a new one"
        )


def connect(
    path: str | Path | None = None, *, read_only: bool = False, create: bool = True
) -> duckdb.DuckDBPyConnection:
    """Open the database (creating it unless read_only or not create; creating or migrating its
    schema unless read_only), with one-line errors."""
    db_path = Path(path) if path is not None else default_path()
    if not db_path.exists():
        if read_only or not create:
            raise DatabaseError(f"no database at {db_path}; load quarters first or pass --db")
        try:
            db_path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DatabaseError(f"{db_path}: cannot create its folder: {e.strerror}") from e
    else:
        check_file(db_path)
    try:
        con = duckdb.connect(str(db_path), read_only=read_only, config=connection_config(db_path))
    except duckdb.Error as e:
        raise DatabaseError(_explain_open_error(db_path, e)) from e
    try:
        con.execute("SET enable_progress_bar = false")
        check_complete(con, db_path)
        if read_only:
            check_schema_version(con, db_path)
        else:
            ensure_schema(con, db_path)
    except BaseException:
        con.close()
        raise
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


def schema_version(con: duckdb.DuckDBPyConnection) -> int | None:
    """The database's schema version (None: no schema yet)."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = 'schema_version' "
        "AND schema_name = 'main' AND database_name = current_database()"
    ).fetchone()
    if not row or not row[0]:
        return None
    found = con.execute("SELECT max(version) FROM schema_version").fetchone()
    return int(found[0]) if found and found[0] is not None else None


def _newer(db_path: Path | None, found: int) -> DatabaseError:
    where = f"{db_path}: " if db_path is not None else ""
    return DatabaseError(
        f"{where}database schema version {found} is newer than this tool ({SCHEMA_VERSION}); "
        "upgrade kratom-surveillance"
    )


def check_schema_version(con: duckdb.DuckDBPyConnection, db_path: Path | None = None) -> None:
    """On a read-only connection: refuse a schema this tool cannot read as it is."""
    found = schema_version(con)
    if found is None or found == SCHEMA_VERSION:
        return
    if found > SCHEMA_VERSION:
        raise _newer(db_path, found)
    where = f"{db_path}: " if db_path is not None else ""
    raise DatabaseError(
        f"{where}database schema version {found} is older than this tool ({SCHEMA_VERSION}); "
        "run 'surveillance rebuild' once to migrate it"
    )


def ensure_schema(con: duckdb.DuckDBPyConnection, db_path: Path | None = None) -> None:
    """Create every table that does not exist yet and apply the migrations a database lacks;
    refuse a database from a newer schema."""
    found = schema_version(con)
    if found is not None and found > SCHEMA_VERSION:
        raise _newer(db_path, found)
    for ddl in (*_FIXED_DDL, *(_raw_ddl(t) for t in TABLES)):
        con.execute(ddl)
    if found is None:
        con.execute("INSERT INTO schema_version VALUES ($v)", {"v": SCHEMA_VERSION})
        return
    for migration in MIGRATIONS:
        if migration.version <= found:
            continue
        con.execute("BEGIN TRANSACTION")
        try:
            for statement in migration.statements:
                con.execute(statement)
            con.execute("INSERT INTO schema_version VALUES ($v)", {"v": migration.version})
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

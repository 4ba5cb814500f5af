"""Analysis-ready Parquet of the clean layer and the substance matches, and reading it back.

`export_parquet` reads the clean layer (`cases` and its child tables), `substance_hits` and the
small lookup and provenance tables, and writes `DIR/<table>/quarter=<YYYYQN>/data_0.parquet`
(hive partitions by the quarter of each case's surviving version) and `DIR/<table>.parquet`,
with `DIR/manifest.json` naming every file, its rows and sha256. It writes into
`DIR.partial-<pid>` and renames that into place, so a failure leaves nothing. `open_export`
checks an export against its manifest and opens it as an in-memory DuckDB with one view per table.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from . import __version__
from .clean import _MACROS as _CLEAN_MACROS
from .db import SCHEMA_VERSION, connection_config, schema_version
from .errors import DatabaseError, InputError, StaleDataError, SurveillanceError, UsageError
from .extract import _INVOLVED_CASES, builtin_term_files
from .freshness import check, clean_fingerprint, current_dedup, data_fingerprint
from .progress import Progress

MANIFEST = "manifest.json"
EXPORT_FORMAT = "kratom-surveillance parquet export"
EXPORT_VERSION = 1
PARTITION = "quarter"
# Partitioned by the quarter of the case's surviving version (cases.quarter).
CASE_TABLES = (
    "cases",
    "case_drugs",
    "case_reactions",
    "case_outcomes",
    "case_indications",
    "case_therapies",
    "substance_hits",
)
# Small lookup and provenance tables, one file each: what a reader needs to recompute signals
# (pt_terms, substance_strings) and to trace every row to its input (quarters, load_log, the
# dedup steps and the term files behind the matches).
LOOKUP_TABLES = (
    "quarters",
    "load_log",
    "pt_terms",
    "substance_strings",
    "substance_runs",
    "dedup_log",
)
_READ = "SELECT * FROM read_parquet($files, hive_partitioning = false)"
_READ_PARTITIONED = (
    "SELECT * FROM read_parquet($files, hive_partitioning = true, "
    "hive_types = {'quarter': 'VARCHAR'})"
)
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]*$")
_BLOCK = 1 << 20


def _source(table: str) -> str:
    """The rows of a table as exported: child tables get the quarter of their case."""
    if table == "cases" or table in LOOKUP_TABLES:
        return f"SELECT * FROM {table}"  # noqa: S608  (table: a constant of this module)
    return f"SELECT t.*, c.quarter FROM {table} t JOIN cases c ON c.caseid = t.caseid"  # noqa: S608


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _database_path(con: duckdb.DuckDBPyConnection) -> Path | None:
    rows = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchall()
    return Path(rows[0][0]).resolve() if rows and rows[0][0] else None


def check_destination(dest: Path, database: Path | None, force: bool) -> None:
    """Refuse a destination that is (or holds) the database, lies under a file, is a file, or
    is a non-empty folder (with `force`: one that is not an export)."""
    target = dest.resolve()
    if database is not None and (target == database or database.is_relative_to(target)):
        raise UsageError(f"{dest}: is or holds the database in use; choose another folder")
    for parent in (target, *target.parents):
        if parent.exists() and not parent.is_dir():
            what = "is a file" if parent == target else f"is inside {parent}, a file"
            raise UsageError(f"{dest}: {what}; give a folder")
    if not target.exists() or not any(target.iterdir()):
        return
    if not force:
        raise UsageError(f"{dest}: exists and is not empty; use --force to replace it")
    if not (target / MANIFEST).is_file():
        raise UsageError(f"{dest}: is not a Parquet export (no {MANIFEST}); will not replace it")


def _check_current(con: duckdb.DuckDBPyConnection) -> dict[str, Any]:
    """Refuse a stale clean layer or substance extraction; what the export was current with."""
    stale = check(con, builtin_term_files())
    if stale is not None:
        raise StaleDataError(stale.refusal)
    runs = con.execute(
        "SELECT substance, version, source_path, data_fingerprint FROM substance_runs "
        "ORDER BY substance"
    ).fetchall()
    return {
        "clean_layer": {"current": True, "raw_fingerprint": clean_fingerprint(con)},
        "substances": [
            {"substance": r[0], "version": r[1], "source_path": r[2], "data_fingerprint": r[3]}
            for r in runs
        ],
    }


def _columns(con: duckdb.DuckDBPyConnection, sql: str) -> list[dict[str, str]]:
    rel = con.sql(sql)
    return [{"name": n, "type": str(t)} for n, t in zip(rel.columns, rel.dtypes, strict=True)]


def _file_rows(con: duckdb.DuckDBPyConnection, files: list[Path]) -> list[int]:
    rows = con.execute(
        "SELECT file_name, num_rows FROM parquet_file_metadata($files)",
        {"files": [str(f) for f in files]},
    ).fetchall()
    found = {Path(name): int(n) for name, n in rows}
    return [found[f] for f in files]


def _write_table(
    con: duckdb.DuckDBPyConnection, table: str, root: Path
) -> tuple[dict[str, Any], list[Path]]:
    """Write one table; its manifest entry and its files."""
    sql = _source(table)
    # The table's own rows, not the join's: a child row without its case would be missed.
    # fetchall, not fetchone: the connection must hold no unfinished result before the write.
    expected = int(con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0])  # noqa: S608
    entry: dict[str, Any] = {"columns": _columns(con, sql)}
    if table in LOOKUP_TABLES:
        path = root / f"{table}.parquet"
        con.sql(sql).write_parquet(str(path))
        files = [path]
        entry |= {"path": path.name, "partitioned_by": None}
    else:
        folder = root / table
        folder.mkdir()
        if expected:
            con.sql(sql).write_parquet(str(folder), partition_by=[PARTITION])
        files = sorted(folder.rglob("*.parquet"))
        entry |= {"path": table, "partitioned_by": PARTITION, "partitions": []}
    counts = _file_rows(con, files) if files else []
    if sum(counts) != expected:
        raise DatabaseError(f"{table}: wrote {sum(counts):,} rows of {expected:,}")
    if table not in LOOKUP_TABLES:
        by_quarter: dict[str, dict[str, Any]] = {}
        for f, n in zip(files, counts, strict=True):
            quarter = f.parent.name.removeprefix(f"{PARTITION}=")
            part = by_quarter.setdefault(quarter, {PARTITION: quarter, "n_rows": 0, "files": []})
            part["n_rows"] += n
            part["files"].append(f.relative_to(root).as_posix())
        entry["partitions"] = [by_quarter[q] for q in sorted(by_quarter)]
    entry["n_rows"] = expected
    entry["files"] = [f.relative_to(root).as_posix() for f in files]
    return entry, files


def _raw_inputs(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """Each loaded quarter's zip name and the sha256 that load_log recorded for it."""
    rows = con.execute(
        """SELECT q.quarter, q.era, q.source, q.zip_name, q.synthetic,
            list_sort(list_distinct(list(l.zip_sha256))) AS zip_sha256
        FROM quarters q LEFT JOIN load_log l USING (quarter)
        GROUP BY ALL ORDER BY q.quarter"""
    ).fetchall()
    inputs = []
    for quarter, era, source, zip_name, synthetic, digests in rows:
        digest = digests[0] if len(digests) == 1 else digests
        inputs.append(
            {"quarter": quarter, "era": era, "source": source, "zip_name": zip_name}
            | {"zip_sha256": digest, "synthetic": bool(synthetic)}
        )
    return inputs


def export_parquet(
    con: duckdb.DuckDBPyConnection,
    dest: Path,
    force: bool = False,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Write the clean layer, the substance matches and the lookup tables as Parquet into
    `dest` (see the module docstring); return the manifest.

    Refuses a stale clean layer or extraction, and a `dest` that exists (unless `force`, which
    replaces a previous export whole). Nothing is left behind when it fails."""
    dest = Path(dest)
    check_destination(dest, _database_path(con), force)
    freshness = _check_current(con)
    say = progress or (lambda _message: None)
    target = dest.resolve()
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir(parents=True)
        tables: dict[str, Any] = {}
        written: list[Path] = []
        for table in (*CASE_TABLES, *LOOKUP_TABLES):
            say(f"exporting {table}")
            tables[table], files = _write_table(con, table, partial)
            written.extend(files)
        say("checksums")
        manifest = _manifest(con, tables, freshness, partial, written)
        (partial / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        _replace(partial, target)
    except BaseException as e:
        shutil.rmtree(partial, ignore_errors=True)
        if isinstance(e, duckdb.Error | OSError):
            message = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            first = message.strip().splitlines()[0] if message.strip() else type(e).__name__
            raise SurveillanceError(f"{dest}: cannot write the export: {first}") from e
        raise
    return manifest


def _manifest(
    con: duckdb.DuckDBPyConnection,
    tables: dict[str, Any],
    freshness: dict[str, Any],
    root: Path,
    written: Iterable[Path],
) -> dict[str, Any]:
    synthetic = con.execute("SELECT coalesce(bool_or(synthetic), false) FROM quarters").fetchall()
    return {
        "format": EXPORT_FORMAT,
        "export_version": EXPORT_VERSION,
        "schema_version": schema_version(con),
        "tool_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dedup_mode": current_dedup(con),
        "data_fingerprint": data_fingerprint(con),
        "synthetic": bool(synthetic[0][0]),
        "freshness": freshness,
        "quarters": _raw_inputs(con),
        "tables": tables,
        "files": {
            f.relative_to(root).as_posix(): {"sha256": _sha256(f), "bytes": f.stat().st_size}
            for f in written
        },
    }


def _replace(partial: Path, target: Path) -> None:
    """Move the finished export into place; a previous one (or an empty folder) is replaced."""
    if not target.exists():
        partial.rename(target)
        return
    old = target.with_name(f"{target.name}.old-{os.getpid()}")
    target.rename(old)
    try:
        partial.rename(target)
    except BaseException:
        old.rename(target)
        raise
    shutil.rmtree(old)


def summary(manifest: dict[str, Any], dest: Path) -> str:
    """One line on what an export holds: tables, rows, bytes and where."""
    n_rows = sum(t["n_rows"] for t in manifest["tables"].values())
    n_bytes = sum(f["bytes"] for f in manifest["files"].values())
    return (
        f"exported {len(manifest['tables'])} tables, {n_rows:,} rows, "
        f"{n_bytes / 1e6:,.1f} MB -> {dest}"
    )


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an export, checked for format and schema version."""
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise InputError(path, "no manifest; not a Parquet export of this tool")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(path, f"not a valid manifest ({e})") from e
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise InputError(path, "not a manifest of a Parquet export of this tool")
    if manifest.get("export_version") != EXPORT_VERSION:
        raise InputError(path, f"export version {manifest.get('export_version')!r} not supported")
    found = manifest.get("schema_version")
    if not isinstance(found, int) or not 1 <= found <= SCHEMA_VERSION:
        raise InputError(
            path, f"schema version {found!r} not supported (this tool: 1 to {SCHEMA_VERSION})"
        )
    return manifest


def _member(folder: Path, name: str) -> Path:
    """A file named in the manifest, which must lie inside the export folder."""
    path = (folder / name).resolve()
    if Path(name).is_absolute() or not path.is_relative_to(folder):
        raise InputError(folder / MANIFEST, f"names a file outside the export: {name!r}")
    return path


def verify(folder: Path, manifest: dict[str, Any]) -> None:
    """Every file of the manifest present with its size and sha256, and no other file."""
    folder = Path(folder).resolve()
    listed = {_member(folder, name): entry for name, entry in manifest["files"].items()}
    for path, entry in listed.items():
        if not path.is_file():
            raise InputError(path, "missing from the export")
        if path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
            raise InputError(path, "does not match the manifest's sha256 (modified or truncated)")
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST and path not in listed:
            raise InputError(path, "not in the manifest; remove it or export again")


def open_export(folder: str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with one view per exported table (columns as in the database),
    after checking every file against the manifest, with the project's SQL macros."""
    folder = Path(folder).resolve()
    manifest = read_manifest(folder)
    # Spill into a folder of the system's own, not the export's (which may be read-only); DuckDB
    # creates it only when it spills and removes it when the connection closes.
    spill = Path(tempfile.gettempdir()) / f"surveillance-export-{uuid.uuid4().hex}"
    con = duckdb.connect(config=connection_config(None, temp=spill))
    try:
        verify(folder, manifest)
        con.execute("SET enable_progress_bar = false")
        for table, entry in manifest["tables"].items():
            _view(con, folder, table, entry)
        _install_macros(con)
    except (KeyError, TypeError, AttributeError, ValueError, duckdb.Error) as e:
        con.close()
        first = (str(e).strip().splitlines() or [""])[0]
        raise InputError(
            folder / MANIFEST, f"malformed manifest ({type(e).__name__}: {first})"
        ) from e
    except BaseException:
        con.close()
        raise
    return con


def _view(con: duckdb.DuckDBPyConnection, folder: Path, table: str, entry: dict[str, Any]) -> None:
    names = [c["name"] for c in entry["columns"]]
    for name in (table, *names):
        if not _IDENTIFIER.match(name):
            raise InputError(folder / MANIFEST, f"not a table or column name: {name!r}")
    files = [str(_member(folder, f)) for f in entry["files"]]
    if files:
        rel = con.sql(
            _READ_PARTITIONED if entry["partitioned_by"] else _READ, params={"files": files}
        )
    else:
        # An empty partitioned table has no file: its columns come from the manifest's types.
        types = {c["name"]: duckdb.sqltype(c["type"]) for c in entry["columns"]}
        rel = con.sql("SELECT 1 WHERE false").select(
            *[duckdb.ConstantExpression(None).cast(t).alias(n) for n, t in types.items()]
        )
    rel.select(*[duckdb.ColumnExpression(n) for n in names]).create_view(table)


def _install_macros(con: duckdb.DuckDBPyConnection) -> None:
    """The clean layer's macros and `involved_cases`; the as-of macros that read the raw
    layer (not exported) cannot be created and are left out."""
    for macro in (*_CLEAN_MACROS, _INVOLVED_CASES):
        try:
            con.execute(macro)
        except duckdb.CatalogException:
            continue

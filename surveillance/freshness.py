"""Fingerprints of every layer and the one check that they form an unbroken chain.

raw (`quarters`: each quarter and its zip's sha256) -> clean (`dedup_log.raw_fingerprint`, written
in the rebuild's transaction) -> extraction (`substance_runs.data_fingerprint`, per substance and
term-file version) -> signals (`signal_runs.data_fingerprint`) -> report (`metadata.json`).
A derived result is shown only when it is current with the data it came from; `check` says
which layer is behind so that callers can rebuild it (read-write) or refuse (read-only).
Reads only; never imports the stages that build the layers.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass

import duckdb

from .errors import DatabaseError, NoDataError


@dataclass(frozen=True)
class Staleness:
    """A derived layer that is older than what it was built from, and what to say about it."""

    layer: str
    refusal: str
    repaired: str


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database (not the temp schema) has a table of this name."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $n AND schema_name = 'main' "
        "AND database_name = current_database()",
        {"n": name},
    ).fetchone()
    return bool(row and row[0])


def has_temp_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether this connection has a temp table of this name (a marker it left for itself)."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = $n", {"n": name}
    ).fetchone()
    return bool(row and row[0])


def _has_column(con: duckdb.DuckDBPyConnection, table: str, column: str) -> bool:
    row = con.execute(
        "SELECT count(*) FROM duckdb_columns() WHERE table_name = $t AND column_name = $c "
        "AND schema_name = 'main' AND database_name = current_database()",
        {"t": table, "c": column},
    ).fetchone()
    return bool(row and row[0])


def quarters_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """sha256 over every loaded quarter and its zip's sha256: names the raw layer's vintage."""
    rows = con.execute("SELECT quarter, zip_sha256 FROM quarters ORDER BY quarter").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def current_dedup(con: duckdb.DuckDBPyConnection) -> str:
    """The dedup mode of the last rebuild ('fda' if there was none)."""
    if not has_table(con, "dedup_log"):
        return "fda"
    row = con.execute("SELECT any_value(dedup_mode) FROM dedup_log").fetchone()
    return str(row[0]) if row and row[0] else "fda"


def clean_fingerprint(con: duckdb.DuckDBPyConnection) -> str | None:
    """The raw fingerprint the clean layer was rebuilt from (None: never rebuilt)."""
    if not has_table(con, "dedup_log"):
        return None
    row = con.execute("SELECT any_value(raw_fingerprint) FROM dedup_log").fetchone()
    return str(row[0]) if row and row[0] else None


def clean_is_current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the clean layer was rebuilt from exactly the quarters now loaded.

    False after a run that loaded quarters but was killed before its rebuild finished."""
    return clean_fingerprint(con) == quarters_fingerprint(con)


def _dedup_mode(con: duckdb.DuckDBPyConnection) -> str | None:
    if not has_table(con, "dedup_log"):
        return None
    row = con.execute("SELECT any_value(dedup_mode) FROM dedup_log").fetchone()
    return row[0] if row else None


def _vintage(raw_fingerprint: str | None, mode: str | None) -> str:
    return hashlib.sha256(json.dumps([raw_fingerprint, mode]).encode()).hexdigest()


def data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """sha256 over the loaded quarters' zip checksums and the dedup mode: the data vintage."""
    return _vintage(quarters_fingerprint(con), _dedup_mode(con))


def quarter_fingerprints(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Per loaded quarter, in order, the data vintage of the quarters up to it (the last is
    `data_fingerprint`): what depends only on data up to a quarter stays valid while its holds."""
    rows = con.execute("SELECT quarter, zip_sha256 FROM quarters ORDER BY quarter").fetchall()
    mode = _dedup_mode(con)
    return [
        _vintage(hashlib.sha256(repr(rows[: i + 1]).encode()).hexdigest(), mode)
        for i in range(len(rows))
    ]


def clean_data_fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """The data vintage the clean layer was last rebuilt at (equals `data_fingerprint` while the
    clean layer is current); extractions matched against it need only the changed cases."""
    return _vintage(clean_fingerprint(con), _dedup_mode(con))


def extraction_is_current(
    con: duckdb.DuckDBPyConnection, name: str, version: str, source_path: str
) -> bool:
    """Whether the stored hits of a substance come from this term file and the current data."""
    return extraction_matches(con, name, version, source_path, data_fingerprint(con))


def extraction_matches(
    con: duckdb.DuckDBPyConnection, name: str, version: str, source_path: str, fingerprint: str
) -> bool:
    """Whether the stored hits of a substance come from this term file and that data vintage."""
    if not _has_column(con, "substance_runs", "data_fingerprint"):
        return False
    row = con.execute(
        "SELECT version, source_path, data_fingerprint FROM substance_runs WHERE substance = $s",
        {"s": name},
    ).fetchone()
    return row == (version, source_path, fingerprint)


def stale_extractions(
    con: duckdb.DuckDBPyConnection, builtins: Mapping[str, tuple[str, str]]
) -> list[str]:
    """Substances whose stored hits were built on other data; for the built-ins (name ->
    (version, source_path) of their term files) also missing hits or another term file."""
    if not has_table(con, "substance_runs"):
        return sorted(builtins)
    if not _has_column(con, "substance_runs", "data_fingerprint"):
        stored = [r[0] for r in con.execute("SELECT substance FROM substance_runs").fetchall()]
        return sorted({*stored, *builtins})
    rows = {
        r[0]: (r[1], r[2], r[3])
        for r in con.execute(
            "SELECT substance, version, source_path, data_fingerprint FROM substance_runs"
        ).fetchall()
    }
    current = data_fingerprint(con)
    stale = {name for name, row in rows.items() if row[2] != current}
    stale |= {name for name, term_file in builtins.items() if rows.get(name, ())[:2] != term_file}
    return sorted(stale)


def _loaded_since(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Quarters loaded (or replaced) after the clean layer's last rebuild."""
    if not has_table(con, "dedup_log"):
        return [r[0] for r in con.execute("SELECT quarter FROM quarters ORDER BY 1").fetchall()]
    rows = con.execute(
        "SELECT quarter FROM quarters WHERE loaded_at > "
        "(SELECT coalesce(max(rebuilt_at), TIMESTAMP '1970-01-01') FROM dedup_log) ORDER BY 1"
    ).fetchall()
    return [r[0] for r in rows]


def check(
    con: duckdb.DuckDBPyConnection, builtins: Mapping[str, tuple[str, str]]
) -> Staleness | None:
    """The first layer of the chain that is older than what it was built from, or None.

    `builtins` names the built-in substances' term files: name -> (version, source_path).
    Raises NoDataError when no quarter is loaded (there is nothing to show)."""
    if not has_table(con, "quarters"):
        raise DatabaseError("the database has no FAERS schema; load quarters into it first")
    row = con.execute("SELECT count(*) FROM quarters").fetchone()
    if not row or not row[0]:
        raise NoDataError("no quarters loaded; run 'surveillance load' first")
    if not clean_is_current(con):
        since = _loaded_since(con)
        what = f" ({', '.join(since)} loaded since)" if since else ""
        return Staleness(
            "clean",
            f"the clean layer is older than the loaded quarters{what}; run 'surveillance rebuild'",
            "clean layer was older than the loaded quarters; rebuilt",
        )
    stale = stale_extractions(con, builtins)
    if stale:
        names = ", ".join(stale)
        return Staleness(
            "extraction",
            f"the substance matches ({names}) are older than the clean layer or their term "
            "file; run 'surveillance rebuild'",
            f"substance matches ({names}) were older than the clean layer or their term file; "
            "extracted again",
        )
    return None

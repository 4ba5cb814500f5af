"""Named SQL in `queries/*.sql`, run with bound parameters.

Each file opens with a comment header that `parse_header` reads:

    -- name: kratom_cases_by_quarter
    -- description: one line on what it returns
    -- param: substance VARCHAR = 'kratom'   -- what it is
    -- param: through VARCHAR = NULL
    -- counts: what one unit of the result counts

Parameters are bound with DuckDB's named parameters ($substance), never pasted into the text.
The folder ships inside the wheel as `surveillance/queries`; from a source checkout it is the
repository's `queries/`.

Ad hoc SQL (`run_sql`) runs on a connection of its own that cannot change anything: the file is
opened read-only, with access to every other file and extension disabled, no temp folder (so
nothing spills where a statement could list or write it), a memory cap and a statement timeout of
its own, and the configuration locked, so a statement can neither write nor turn those settings
back on. `schema` lists the
tables and columns that SQL can read, described from `schema_docs`.
"""

from __future__ import annotations

import math
import os
import re
import textwrap
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from . import schema_docs
from .db import (
    MEMORY_LIMIT_ENV,
    _explain_open_error,
    check_complete,
    check_file,
    connection_config,
    memory_limit,
)
from .db import _memory_override as _memory_override
from .errors import DatabaseError, LimitError, UsageError

PARAM_TYPES: dict[str, type] = {
    "VARCHAR": str,
    "INTEGER": int,
    "BIGINT": int,
    "DOUBLE": float,
    "BOOLEAN": bool,
}
_PARAM = re.compile(
    r"^--\s*param:\s*(?P<name>[a-z_][a-z0-9_]*)\s+(?P<type>[A-Z]+)"
    r"(?:\s*=\s*(?P<default>'[^']*'|[^\s-]+))?\s*(?:--\s*(?P<help>.*))?$"
)


@dataclass(frozen=True)
class Param:
    """One declared query parameter."""

    name: str
    type: str
    default: Any
    required: bool
    help: str


@dataclass(frozen=True)
class NamedQuery:
    """A query file: its header and its SQL text."""

    name: str
    description: str
    params: tuple[Param, ...]
    counts: str
    sql: str
    path: str


def queries_dir() -> Path:
    """The folder holding the query files (inside the wheel, or the source checkout's)."""
    packaged = resources.files("surveillance") / "queries"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parent.parent / "queries"


def _convert(value: str, type_name: str, where: str) -> Any:
    if value.upper() == "NULL":
        return None
    if type_name == "VARCHAR":
        return value[1:-1] if value.startswith("'") and value.endswith("'") else value
    if type_name == "BOOLEAN":
        if value.lower() in ("true", "1", "yes"):
            return True
        if value.lower() in ("false", "0", "no"):
            return False
        raise UsageError(f"{where}: expected true or false, got {value!r}")
    try:
        return PARAM_TYPES[type_name](value)
    except ValueError as e:
        raise UsageError(f"{where}: expected {type_name}, got {value!r}") from e


def parse_header(text: str, path: str) -> NamedQuery:
    """Read a query file's header comment; raise UsageError naming the file if it is malformed."""
    fields: dict[str, str] = {}
    params: list[Param] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.startswith("--"):
            break
        if m := _PARAM.match(line.strip()):
            type_name = m["type"]
            if type_name not in PARAM_TYPES:
                raise UsageError(f"{path}, line {number}: unknown parameter type {type_name}")
            default = m["default"]
            params.append(
                Param(
                    m["name"],
                    type_name,
                    None if default is None else _convert(default, type_name, path),
                    default is None,
                    (m["help"] or "").strip(),
                )
            )
        elif m := re.match(r"^--\s*(name|description|counts):\s*(.*)$", line.strip()):
            fields[m[1]] = m[2].strip()
        elif line.strip().startswith("-- param"):
            raise UsageError(f"{path}, line {number}: malformed parameter declaration")
    for key in ("name", "description", "counts"):
        if not fields.get(key):
            raise UsageError(f"{path}: header lacks '-- {key}:'")
    return NamedQuery(
        fields["name"], fields["description"], tuple(params), fields["counts"], text, path
    )


@cache
def named_queries() -> dict[str, NamedQuery]:
    """Every query file, by name."""
    found: dict[str, NamedQuery] = {}
    for path in sorted(queries_dir().glob("*.sql")):
        q = parse_header(path.read_text(encoding="utf-8"), str(path))
        if q.name != path.stem:
            raise UsageError(f"{path}: header name {q.name!r} differs from the file name")
        found[q.name] = q
    return found


def get_query(name: str) -> NamedQuery:
    """One named query, or a UsageError listing what exists."""
    queries = named_queries()
    if name not in queries:
        raise UsageError(f"no query named {name!r}; see 'surveillance query --list'")
    return queries[name]


def bind(query: NamedQuery, given: dict[str, Any]) -> dict[str, Any]:
    """Check given values against the declared parameters and convert text to their types."""
    declared = {p.name: p for p in query.params}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise UsageError(
            f"query {query.name}: unknown parameter(s) {', '.join(unknown)}; "
            f"it takes {', '.join(declared) or 'none'}"
        )
    bound: dict[str, Any] = {}
    for p in query.params:
        if p.name in given:
            value = given[p.name]
            where = f"query {query.name}, parameter {p.name}"
            bound[p.name] = _convert(value, p.type, where) if isinstance(value, str) else value
        elif p.required:
            raise UsageError(f"query {query.name}: missing parameter {p.name} ({p.type})")
        else:
            bound[p.name] = p.default
    return bound


def run_query(con: duckdb.DuckDBPyConnection, name: str, /, **params: Any) -> pd.DataFrame:
    """Run a named query with bound parameters and return its rows.

    `name` is positional-only so that a query may declare a parameter called `name`."""
    query = get_query(name)
    bound = bind(query, params)
    used = {k: v for k, v in bound.items() if f"${k}" in query.sql}
    try:
        return con.execute(query.sql, used).fetchdf()
    except duckdb.Error as e:
        raise UsageError(f"query {name}: {str(e).splitlines()[0]}") from e


def params_from_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The `-p NAME VALUE` pairs of the command line as a dict; a name given twice is an error."""
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise UsageError(f"parameter {name} given twice")
        params[name] = value
    return params


def describe_queries(width: int = 80) -> str:
    """Every named query with its description, what it counts and its parameters, as text."""
    indent = " " * 4
    blocks = []
    for q in named_queries().values():
        lines = [textwrap.fill(f"{q.name}: {q.description}", width, subsequent_indent=indent)]
        lines.append(
            textwrap.fill(
                f"counts: {q.counts}", width, initial_indent=indent, subsequent_indent=indent * 2
            )
        )
        for p in q.params:
            default = "required" if p.required else f"default {_sql_literal(p.default)}"
            text = f"-p {p.name} {p.type} ({default}){': ' + p.help if p.help else ''}"
            lines.append(
                textwrap.fill(text, width, initial_indent=indent, subsequent_indent=indent * 2)
            )
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _sql_literal(value: Any) -> str:
    """A declared default as the header spells it (NULL, 'text', 10), for the listing only."""
    if value is None:
        return "NULL"
    return f"'{value}'" if isinstance(value, str) else str(value).lower()


# Read-only by construction (STYLE 6). External access is refused from the creation of the
# database instance, not with SET afterwards: in one process DuckDB shares an instance between
# connections to the same file, so a SET would also restrict the caller's other connections;
# with a config of its own the sandbox gets an instance of its own or is refused (see
# _open_sandbox). Session settings come next, then the lock that freezes them all.
# DuckDB lets a connection read and write its temp folder even with external access off, so the
# sandbox has none: a statement that outgrows SQL_MEMORY_LIMIT fails instead of spilling.
_SANDBOX_CONFIG: dict[str, Any] = {"enable_external_access": False}
SQL_TIMEOUT = 60.0
SQL_MEMORY_LIMIT = "1GiB"
_SANDBOX_SETTINGS = ("SET enable_progress_bar = false", "SET lock_configuration = true")
_VECTOR_ROWS = 2048


def _one_statement(text: str) -> duckdb.Statement:
    """The single statement in `text`; a UsageError for none, several, or a syntax error."""
    try:
        statements = duckdb.extract_statements(text)
    except duckdb.Error as e:
        raise UsageError(f"sql: {_first_line(e)}") from e
    if not statements:
        raise UsageError("sql: no SQL statement given")
    if len(statements) > 1:
        raise UsageError(f"sql: one statement at a time, got {len(statements)}")
    return statements[0]


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def sql_memory_limit() -> str:
    """The sandbox's memory cap: SQL_MEMORY_LIMIT unless --memory-limit or
    $SURVEILLANCE_MEMORY_LIMIT names one."""
    chosen = _memory_override.get() or os.environ.get(MEMORY_LIMIT_ENV)
    return memory_limit() if chosen else SQL_MEMORY_LIMIT


def _open_sandbox(db_path: Path) -> duckdb.DuckDBPyConnection:
    """A read-only connection that cannot reach other files, extensions or its own settings."""
    if not db_path.exists():
        raise DatabaseError(f"no database at {db_path}; load quarters first or pass --db")
    check_file(db_path)
    # DuckDB applies the settings in order and refuses a temp_directory that comes after
    # enable_external_access = false, so the sandbox's own settings go first.
    config = {**_SANDBOX_CONFIG, **connection_config(None, memory=sql_memory_limit())}
    try:
        con = duckdb.connect(str(db_path), read_only=True, config=config)
    except duckdb.ConnectionException as e:
        if "different configuration" not in str(e):
            raise DatabaseError(_explain_open_error(db_path, e)) from e
        raise DatabaseError(
            f"{db_path}: this process already has the database open; close that connection "
            "(Database.close()) before running ad hoc SQL"
        ) from e
    except duckdb.Error as e:
        raise DatabaseError(_explain_open_error(db_path, e)) from e
    try:
        check_complete(con, db_path)
        for setting in _SANDBOX_SETTINGS:
            con.execute(setting)
    except BaseException:
        con.close()
        raise
    return con


def run_sql(
    db_path: str | Path, text: str, limit: int | None = None, timeout: float | None = None
) -> pd.DataFrame:
    """Run one ad hoc SQL statement on a sandboxed read-only connection and return its rows.

    With `limit`, at most that many rows are fetched (the rest is never read) and
    `frame.attrs["truncated"]` tells whether rows were left out. The statement is interrupted
    after `timeout` seconds (default SQL_TIMEOUT) and may use `sql_memory_limit()`; either
    limit raises a LimitError. Other errors, including any attempt to write, become a
    UsageError with DuckDB's first message line. While another process has the database open
    for writing (a load), DuckDB's file lock refuses the connection: a DatabaseError naming
    that process."""
    if limit is not None and limit < 1:
        raise UsageError("sql: the row limit must be at least 1")
    seconds = SQL_TIMEOUT if timeout is None else timeout
    if not seconds > 0:
        raise UsageError("sql: the timeout must be more than 0 seconds")
    statement = _one_statement(text)
    with _open_sandbox(Path(db_path)) as con:
        timer = threading.Timer(seconds, con.interrupt)
        timer.daemon = True
        timer.start()
        try:
            con.execute(statement)
            if limit is None:
                return con.fetchdf()
            return _head(con, limit)
        except duckdb.InterruptException as e:
            raise LimitError(
                f"sql: statement cancelled after {seconds:g} s (--timeout to allow more)"
            ) from e
        except duckdb.OutOfMemoryException as e:
            raise LimitError(
                f"sql: the statement needs more than its memory cap ({sql_memory_limit()}; "
                "--memory-limit to allow more)"
            ) from e
        except duckdb.Error as e:
            raise UsageError(f"sql: {_first_line(e)}") from e
        finally:
            timer.cancel()


def _head(con: duckdb.DuckDBPyConnection, limit: int) -> pd.DataFrame:
    """The first `limit` rows of the pending result, streamed in vectors; attrs['truncated']."""
    vectors = math.ceil((limit + 1) / _VECTOR_ROWS)
    chunks = [con.fetch_df_chunk(vectors)]
    n_rows = len(chunks[0])
    while n_rows <= limit and not chunks[-1].empty:
        chunks.append(con.fetch_df_chunk(vectors))
        n_rows += len(chunks[-1])
    frame = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    head = frame.head(limit).reset_index(drop=True)
    head.attrs["truncated"] = n_rows > limit
    return head


def _known_columns(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every column of every table and view of the database file (not temporary ones)."""
    return con.execute(
        """SELECT table_name AS "table", column_name AS "column", data_type AS type
        FROM duckdb_columns()
        WHERE database_name = current_database() AND schema_name = 'main' AND NOT internal
        ORDER BY table_name, column_index"""
    ).fetchdf()


def _in_doc_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Tables in pipeline order (as `schema_docs.TABLES` lists them), undocumented ones last."""
    order = {name: i for i, name in enumerate(schema_docs.TABLES)}
    rank = frame["table"].map(lambda t: order.get(t, len(order)))
    return (
        frame.assign(_rank=rank)
        .sort_values(["_rank", "table"], kind="mergesort")
        .drop(columns="_rank")
        .reset_index(drop=True)
    )


def schema(con: duckdb.DuckDBPyConnection, tables: Sequence[str] = ()) -> pd.DataFrame:
    """Table, column, type and a one-line description of every column (or of `tables` only).

    A column without a description has an empty one; a test keeps that from happening."""
    frame = _known_columns(con)
    unknown = sorted(set(tables) - set(frame["table"]))
    if unknown:
        raise UsageError(f"no table {', '.join(unknown)}; see 'surveillance schema --tables'")
    if tables:
        frame = frame[frame["table"].isin(tables)]
    descriptions = [
        schema_docs.COLUMNS.get(t, {}).get(c, "")
        for t, c in zip(frame["table"], frame["column"], strict=True)
    ]
    frame = frame.assign(description=descriptions)
    return _in_doc_order(frame)


def tables(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every table of the database with its number of columns and a one-line description."""
    frame = _known_columns(con).groupby("table", as_index=False).agg(n_columns=("column", "size"))
    descriptions = [schema_docs.TABLES.get(t, "") for t in frame["table"]]
    return _in_doc_order(frame.assign(description=descriptions))

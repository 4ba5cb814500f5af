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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from .errors import UsageError

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


def run_query(con: duckdb.DuckDBPyConnection, name: str, **params: Any) -> pd.DataFrame:
    """Run a named query with bound parameters and return its rows."""
    query = get_query(name)
    bound = bind(query, params)
    used = {k: v for k, v in bound.items() if f"${k}" in query.sql}
    try:
        return con.execute(query.sql, used).fetchdf()
    except duckdb.Error as e:
        raise UsageError(f"query {name}: {str(e).splitlines()[0]}") from e

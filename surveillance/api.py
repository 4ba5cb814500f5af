"""The library API for notebooks and scripts: one `Database` object over one DuckDB file.

    from surveillance import Database
    with Database("kratom.duckdb") as db:
        db.load("data/raw")
        db.signals(substance="kratom", through="2024Q4")

Each method wraps the library function the CLI command of the same name calls, so both give the
same rows; results are pandas DataFrames. The connection opens on first use and stays open until
`close()` (or the end of a `with` block); `sql()` closes it first, because DuckDB refuses a
second connection to the same file with other settings in the same process.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from . import db as _db
from . import query as _query
from .errors import UsageError

if TYPE_CHECKING:
    from .ingest import QuarterLoad
    from .signals import SignalRun
    from .substances import Substance
    from .trends import Trends


class Database:
    """A FAERS surveillance database: load quarters, list cases, compute signals, run SQL."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False) -> None:
        """Name the file (default: $SURVEILLANCE_DB, else data/surveillance.duckdb).

        read_only opens it without the schema set-up and refuses the methods that write
        (load, rebuild, signals, trends); read-write creates the file if it does not exist."""
        self.path = Path(path) if path is not None else _db.default_path()
        self.read_only = read_only
        self._con: duckdb.DuckDBPyConnection | None = None

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        state = "open" if self._con is not None else "closed"
        return f"Database({str(self.path)!r}, {mode}, {state})"

    def __enter__(self) -> Database:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def connection(self) -> duckdb.DuckDBPyConnection:
        """The open DuckDB connection (opened now if needed), for what the methods do not cover."""
        if self._con is None:
            self._con = _db.connect(self.path, read_only=self.read_only)
        return self._con

    def close(self) -> None:
        """Close the connection; a later method call opens it again."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def _writable(self, what: str) -> duckdb.DuckDBPyConnection:
        if self.read_only:
            raise UsageError(f"{what} writes to the database; open it with read_only=False")
        return self.connection

    def load(self, *paths: str | Path, dedup: str | None = None) -> list[QuarterLoad]:
        """Load quarterly zips (or folders of zips), then rebuild the clean layer and substances.

        dedup is 'fda' or 'strict'; None keeps the mode of the last rebuild."""
        from .pipeline import load

        if not paths:
            raise UsageError("load: give at least one zip or folder")
        return load(self._writable("load"), paths, dedup=dedup)

    def rebuild(self, dedup: str | None = None) -> pd.DataFrame:
        """Rebuild the clean layer and the built-in substances' hits; the dedup step counts."""
        from .pipeline import rebuild

        return rebuild(self._writable("rebuild"), dedup=dedup)

    def cases(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        since: str | None = None,
        until: str | None = None,
        roles: str | None = None,
        term: str | None = None,
    ) -> pd.DataFrame:
        """One row per deduplicated case involving the substance (any drug role unless roles,
        e.g. 'PS,SS'), optionally between FDA quarters and with a reaction term containing term.

        A user's term file not extracted yet is extracted first (a write)."""
        from .cases import cases

        return cases(
            self.connection, _substance(substance, substance_file), since, until, roles, term
        )

    def case(self, caseid: str) -> dict[str, Any]:
        """Everything known about one case: its report, drugs, reactions, outcomes, versions."""
        from .cases import case

        return case(self.connection, caseid)

    def signals_run(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        through: str | None = None,
        roles: str | None = None,
        min_cases: int = 3,
        stratify: Sequence[str] | str | None = None,
        sort: str | None = None,
    ) -> SignalRun:
        """The full signals computation: the table, the EBGM prior and the counts behind it."""
        from .signals import signals

        return signals(
            self._writable("signals"),
            _substance(substance, substance_file),
            through=through,
            roles=roles,
            min_cases=min_cases,
            stratify=stratify,
            sort=sort,
        )

    def signals(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        through: str | None = None,
        roles: str | None = None,
        min_cases: int = 3,
        stratify: Sequence[str] | str | None = None,
        sort: str | None = None,
    ) -> pd.DataFrame:
        """PRR, ROR, IC and EBGM of the substance against every reaction term with at least
        min_cases cases, as of the end of quarter `through` (default: the latest loaded)."""
        return self.signals_run(
            substance, substance_file, through, roles, min_cases, stratify, sort
        ).table

    def trends(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        top_terms: int = 8,
        roles: str | None = None,
    ) -> Trends:
        """Per-quarter series of the substance and the cumulative signals of its top terms."""
        from .trends import trends

        return trends(
            self._writable("trends"),
            _substance(substance, substance_file),
            top_terms=top_terms,
            roles=roles,
        )

    def query(self, name: str, /, **params: Any) -> pd.DataFrame:
        """Run a named query from queries/*.sql; params are checked against its header and
        bound, never pasted into the SQL (see `queries()`)."""
        return _query.run_query(self.connection, name, **params)

    def queries(self) -> list[_query.NamedQuery]:
        """The named queries: name, description, parameters, what they count, SQL text."""
        return list(_query.named_queries().values())

    def sql(self, text: str, limit: int | None = None) -> pd.DataFrame:
        """Run one ad hoc SQL statement on a separate read-only connection that cannot write,
        reach other files or change settings; at most `limit` rows are fetched.

        Closes this object's own connection first (the next method reopens it)."""
        self.close()
        return _query.run_sql(self.path, text, limit=limit)

    def schema(self, *tables: str) -> pd.DataFrame:
        """Table, column, type and description of every column (or of the tables named)."""
        return _query.schema(self.connection, tables)

    def tables(self) -> pd.DataFrame:
        """Every table with its number of columns and what it holds."""
        return _query.tables(self.connection)

    def status(self) -> dict[str, Any]:
        """Quarters loaded, rows per raw table, quarantined rows, dedup steps and substances."""
        from .status import status

        return status(self.connection, self.path)


def _substance(name: str, substance_file: str | Path | None) -> Substance:
    from .extract import resolve

    return resolve(name, substance_file)

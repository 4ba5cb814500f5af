"""The library API for notebooks and scripts: one `Database` object over one DuckDB file.

    from surveillance import Database
    with Database("kratom.duckdb") as db:
        db.load("data/raw")
        db.signals(substance="kratom", through="2024Q4")

Each method wraps the library function the CLI command of the same name calls, so both give the
same rows; results are pandas DataFrames. The connection opens on first use and stays open until
`close()` (or the end of a `with` block); `sql()` closes it first, because DuckDB refuses a
second connection to the same file with other settings in the same process.

`Database` is the door every command passes through: only `load` creates a database, and every
method that reads derived tables first calls `ensure_current()`, which rebuilds what is older
than the loaded data (read-write) or refuses with one line (read-only).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

import duckdb
import pandas as pd

from . import db as _db
from . import freshness as _freshness
from . import query as _query
from .errors import InputError, NoDataError, StaleDataError, UsageError

if TYPE_CHECKING:
    from .ingest import QuarterLoad
    from .onset import Onset
    from .signals import SignalRun
    from .substances import Substance
    from .trends import Trends


class Database:
    """A FAERS surveillance database: load quarters, list cases, compute signals, run SQL."""

    def __init__(
        self,
        path: str | Path | None = None,
        read_only: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        """Name the file (default: $SURVEILLANCE_DB, else data/surveillance.duckdb).

        read_only opens it without the schema set-up and refuses the methods that write
        (load, rebuild, signals, trends); only `load` creates a file that does not exist. `log`
        receives one line when a stale derived layer is rebuilt (default: a warning)."""
        self.path = Path(path) if path is not None else _db.default_path()
        self.read_only = read_only
        self._log = log
        self._con: duckdb.DuckDBPyConnection | None = None
        self._current = False

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
        return self._open(create=False)

    def _open(self, create: bool) -> duckdb.DuckDBPyConnection:
        if self._con is None:
            self._con = _db.connect(self.path, read_only=self.read_only, create=create)
            self._current = False
        return self._con

    def close(self) -> None:
        """Close the connection; a later method call opens it again."""
        if self._con is not None:
            self._con.close()
            self._con = None

    def ensure_current(self) -> _freshness.Staleness | None:
        """Make sure the derived tables are current with the loaded quarters, or refuse.

        Read-write: rebuilds the clean layer (or extracts the substances again) when it is older
        than what it was built from, and logs one line saying so. Read-only: raises a
        StaleDataError naming what is behind and to run 'surveillance rebuild'. Returns what was
        behind (None when all was current); NoDataError when no quarter is loaded."""
        from .extract import builtin_term_files
        from .pipeline import repair

        con = self.connection
        if self._current:
            return None
        try:
            stale = _freshness.check(con, builtin_term_files())
        except NoDataError as e:
            raise NoDataError(f"{self.path}: {e}") from e
        if stale is not None:
            if self.read_only:
                raise StaleDataError(f"{self.path}: {stale.refusal}")
            repair(con)
            self._say(stale.repaired)
        self._current = True
        return stale

    def _say(self, line: str) -> None:
        if self._log is not None:
            self._log(line)
        else:
            import warnings

            warnings.warn(line, stacklevel=3)

    def _reader(self) -> duckdb.DuckDBPyConnection:
        self.ensure_current()
        return self.connection

    def _writable(self, what: str) -> duckdb.DuckDBPyConnection:
        if self.read_only:
            raise UsageError(f"{what} writes to the database; open it with read_only=False")
        self.ensure_current()
        return self.connection

    def load(self, *paths: str | Path, dedup: str | None = None) -> list[QuarterLoad]:
        """Load quarterly zips (or folders of zips), then rebuild the clean layer and substances.

        dedup is 'fda' or 'strict'; None keeps the mode of the last rebuild."""
        from .pipeline import load

        if not paths:
            raise UsageError("load: give at least one zip or folder")
        if self.read_only:
            raise UsageError("load writes to the database; open it with read_only=False")
        for path in paths:
            if not Path(path).exists():
                raise InputError(path, "no such file or folder")
        return load(self._open(create=True), paths, dedup=dedup, progress=self._log)

    def rebuild(self, dedup: str | None = None, incremental: bool = False) -> pd.DataFrame:
        """Rebuild the clean layer and the built-in substances' hits; the dedup step counts.

        `incremental`: only what changed since the last rebuild (`pipeline.rebuild`)."""
        from .extract import builtin_term_files
        from .pipeline import rebuild

        if self.read_only:
            raise UsageError("rebuild writes to the database; open it with read_only=False")
        con = self.connection
        try:
            _freshness.check(con, builtin_term_files())
        except NoDataError as e:
            raise NoDataError(f"{self.path}: {e}") from e
        steps = rebuild(con, dedup=dedup, progress=self._log, incremental=incremental)
        self._current = True
        return steps

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
            self._reader(), _substance(substance, substance_file), since, until, roles, term
        )

    def case(self, caseid: str) -> dict[str, Any]:
        """Everything known about one case: its report, drugs, reactions, outcomes, versions."""
        from .cases import case

        return case(self._reader(), caseid)

    def signals_run(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        through: str | None = None,
        roles: str | None = None,
        min_cases: int = 3,
        stratify: Sequence[str] | str | None = None,
        sort: str | None = None,
        background: str | Path | None = None,
        groups: bool = False,
        group_files: Sequence[str | Path] = (),
        meddra: str | Path | None = None,
        exclude_window: int | None = None,
        era: str | None = None,
        remove_maskers: int | None = None,
        subset: str | None = None,
    ) -> SignalRun:
        """The full signals computation: the table, the EBGM prior and the counts behind it;
        background, groups, group_files, meddra, exclude_window, era, remove_maskers and subset
        as in `signals.signals`."""
        from .signals import signals

        return signals(
            self._writable("signals"),
            _substance(substance, substance_file),
            through=through,
            roles=roles,
            min_cases=min_cases,
            stratify=stratify,
            sort=sort,
            background=background,
            groups=groups,
            group_files=group_files,
            meddra=meddra,
            exclude_window=exclude_window,
            era=era,
            remove_maskers=remove_maskers,
            subset=subset,
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
        background: str | Path | None = None,
        groups: bool = False,
        group_files: Sequence[str | Path] = (),
        meddra: str | Path | None = None,
        exclude_window: int | None = None,
        era: str | None = None,
        remove_maskers: int | None = None,
        subset: str | None = None,
    ) -> pd.DataFrame:
        """PRR, ROR, IC and EBGM of the substance against every reaction term with at least
        min_cases cases, as of the end of quarter `through` (default: the latest loaded); with
        a comparator (`background`), event groups, exclusions and masking as in
        `signals.signals`."""
        return self.signals_run(
            substance,
            substance_file,
            through,
            roles,
            min_cases,
            stratify,
            sort,
            background,
            groups,
            group_files,
            meddra,
            exclude_window,
            era,
            remove_maskers,
            subset,
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

    def onset(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        since: str | None = None,
        until: str | None = None,
        roles: str | None = None,
        term: str | None = None,
        top_terms: int = 10,
        groups: bool = False,
    ) -> Onset:
        """Time to onset of the substance's cases (those `cases` lists) per term: counts by
        status, median and IQR in days, Weibull shape with its 95% CI (`surveillance.onset`)."""
        from .onset import onset

        which = _substance(substance, substance_file)
        return onset(self._reader(), which, since, until, roles, term, top_terms, groups)

    def dechallenge(
        self,
        substance: str = "kratom",
        substance_file: str | Path | None = None,
        since: str | None = None,
        until: str | None = None,
        roles: str | None = None,
        term: str | None = None,
        top_terms: int = 10,
        groups: bool = False,
    ) -> pd.DataFrame:
        """Dechallenge and rechallenge results of the substance's cases (those `cases` lists)
        per term (`surveillance.dechallenge`)."""
        from .dechallenge import dechallenge

        which = _substance(substance, substance_file)
        return dechallenge(self._reader(), which, since, until, roles, term, top_terms, groups)

    def query(self, name: str, /, **params: Any) -> pd.DataFrame:
        """Run a named query from queries/*.sql; params are checked against its header and
        bound, never pasted into the SQL (see `queries()`)."""
        return _query.run_query(self._reader(), name, **params)

    def queries(self) -> list[_query.NamedQuery]:
        """The named queries: name, description, parameters, what they count, SQL text."""
        return list(_query.named_queries().values())

    def sql(
        self, text: str, limit: int | None = None, timeout: float | None = None
    ) -> pd.DataFrame:
        """Run one ad hoc SQL statement on a separate read-only connection that cannot write,
        reach other files or change settings; at most `limit` rows are fetched, and the statement
        is cancelled after `timeout` seconds (default `query.SQL_TIMEOUT`).

        Refuses while a derived table is older than the loaded data (rebuild first). Closes this
        object's own connection first (the next method reopens it)."""
        try:
            self.ensure_current()
        except NoDataError:
            pass  # nothing loaded: the raw tables can still be read, empty
        self.close()
        return _query.run_sql(self.path, text, limit=limit, timeout=timeout)

    def schema(self, *tables: str) -> pd.DataFrame:
        """Table, column, type and description of every column (or of the tables named)."""
        return _query.schema(self.connection, tables)

    def tables(self) -> pd.DataFrame:
        """Every table with its number of columns and what it holds."""
        return _query.tables(self.connection)

    def export_parquet(
        self, dest: str | Path, force: bool = False, progress: Callable[[str], None] | None = None
    ) -> dict[str, Any]:
        """Write the clean layer and the substance matches as Parquet partitioned by quarter,
        with a manifest, into the folder `dest`; return the manifest (see `open_export`)."""
        from .parquet import export_parquet

        return export_parquet(self._reader(), Path(dest), force=force, progress=progress)

    def status(self) -> dict[str, Any]:
        """Quarters loaded, rows per raw table, quarantined rows, dedup steps and substances."""
        from .status import status

        return status(self.connection, self.path)


def open_export(folder: str | Path) -> duckdb.DuckDBPyConnection:
    """An export of `Database.export_parquet` as an in-memory DuckDB, one view per table,
    after checking every file against its manifest; named queries run on it."""
    from .parquet import open_export as _open_export

    return _open_export(folder)


def _substance(name: str, substance_file: str | Path | None) -> Substance:
    from .extract import resolve

    return resolve(name, substance_file)

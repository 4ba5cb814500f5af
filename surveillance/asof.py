"""Cumulative 2x2 counts of one substance as of the end of every loaded quarter, in one pass.

Reads `raw_demo`, `raw_deleted`, `raw_drug`, `raw_reac`, `substance_strings` and `quarters`;
`asof_counts` writes only temp tables (`_asof_*`, dropped at the end), `stored_asof_counts`
keeps its result in `asof_runs` and `asof_terms` under the data vintage. The numbers are those of
`signals.signals(through=q, min_cases=1)` for every loaded quarter q: the as-of cases of
`clean.surviving_reports(q)`, exposure and terms from each surviving version's own drug and
reaction rows. A case's surviving version changes only in a quarter where one of its report
versions is published or republished, or where it is deleted; so each version gets the quarters
[from_q, to_q) during which it is the case's surviving one, and every count over the quarter axis
is a cumulative sum of +1/-1 at those interval ends, instead of one rebuild per quarter.
The counts as of a quarter depend only on the data of the quarters up to it: with the stored
counts of earlier quarters whose data are unchanged, only the cases touched after them (a
version published or a primaryid republished later, or a deletion) are counted again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import duckdb
import numpy as np
import pandas as pd

from . import __version__, stats
from .clean import VERSION_ORDER, ensure_macros
from .db import ensure_derived_table
from .design import event_groups, group_members
from .freshness import has_table, quarter_fingerprints
from .signals import OUTPUT_COLUMNS
from .substances import Substance


# Every report version that report_versions(q) can pick for some q: per (source, primaryid) and
# quarter the last line; it is that primaryid's version until the primaryid's next quarter. One
# window finds both: in line order, a line whose next line has another quarter (or none) is the
# last of its quarter, and that next quarter is its valid_to.
def _rows(demo: str, only: str) -> str:
    return f"""CREATE OR REPLACE TEMP TABLE _asof_rows AS
WITH ordered AS (
    SELECT caseid, source, primaryid, quarter, caseversion, fda_dt,
        lead(quarter) OVER (PARTITION BY source, primaryid ORDER BY quarter, source_line) AS next_q
    FROM {demo}
    WHERE caseid IS NOT NULL)
SELECT caseid, source, primaryid, quarter, caseversion, fda_dt, next_q AS valid_to
FROM ordered WHERE next_q IS DISTINCT FROM quarter{only}"""  # noqa: S608 (constants below)


_ROWS = _rows("raw_demo", "")
# The cases whose counts can change after quarter $after: a version of theirs published in a
# later quarter, or an earlier version whose primaryid is republished then (it stops being
# current), or a deletion listed then. Every other case keeps the version it had at $after.
_TOUCHED = """CREATE OR REPLACE TEMP TABLE _asof_touched AS
SELECT d.caseid FROM raw_demo d
SEMI JOIN (SELECT source, primaryid FROM raw_demo WHERE quarter > $after) n
  ON n.source = d.source AND n.primaryid = d.primaryid
WHERE d.caseid IS NOT NULL
UNION SELECT caseid FROM raw_deleted WHERE quarter > $after AND caseid IS NOT NULL"""
# The touched cases' rows: a primaryid's rows all go through the window (its valid_to needs
# them, whichever case they name), then only the touched cases' rows are kept.
_TOUCHED_ROWS = _rows(
    """raw_demo SEMI JOIN (
        SELECT DISTINCT source, primaryid FROM raw_demo
        WHERE caseid IN (SELECT caseid FROM _asof_touched)) k USING (source, primaryid)""",
    " AND caseid IN (SELECT caseid FROM _asof_touched)",
)
# The report versions naming the substance in a counted role (signals' as-of exposure rule).
_EXPOSED_OF = """CREATE OR REPLACE TEMP TABLE _asof_exposed AS
SELECT DISTINCT g.source, g.primaryid, g.quarter
FROM raw_drug g{versions}
WHERE (g.drugname IN (SELECT string FROM substance_strings
                      WHERE substance = $substance AND field = 'drugname')
       OR g.prod_ai IN (SELECT string FROM substance_strings
                        WHERE substance = $substance AND field = 'prod_ai'))
  AND role_counts(g.role_cod, $roles)"""
_EXPOSED = _EXPOSED_OF.format(versions="")
_TOUCHED_EXPOSED = _EXPOSED_OF.format(
    versions="""
SEMI JOIN _asof_rows r ON r.source = g.source AND r.primaryid = g.primaryid
 AND r.quarter = g.quarter"""
)
# case_rank is the order of clean.ranked_keys (FAERS first, then caseversion, fda_dt, quarter,
# primaryid), ranked only where there is a choice; it does not depend on the as-of quarter, so
# at each quarter where a case's set of current versions changes its surviving version is the
# current one ranked first. The case keeps it until its next such quarter or the first deleted
# list naming it. One row per span: a version current for its case from from_q until to_q
# (open: still current), and its exposure. Most cases have one version, never republished:
# their one span starts at its quarter, and only the cases with several rows (or a republished
# primaryid) go through the picking.
# A span is identified by its row's `rowid` in this temp table: a row_number() OVER () would
# number the rows on one thread (18 of 29 s on the whole archive). Its quarters are numbers
# (`_asof_quarters`), so that the pairs below are made distinct on integers only.
_QUARTERS = """CREATE OR REPLACE TEMP TABLE _asof_quarters AS
SELECT quarter, CAST(row_number() OVER (ORDER BY quarter) AS SMALLINT) AS qi FROM quarters"""
_SPANS = f"""CREATE OR REPLACE TEMP TABLE _asof_spans AS
WITH several AS (
    SELECT caseid FROM _asof_rows GROUP BY caseid
    HAVING count(*) > 1 OR bool_or(valid_to IS NOT NULL)),
rows AS (
    SELECT *, row_number() OVER (PARTITION BY caseid ORDER BY {VERSION_ORDER}) AS case_rank
    FROM _asof_rows WHERE caseid IN (SELECT caseid FROM several)),
points AS (
    SELECT caseid, quarter AS as_of FROM rows
    UNION SELECT caseid, valid_to FROM rows WHERE valid_to IS NOT NULL),
spans AS (
    SELECT caseid, as_of, lead(as_of) OVER (PARTITION BY caseid ORDER BY as_of) AS next_at
    FROM points),
picked AS (
    SELECT s.caseid, s.as_of, s.next_at, r.source, r.primaryid, r.quarter
    FROM spans s JOIN rows r
      ON r.caseid = s.caseid AND r.quarter <= s.as_of
     AND (r.valid_to IS NULL OR r.valid_to > s.as_of)
    QUALIFY row_number() OVER (PARTITION BY s.caseid, s.as_of ORDER BY r.case_rank) = 1
    UNION ALL
    SELECT caseid, quarter, NULL, source, primaryid, quarter FROM _asof_rows
    WHERE caseid NOT IN (SELECT caseid FROM several)),
deleted AS (SELECT caseid, min(quarter) AS deleted_in FROM raw_deleted GROUP BY caseid)
SELECT p.primaryid, p.quarter, f.qi AS from_i, t.qi AS to_i, e.source IS NOT NULL AS exposed
FROM picked p
LEFT JOIN deleted d USING (caseid)
LEFT JOIN _asof_exposed e
  ON e.source = p.source AND e.primaryid = p.primaryid AND e.quarter = p.quarter
JOIN _asof_quarters f ON f.quarter = p.as_of
LEFT JOIN _asof_quarters t ON t.quarter = CASE
    WHEN d.deleted_in IS NULL THEN p.next_at
    WHEN p.next_at IS NULL OR d.deleted_in < p.next_at THEN d.deleted_in
    ELSE p.next_at END
WHERE d.deleted_in IS NULL OR p.as_of < d.deleted_in"""  # noqa: S608 (VERSION_ORDER: clean's constant)
# Counts by span interval, their quarter numbers named again (from_q, to_q: NULL = open).
_NAMED = """SELECT c.pt_key, f.quarter AS from_q, t.quarter AS to_q, c.exposed, c.n_cases
FROM counted c JOIN _asof_quarters f ON f.qi = c.from_i
LEFT JOIN _asof_quarters t ON t.qi = c.to_i"""
_CASE_SPANS = f"""WITH counted AS (
    SELECT NULL AS pt_key, from_i, to_i, exposed, count(*) AS n_cases
    FROM _asof_spans GROUP BY ALL)
{_NAMED}"""  # noqa: S608 (_NAMED: a constant)


# Every term is counted, a >= 1 or not, so that the counts of a later vintage can start from
# these (a term first co-reported with the substance then needs its earlier n_term); each span
# counts once per term it reports. A report version is (primaryid, quarter): a quarter's rows
# all come from one zip, of one source. The terms are numbered so that the pairs are made
# distinct on integers only, not on the term's text and the quarters' (38.5 s to about 25 s on
# the whole archive).
def _term_spans(reac: str) -> str:
    return f"""WITH terms AS (
    SELECT pt_key, CAST(row_number() OVER (ORDER BY pt_key) AS INTEGER) AS term_id FROM (
        SELECT DISTINCT upper(trim(r.pt)) AS pt_key FROM {reac}
        WHERE trim(r.pt) <> '')),
pairs AS (
    SELECT DISTINCT v.rowid AS span_id, t.term_id, v.from_i, v.to_i, v.exposed
    FROM raw_reac r JOIN _asof_spans v ON v.primaryid = r.primaryid AND v.quarter = r.quarter
    JOIN terms t ON t.pt_key = upper(trim(r.pt))),
counted AS (
    SELECT t.pt_key, p.from_i, p.to_i, p.exposed, count(*) AS n_cases
    FROM pairs p JOIN terms t USING (term_id) GROUP BY ALL)
{_NAMED}"""  # noqa: S608 (_NAMED and the argument: constants)


_TERM_SPANS = _term_spans("raw_reac r")
# Touched: the terms of the touched cases' versions only.
_TOUCHED_TERM_SPANS = _term_spans(
    "raw_reac r SEMI JOIN _asof_spans v ON v.primaryid = r.primaryid AND v.quarter = r.quarter"
)
# Event groups (`_asof_groups`: event_key, pt_key), counted like terms: a span once per group
# it reports any PT of.
_GROUP_SPANS = f"""WITH pairs AS (
    SELECT DISTINCT v.rowid AS span_id, g.event_key, v.from_i, v.to_i, v.exposed
    FROM raw_reac r JOIN _asof_spans v ON v.primaryid = r.primaryid AND v.quarter = r.quarter
    JOIN _asof_groups g ON g.pt_key = upper(trim(r.pt))),
counted AS (
    SELECT event_key AS pt_key, from_i, to_i, exposed, count(*) AS n_cases
    FROM pairs GROUP BY ALL)
{_NAMED}"""  # noqa: S608 (_NAMED: a constant)
_TEMP_TABLES = ("_asof_spans", "_asof_exposed", "_asof_rows", "_asof_quarters", "_asof_touched")


@dataclass(frozen=True)
class AsOfCounts:
    """Case counts of one substance as of each quarter: N, exposed, and per term n_term and a."""

    substance: str
    roles: str | None
    """The counted roles (parsed, e.g. 'PS,SS'); None = any role."""
    quarters: tuple[str, ...]
    n_cases: np.ndarray
    """Cases as of the end of each quarter (N of the 2x2 tables)."""
    n_exposed: np.ndarray
    """Cases with the substance in the counted roles (a + b)."""
    terms: tuple[str, ...]
    """pt_key of every term reported by some exposed case at some quarter, sorted."""
    n_term: np.ndarray
    """(terms x quarters) cases reporting the term (a + c)."""
    a: np.ndarray
    """(terms x quarters) cases with the substance and the term."""
    groups: frozenset[str] = frozenset()
    """The event-group keys asked for: those among `terms` are groups, not PTs."""

    def pts(self) -> AsOfCounts:
        """The same counts with the event-group rows left out (single PTs only)."""
        if not self.groups:
            return self
        keep = np.array([t not in self.groups for t in self.terms], dtype=bool)
        terms = tuple(t for t in self.terms if t not in self.groups)
        return replace(
            self, terms=terms, n_term=self.n_term[keep], a=self.a[keep], groups=frozenset()
        )

    def reported(self) -> AsOfCounts:
        """The same counts with only the terms some exposed case reports at some quarter."""
        keep = np.asarray((self.a > 0).any(axis=1), dtype=bool)
        terms = tuple(t for t, k in zip(self.terms, keep.tolist(), strict=True) if k)
        return replace(self, terms=terms, n_term=self.n_term[keep], a=self.a[keep])

    def head(self, m: int) -> AsOfCounts:
        """The counts as of the first m quarters only."""
        return replace(
            self,
            quarters=self.quarters[:m],
            n_cases=self.n_cases[:m],
            n_exposed=self.n_exposed[:m],
            n_term=self.n_term[:, :m],
            a=self.a[:, :m],
        )

    def cells(
        self, index: int
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The terms with a >= 1 at quarter number `index`, and their a, b, c, d."""
        a = self.a[:, index]
        keep = a >= 1
        a = a[keep].astype(float)
        n_term = self.n_term[keep, index].astype(float)
        b = float(self.n_exposed[index]) - a
        c = n_term - a
        d = float(self.n_cases[index]) - float(self.n_exposed[index]) - c
        terms = tuple(t for t, k in zip(self.terms, keep, strict=True) if k)
        return terms, a, b, c, d


def _axis(at: pd.Series, quarters: tuple[str, ...]) -> np.ndarray:
    """Each quarter's column: the first loaded quarter at or after it (len(quarters) if none)."""
    return np.searchsorted(np.asarray(quarters, dtype=object), at.to_numpy(dtype=object))


def _current(
    spans: pd.DataFrame, quarters: tuple[str, ...], rows: np.ndarray, n_rows: int, only: str = ""
) -> np.ndarray:
    """(n_rows x quarters) cases whose span is current at the end of each quarter: +n where a
    span starts, -n where it ends, summed over the quarter axis (`only`: a boolean column)."""
    n = spans["n_cases"].to_numpy(dtype=np.int64)
    if only:
        n = n * spans[only].to_numpy(dtype=bool)
    deltas = np.zeros((n_rows, len(quarters) + 1), dtype=np.int64)  # + after the last quarter
    np.add.at(deltas, (rows, _axis(spans["from_q"], quarters)), n)
    ends = spans["to_q"].notna().to_numpy()
    np.add.at(deltas, (rows[ends], _axis(spans["to_q"][ends], quarters)), -n[ends])
    return np.cumsum(deltas, axis=1)[:, : len(quarters)]


def asof_counts(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None,
    groups: Mapping[str, Iterable[str]] | None = None,
) -> AsOfCounts:
    """The substance's cumulative counts as of every loaded quarter (roles already parsed).

    `groups` (event key -> PT names) adds each event group as a row of `terms` under its key,
    a case counting once if it reports any of its PTs. The substance must be extracted
    (`substance_strings` filled); see the module text."""
    return _counted(con, substance, roles, groups).reported()


def _counted(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None,
    groups: Mapping[str, Iterable[str]] | None,
    since: AsOfCounts | None = None,
) -> AsOfCounts:
    """`asof_counts` with every term, a >= 1 or not. `since`: these counts (every term) as of
    the first quarters, on the same data; only the cases touched after them are counted."""
    ensure_macros(con)
    quarters = tuple(
        str(r[0]) for r in con.execute("SELECT quarter FROM quarters ORDER BY quarter").fetchall()
    )
    if since is not None and (
        not since.quarters or since.quarters != quarters[: len(since.quarters)]
    ):
        raise ValueError("the earlier counts are not of the loaded quarters' first quarters")
    params = {"substance": substance.name, "roles": roles}
    try:
        if since is None:
            con.execute(_ROWS)
            con.execute(_EXPOSED, params)
        else:
            con.execute(_TOUCHED, {"after": since.quarters[-1]})
            con.execute(_TOUCHED_ROWS)
            con.execute(_TOUCHED_EXPOSED, params)
        con.execute(_QUARTERS)
        con.execute(_SPANS)
        case_spans = con.execute(_CASE_SPANS).fetchdf()
        term_spans = con.execute(_TERM_SPANS if since is None else _TOUCHED_TERM_SPANS).fetchdf()
        if groups:
            con.register("_asof_groups", group_members(groups))
            try:
                group_spans = con.execute(_GROUP_SPANS).fetchdf()
            finally:
                con.unregister("_asof_groups")
            term_spans = pd.concat([term_spans, group_spans], ignore_index=True)
    finally:
        for table in _TEMP_TABLES:
            con.execute(f"DROP TABLE IF EXISTS {table}")
    one = np.zeros(len(case_spans), dtype=np.int64)
    terms = tuple(sorted(term_spans["pt_key"].unique()))
    rows = term_spans["pt_key"].map({t: i for i, t in enumerate(terms)}).to_numpy(dtype=np.int64)
    counted = AsOfCounts(
        substance=substance.name,
        roles=roles,
        quarters=quarters,
        n_cases=_current(case_spans, quarters, one, 1)[0],
        n_exposed=_current(case_spans, quarters, one, 1, only="exposed")[0],
        terms=terms,
        n_term=_current(term_spans, quarters, rows, len(terms)),
        a=_current(term_spans, quarters, rows, len(terms), only="exposed"),
        groups=frozenset(groups or ()),
    )
    return counted if since is None else _continued(since, counted)


def _continued(since: AsOfCounts, touched: AsOfCounts) -> AsOfCounts:
    """The earlier counts continued over the later quarters: every case untouched after the
    last earlier quarter m counts at each later quarter as it did at m, so a later count is
    the count at m plus the touched cases' change since m."""
    m = len(since.quarters)
    terms = tuple(sorted({*since.terms, *touched.terms}))
    index = {t: i for i, t in enumerate(terms)}

    def grid(counts: AsOfCounts, field: str) -> np.ndarray:
        out = np.zeros((len(terms), len(counts.quarters)), dtype=np.int64)
        out[[index[t] for t in counts.terms]] = getattr(counts, field)
        return out

    def continued(before: np.ndarray, after: np.ndarray) -> np.ndarray:
        later = before[..., m - 1 : m] + after[..., m:] - after[..., m - 1 : m]
        return np.concatenate([before, later], axis=-1)

    return replace(
        touched,
        n_cases=continued(since.n_cases, touched.n_cases),
        n_exposed=continued(since.n_exposed, touched.n_exposed),
        terms=terms,
        n_term=continued(grid(since, "n_term"), grid(touched, "n_term")),
        a=continued(grid(since, "a"), grid(touched, "a")),
    )


_STORE = (
    """CREATE TABLE IF NOT EXISTS asof_runs (
        run_id VARCHAR, substance VARCHAR, substance_version VARCHAR, roles VARCHAR,
        groups VARCHAR, quarters VARCHAR[], n_cases BIGINT[], n_exposed BIGINT[],
        data_fingerprint VARCHAR, quarter_fingerprints VARCHAR[], tool_version VARCHAR,
        created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS asof_terms (
        run_id VARCHAR, pt_key VARCHAR, n_term BIGINT[], a BIGINT[])""",
)


def stored_asof_counts(
    con: duckdb.DuckDBPyConnection, substance: Substance, roles: str | None
) -> AsOfCounts:
    """`asof_counts` with the shipped event groups (`pts()` leaves them out), stored with the
    data vintage of each quarter: the trends, the report and the sequential alerts of one data
    vintage share one computation; a new vintage reuses the counts of its unchanged first
    quarters and counts only the cases touched after them; other data are never reused."""
    groups = event_groups()
    identity = [substance.identity, roles, sorted(groups.items()), __version__]
    run_id = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    fingerprints = quarter_fingerprints(con)
    since = None
    if has_table(con, "asof_runs"):
        stored = _stored(con, run_id, substance, roles, groups)
        if stored is not None:
            counts, kept = stored
            m = next(
                (i for i, (a, b) in enumerate(zip(kept, fingerprints, strict=False)) if a != b),
                min(len(kept), len(fingerprints)),
            )
            if m == len(kept) == len(fingerprints):
                return counts.reported()
            since = counts.head(m) if m else None
    if since is not None and len(since.quarters) == len(fingerprints):
        counts = since  # quarters left out at the end: the first ones' counts stand
    else:
        counts = _counted(con, substance, roles, groups, since=since)
    _store(con, run_id, fingerprints, substance, counts)
    return counts.reported()


def _stored(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    substance: Substance,
    roles: str | None,
    groups: Mapping[str, Iterable[str]],
) -> tuple[AsOfCounts, list[str]] | None:
    """The stored counts of this identity (every term) and their quarters' fingerprints."""
    row = con.execute(
        "SELECT quarters, n_cases, n_exposed, quarter_fingerprints FROM asof_runs "
        "WHERE run_id = $r",
        {"r": run_id},
    ).fetchone()
    if row is None:
        return None
    terms = con.execute(
        "SELECT pt_key, n_term, a FROM asof_terms WHERE run_id = $r ORDER BY pt_key",
        {"r": run_id},
    ).fetchall()
    n_quarters = len(row[0])
    counts = AsOfCounts(
        substance=substance.name,
        roles=roles,
        quarters=tuple(row[0]),
        n_cases=np.array(row[1], dtype=np.int64),
        n_exposed=np.array(row[2], dtype=np.int64),
        terms=tuple(t[0] for t in terms),
        n_term=np.array([t[1] for t in terms], dtype=np.int64).reshape(-1, n_quarters),
        a=np.array([t[2] for t in terms], dtype=np.int64).reshape(-1, n_quarters),
        groups=frozenset(groups),
    )
    return counts, list(row[3])


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create `asof_runs` and `asof_terms` (safe to repeat)."""
    for ddl in _STORE:
        ensure_derived_table(con, ddl)


def _store(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    fingerprints: list[str],
    substance: Substance,
    counts: AsOfCounts,
) -> None:
    """Replace the stored counts of this identity by these (every term), in one transaction."""
    ensure_tables(con)
    terms = pd.DataFrame(
        {"pt_key": list(counts.terms), "n_term": list(counts.n_term), "a": list(counts.a)}
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM asof_runs WHERE run_id = $r", {"r": run_id})
        con.execute("DELETE FROM asof_terms WHERE run_id = $r", {"r": run_id})
        con.execute(
            "INSERT INTO asof_runs "
            "VALUES ($r, $s, $v, $roles, $g, $q, $n, $e, $f, $fq, $tool, $now)",
            {
                "r": run_id,
                "s": substance.name,
                "v": substance.version,
                "roles": counts.roles,
                "g": json.dumps(sorted(counts.groups)),
                "q": list(counts.quarters),
                "n": counts.n_cases.tolist(),
                "e": counts.n_exposed.tolist(),
                "f": fingerprints[-1],
                "fq": fingerprints,
                "tool": __version__,
                "now": datetime.now(UTC).replace(tzinfo=None),
            },
        )
        con.register("_asof_store", terms)
        try:
            con.execute(
                "INSERT INTO asof_terms SELECT $r, pt_key, n_term, a FROM _asof_store",
                {"r": run_id},
            )
        finally:
            con.unregister("_asof_store")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def asof_signal_tables(
    con: duckdb.DuckDBPyConnection,
    counts: AsOfCounts,
    prior: stats.Prior,
    quarters: Iterable[str] | None = None,
) -> dict[str, pd.DataFrame]:
    """Per quarter (every counted one, or those given) the table `signals(through=q,
    min_cases=1, prior=prior)` gives (OUTPUT_COLUMNS, terms with a >= 1, p_adj over them), in
    term-key order; empty where no case has the substance yet."""
    names = dict(con.execute("SELECT pt_key, pt FROM pt_terms").fetchall())
    tables = {}
    for quarter in counts.quarters if quarters is None else quarters:
        terms, a, b, c, d = counts.cells(counts.quarters.index(quarter))
        if not terms:
            tables[quarter] = pd.DataFrame({c: pd.Series([], dtype=object) for c in OUTPUT_COLUMNS})
            continue
        table = pd.DataFrame(stats.signal_table(a=a, b=b, c=c, d=d, prior=prior))
        table.insert(0, "term", [names.get(t, t) for t in terms])
        table = table[OUTPUT_COLUMNS]
        for cell in "abcd":
            table[cell] = table[cell].astype("int64")
        tables[quarter] = table
    return tables

"""Disproportionality signals of one substance against every reaction term.

Through the last loaded quarter the counts come from the clean layer (`cases`, `case_drugs`,
`case_reactions`), `substance_hits`, `substance_strings` and `pt_terms` by the SQL files in
`queries/signals/`, which the Spark engine (`surveillance.spark`) runs too, on the Parquet export.
An earlier quarter, or strata, reads the raw layer through the clean layer's as-of macros
(`surviving_reports(through)`: the cases as they stood at the end of the `through` quarter,
deleted lists published by then applied). Whatever counted, the statistics come from `stats`
by the same code (`signal_run`). Writes `signal_runs` (options, data fingerprint, the prior used),
`signals` (one row per term and run) and `signal_priors` (EBGM priors fitted on the full
drug-by-term table, reused while the data and options are unchanged, because the fit is the
slow part).

A run's design (`surveillance.design`: the comparator, event groups) other than the default goes
the temp-table way too, narrowed and given group events by `Design.apply`; the default design
takes the paths above unchanged.

The 2x2 table for substance S and term R counts deduplicated cases: a = with S and R, b = with S
without R, c = without S with R, d = neither. A case "has" S when one of its drug rows matches S
in one of the counted roles (any role by default). Drugs enter the prior's drug-by-term table
as their active ingredient (prod_ai, else drugname, upper-cased), S's matching rows as S itself.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from . import __version__, masking, stats
from .clean import ensure_macros
from .db import ensure_derived_table
from .definitions import roles_option
from .design import DEFAULT, TERM_KINDS, Design, involving_sql, make_design
from .drug_term import sparse_pairs
from .errors import NoDataError, UsageError
from .extract import ensure_extracted
from .faers_format import quarter_option
from .freshness import data_fingerprint as data_fingerprint  # report, trends import it here
from .freshness import has_temp_table
from .notoriety import exclusion
from .query import queries_dir
from .substances import Substance

STRATA = ("sex", "age", "year")
SORT_KEYS = ("ebgm", "eb05", "ror", "ror_lower", "prr", "ic", "ic025", "a", "p_adj", "term")
EBGM_COLUMNS = ("ebgm", "eb05", "eb95")
OUTPUT_COLUMNS = (
    "term a b c d expected prr prr_lower prr_upper chi2 ror ror_lower ror_upper ic ic025 ic975 "
    "ebgm eb05 eb95 p_adj zero_corrected signal_prr signal_ror signal_ic signal_ebgm "
    "ebgm_below_eb05"
).split()

CAVEATS = (
    "FAERS is a spontaneous reporting system: there are no denominators (exposure is unknown), "
    "reports can be duplicated, incomplete or stimulated by publicity and regulatory action, and "
    "reporting ratios are not incidence. A signal of disproportionate reporting is a reason to "
    "look closer at the cases, not evidence that the substance causes the reaction."
)

_STRATUM_SQL = {
    "sex": "sex_code(sex)",
    "age": "age_group(age_in_years(age, age_cod))",  # the registry's groups (clean's macro)
    "year": "left(quarter, 4)",
}


_DDL = (
    """CREATE TABLE IF NOT EXISTS signal_priors (
        fingerprint VARCHAR PRIMARY KEY, alpha1 DOUBLE, beta1 DOUBLE, alpha2 DOUBLE,
        beta2 DOUBLE, p DOUBLE, loglik DOUBLE, converged BOOLEAN, n_pairs BIGINT,
        n_points BIGINT, method VARCHAR, loglik_full DOUBLE, fit_seconds DOUBLE,
        fitted_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS signal_runs (
        run_id VARCHAR PRIMARY KEY, substance VARCHAR, substance_version VARCHAR,
        through VARCHAR, roles VARCHAR, stratify VARCHAR, min_cases INTEGER,
        n_cases BIGINT, n_substance_cases BIGINT, n_terms BIGINT, prior_alpha1 DOUBLE,
        prior_beta1 DOUBLE, prior_alpha2 DOUBLE, prior_beta2 DOUBLE, prior_p DOUBLE,
        prior_loglik DOUBLE, prior_converged BOOLEAN, prior_n_pairs BIGINT, prior_method VARCHAR,
        prior_loglik_full DOUBLE, data_fingerprint VARCHAR, tool_version VARCHAR,
        created_at TIMESTAMP, background VARCHAR, background_version VARCHAR, groups VARCHAR,
        exclude_window INTEGER, era VARCHAR, remove_maskers INTEGER, subset VARCHAR)""",
    f"""CREATE TABLE IF NOT EXISTS signals (run_id VARCHAR, substance VARCHAR, through VARCHAR,
        term VARCHAR, a BIGINT, b BIGINT, c BIGINT, d BIGINT,
        {", ".join(f"{c} DOUBLE" for c in OUTPUT_COLUMNS[5:20])},
        {", ".join(f"{c} BOOLEAN" for c in OUTPUT_COLUMNS[20:])}, term_kind VARCHAR,
        maskers VARCHAR)""",
)


@dataclass(frozen=True)
class SignalRun:
    """One signals computation: the table, the prior behind its EBGM, and what produced it."""

    table: pd.DataFrame
    prior: stats.Prior
    run_id: str
    substance: str
    substance_version: str
    through: str
    roles: str | None
    stratify: tuple[str, ...]
    min_cases: int
    n_cases: int
    n_substance_cases: int
    exposed: frozenset[str]  # caseids of the cases involving the substance
    sort: str = "eb05"  # the column the table is sorted by (see `sort_key`)
    engine: str = "duckdb"  # what counted: duckdb, or spark (`surveillance.spark`)
    design: Design = DEFAULT  # the background and the event groups (`surveillance.design`)

    @property
    def ebgm_available(self) -> bool:
        """Whether EBGM/EB05/EB95 may be shown and counted: only under a converged prior."""
        return bool(self.prior.converged)

    @property
    def prior_warning(self) -> str | None:
        """The warning every output carries when EBGM is unavailable, else None."""
        if self.ebgm_available:
            return None
        why = self.prior.method.partition("not converged: ")[2] or "the fit did not converge"
        return (
            f"WARNING: EBGM unavailable: the EBGM prior did not converge ({why}); EBGM, EB05 and "
            "EB95 are not shown and do not count toward the signal criteria."
        )


def sort_key(sort: str | None, ebgm_available: bool) -> str:
    """The column to sort by: as asked, or eb05 by default; ic025 in place of an EBGM column
    when EBGM is unavailable (its values are then missing)."""
    if sort is not None and sort not in SORT_KEYS:
        raise UsageError(f"--sort: one of {', '.join(SORT_KEYS)}")
    chosen = sort or "eb05"
    return "ic025" if chosen in EBGM_COLUMNS and not ebgm_available else chosen


def _stratify(stratify: Sequence[str] | str | None) -> tuple[str, ...]:
    if not stratify:
        return ()
    items = stratify.split(",") if isinstance(stratify, str) else list(stratify)
    parsed = tuple(dict.fromkeys(s.strip().lower() for s in items if s.strip()))
    bad = sorted(set(parsed) - set(STRATA))
    if bad:
        raise UsageError(f"--stratify: unknown stratum {', '.join(bad)}; use sex, age, year")
    return parsed


def resolve_through(con: duckdb.DuckDBPyConnection, through: str | None) -> tuple[str, bool]:
    """The analysis quarter (default: the latest loaded), and whether it is the latest loaded.

    A quarter that is not loaded is refused with one line naming the latest loaded quarter."""
    loaded = [r[0] for r in con.execute("SELECT quarter FROM quarters ORDER BY quarter").fetchall()]
    if not loaded:
        raise NoDataError("no quarters loaded; run 'surveillance load' first")
    q = quarter_option(through, "--through")
    if q is None:
        return str(loaded[-1]), True
    if q not in loaded:
        raise NoDataError(f"{q} is not loaded; the latest loaded quarter is {loaded[-1]}")
    return q, q == loaded[-1]


# The latest quarter's counts: SQL files in queries/signals/, which DuckDB runs as they are and
# Spark transpiled (surveillance.spark). Each of these is registered under its name, in this
# order, for the queries after it.
SIGNAL_VIEWS = (("signal_exposed", "exposed"), ("signal_reactions", "reactions"))
_DUCKDB_PARAM = re.compile(r"\$([a-z_]+)")


def signal_sql(name: str) -> str:
    """The text of one shared signals query, `queries/signals/<name>.sql`."""
    return (queries_dir() / "signals" / f"{name}.sql").read_text(encoding="utf-8")


def signal_values(substance: Substance, roles: str | None) -> dict[str, Any]:
    """The values the shared signals queries bind: substance, its drug label, roles."""
    return {"substance": substance.name, "label": f"[{substance.name}]", "roles": roles}


@dataclass(frozen=True)
class Counts:
    """What an engine counted for one substance, all the statistics need.

    strata: stratum, n, n_exposed; cells: pt_key, stratum, n_term, a for every term with
    a >= 1; exposed: the caseids involving the substance; names: each pt_key's spelling;
    pairs(): n and e of every drug-term pair for the prior, counted only when called;
    removed: pt_key, stratum, c_removed, d_removed taken off c and d by masking (None: none);
    maskers: each masked pt_key's removed drugs, '; '-joined."""

    strata: pd.DataFrame
    cells: pd.DataFrame
    exposed: frozenset[str]
    names: dict[str, str]
    pairs: Callable[[], tuple[Any, Any]]
    removed: pd.DataFrame | None = None
    maskers: dict[str, str] | None = None


def shared_counts(
    register: Callable[[str, str], None],
    frame: Callable[[str], pd.DataFrame],
    pairs: Callable[[], tuple[Any, Any]] | None = None,
) -> Counts:
    """The latest quarter's counts by the shared SQL files, on any engine.

    register(view, query) makes a query's rows readable under the view's name; frame(query)
    returns a query's rows. Both bind the query's parameters (`signal_values`) themselves.
    `pairs` counts the drug-by-term table another way than `pairs.sql` (DuckDB's sparse one)."""
    for view, query in SIGNAL_VIEWS:
        register(view, query)

    def by_sql() -> tuple[Any, Any]:
        register("signal_drugs", "drugs")
        found = frame("pairs")
        return found["n"].to_numpy(dtype=float), found["e"].to_numpy(dtype=float)

    terms = frame("terms")
    return Counts(
        frame("strata"),
        frame("cells"),
        frozenset(frame("exposed")["caseid"].tolist()),
        dict(zip(terms["pt_key"], terms["pt"], strict=True)),
        pairs or by_sql,
    )


def _duckdb_counts(
    con: duckdb.DuckDBPyConnection, substance: Substance, roles: str | None
) -> Counts:
    """The latest quarter's counts by the shared SQL files on the database."""
    values = signal_values(substance, roles)

    def bound(sql: str) -> dict[str, Any]:
        return {name: values[name] for name in dict.fromkeys(_DUCKDB_PARAM.findall(sql))}

    def register(view: str, query: str) -> None:
        sql = signal_sql(query)
        # A view cannot hold bound values: a query that takes some is kept as a temp table.
        kind = "TABLE" if bound(sql) else "VIEW"
        con.execute(f"CREATE OR REPLACE TEMP {kind} {view} AS\n{sql}", bound(sql))

    def frame(query: str) -> pd.DataFrame:
        sql = signal_sql(query)
        return con.execute(sql, bound(sql)).fetchdf()

    def pairs() -> tuple[Any, Any]:
        return sparse_pairs(con, signal_sql, bound(signal_sql("drugs")))

    return shared_counts(register, frame, pairs)


def _term_names(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    return dict(con.execute(signal_sql("terms")).fetchall())


def _build_case_tables(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    through: str,
    latest: bool,
    roles: str | None,
    stratify: tuple[str, ...],
    keys: list[str] | None = None,
) -> None:
    """Temp tables of the cases (with their stratum), the exposed ones and their terms (only
    the PT keys `keys` when given).

    Through the last loaded quarter the clean layer already holds these cases; for an earlier
    quarter they are rebuilt as of then from the raw layer. Without strata the cases need no
    demographics (the join with `reports`), and each case's terms come once by the shared
    reactions query, which needs no DISTINCT over all of them."""
    stratum = " || '|' || ".join(_STRATUM_SQL[s] for s in stratify) if stratify else "'all'"
    source = (
        "surviving_reports($through)"
        if not latest
        else "cases"
        if not stratify
        else "(SELECT c.caseid, c.source, c.primaryid, c.quarter, r.sex, r.age, r.age_cod "
        "FROM cases c JOIN reports r USING (source, primaryid))"
    )
    # The stratum expression is built from the constants in _STRATUM_SQL, never from input.
    # Through the last loaded quarter every reader joins the clean layer by caseid: the report
    # keys are kept only for the raw layer's joins (a third of the time on 18 M cases).
    keys_of_report = "" if latest else "source, primaryid, quarter, "
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _sig_cases AS
        SELECT caseid, {keys_of_report}{stratum} AS stratum FROM {source}""",  # noqa: S608
        {} if latest else {"through": through},
    )
    params = {"substance": substance.name, "roles": roles}
    if latest:
        con.execute(
            """CREATE OR REPLACE TEMP TABLE _sig_exposed AS
            SELECT caseid FROM involved_cases($substance, $roles)""",
            params,
        )
        # Every case of case_reactions is in cases: the join only brings the stratum.
        join = "JOIN _sig_cases c USING (caseid)" if stratify else ""
        reactions = (
            f"({signal_sql('reactions')}\n)" if keys is None else _keyed_reactions(con, keys)
        )
        con.execute(
            f"""CREATE OR REPLACE TEMP TABLE _sig_reac AS
            SELECT r.caseid, {"c.stratum" if stratify else "'all'"} AS stratum, r.pt_key
            FROM {reactions} r {join}""",  # noqa: S608
        )
        return
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE _sig_exposed AS {involving_sql(latest)}",
        {"which": substance.name, "roles": roles},
    )
    con.execute(
        """CREATE OR REPLACE TEMP TABLE _sig_reac AS
        SELECT DISTINCT c.caseid, c.stratum, upper(trim(r.pt)) AS pt_key
        FROM _sig_cases c
        JOIN raw_reac r
          ON r.source = c.source AND r.primaryid = c.primaryid AND r.quarter = c.quarter
        WHERE r.pt IS NOT NULL AND trim(r.pt) <> ''
          AND ($all_keys OR list_contains($keys, upper(trim(r.pt))))""",
        {"all_keys": keys is None, "keys": keys or []},
    )


KEYED_REACTIONS = ("_sig_reac_keyed", "_sig_reac_keyed_of")
"""Temp tables of the latest quarter's reactions of some PT keys and what they were made for."""


def _keyed_reactions(con: duckdb.DuckDBPyConnection, keys: list[str]) -> str:
    """The name of a temp table of the latest quarter's (caseid, pt_key) of these PT keys, made
    unless it is there for these keys and this data vintage: the sensitivity analyses count the
    same keys in every run (2.7 s a run on the whole archive). `forget_keyed_reactions` drops it."""
    table, made_for = KEYED_REACTIONS
    identity = json.dumps([keys, data_fingerprint(con)])
    if has_temp_table(con, made_for):
        row = con.execute(f"SELECT identity FROM {made_for}").fetchone()  # noqa: S608
        if row is not None and row[0] == identity:
            return table
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {table} AS
        SELECT r.caseid, r.pt_key FROM ({signal_sql("reactions")}
        ) r WHERE list_contains($keys, r.pt_key)""",  # noqa: S608
        {"keys": keys},
    )
    con.execute(
        f"CREATE OR REPLACE TEMP TABLE {made_for} AS SELECT $i AS identity", {"i": identity}
    )
    return table


def forget_keyed_reactions(con: duckdb.DuckDBPyConnection) -> None:
    """Drop the keyed reactions `_keyed_reactions` keeps (safe when there are none)."""
    for table in KEYED_REACTIONS:
        con.execute(f"DROP TABLE IF EXISTS {table}")


# A drug row's drug as the prior counts it (queries/signals/drugs.sql, which Spark runs too, says
# the same): the substance's label where the row matches it, else its active ingredient.
_DRUG_OF_ROW = """CASE WHEN sn.string IS NOT NULL OR sa.string IS NOT NULL THEN $label
                 ELSE upper(trim(coalesce(g.prod_ai, g.drugname))) END"""
_SUBSTANCE_ROWS = """LEFT JOIN substance_strings sn
          ON sn.substance = $substance AND sn.field = 'drugname' AND sn.string = g.drugname
        LEFT JOIN substance_strings sa
          ON sa.substance = $substance AND sa.field = 'prod_ai' AND sa.string = g.prod_ai"""


def _drug_source(latest: bool) -> tuple[str, str]:
    """The drug rows of a case and their join with a case table `c`: the clean layer's through
    the last loaded quarter, else the raw layer's rows of each case's version."""
    if latest:
        return "case_drugs", "USING (caseid)"
    return (
        "raw_drug",
        "ON g.source = c.source AND g.primaryid = c.primaryid AND g.quarter = c.quarter",
    )


def _build_drug_table(
    con: duckdb.DuckDBPyConnection, substance: Substance, latest: bool, roles: str | None
) -> None:
    """Temp table `_sig_drugs` of each case's drugs as ingredients (the substance as itself),
    for the prior: caseid and drug, each pair once."""
    drugs, join = _drug_source(latest)
    # The table names and joins are constants, never input.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _sig_drugs AS
        SELECT DISTINCT c.caseid, {_DRUG_OF_ROW} AS drug
        FROM _sig_cases c
        JOIN {drugs} g {join}
        {_SUBSTANCE_ROWS}
        WHERE role_counts(g.role_cod, $roles)
          AND coalesce(g.prod_ai, g.drugname) IS NOT NULL""",  # noqa: S608
        {"substance": substance.name, "label": f"[{substance.name}]", "roles": roles},
    )


def masking_drug_rows(
    con: duckdb.DuckDBPyConnection, substance: Substance, latest: bool, roles: str | None
) -> None:
    """The background's drugs that `masking.removals` reads (`masking.DRUG_ROWS`), by the
    prior's drug definition, the substance's label left out. Each distinct (drugname, prod_ai)
    is named once (about 100,000 on the whole archive), not each of its 71 M drug rows: their
    text is never written, only each case's drug numbers (39 s to 24 s on the whole archive)."""
    drugs, join = _drug_source(latest)
    strings, ids, pairs = masking.DRUG_ROWS
    # The table names and joins are constants, never input.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {strings} AS
        SELECT g.drugname, g.prod_ai, {_DRUG_OF_ROW} AS drug
        FROM (SELECT DISTINCT drugname, prod_ai FROM {drugs}
              WHERE coalesce(prod_ai, drugname) IS NOT NULL) g
        {_SUBSTANCE_ROWS}""",  # noqa: S608
        {"substance": substance.name, "label": f"[{substance.name}]"},
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {ids} AS
        SELECT drug, CAST(row_number() OVER (ORDER BY drug) - 1 AS INTEGER) AS drug_id
        FROM (SELECT DISTINCT drug FROM {strings} WHERE drug <> $label)""",  # noqa: S608
        {"label": f"[{substance.name}]"},
    )
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {pairs} AS
        SELECT DISTINCT c.ci, i.drug_id
        FROM _mask_cases c
        JOIN {drugs} g {join}
        JOIN (SELECT s.drugname, s.prod_ai, i.drug_id FROM {strings} s JOIN {ids} i USING (drug)) i
          ON i.drugname IS NOT DISTINCT FROM g.drugname AND i.prod_ai IS NOT DISTINCT FROM g.prod_ai
        WHERE role_counts(g.role_cod, $roles)""",  # noqa: S608
        {"roles": roles},
    )


def _asof_counts(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    through: str,
    latest: bool,
    roles: str | None,
    stratify: tuple[str, ...],
    design: Design = DEFAULT,
    keys: list[str] | None = None,
) -> Counts:
    """The counts as of an earlier quarter, in strata, under a design other than the default or
    for some PT keys only, from temp tables of the cases (narrowed and given group events by
    `Design.apply`)."""
    _build_case_tables(con, substance, through, latest, roles, stratify, keys)
    design.apply(con, latest, roles, substance.name, through)
    strata = con.execute(
        """SELECT c.stratum, count(*) AS n, count(e.caseid) AS n_exposed
        FROM _sig_cases c
        LEFT JOIN _sig_exposed e USING (caseid)
        GROUP BY c.stratum ORDER BY c.stratum"""
    ).fetchdf()
    # A term with a case involving the substance in any stratum keeps all its strata.
    cells = con.execute(
        """SELECT r.pt_key, r.stratum, count(*) AS n_term, count(e.caseid) AS a
        FROM _sig_events r LEFT JOIN _sig_exposed e USING (caseid)
        GROUP BY r.pt_key, r.stratum
        QUALIFY sum(count(e.caseid)) OVER (PARTITION BY r.pt_key) > 0
        ORDER BY r.pt_key, r.stratum"""
    ).fetchdf()
    exposed = frozenset(r[0] for r in con.execute("SELECT caseid FROM _sig_exposed").fetchall())
    removed, maskers = None, None
    if design.masking is not None:
        removed, maskers = masking.removals(
            con, design.masking, lambda: masking_drug_rows(con, substance, latest, roles)
        )

    def pairs() -> tuple[Any, Any]:
        _build_drug_table(con, substance, latest, roles)
        return _pair_counts(con, bool(stratify))

    names = {**_term_names(con), **design.names()}
    return Counts(strata, cells, exposed, names, pairs, removed, maskers)


def _cells(strata: pd.DataFrame, cells: pd.DataFrame, removed: pd.DataFrame | None = None) -> Any:
    """Terms and their cells a, b, c, d as (terms x strata) arrays, less the cases `removed`
    takes off c and d (masking); no term gives empty arrays."""
    terms = sorted(cells["pt_key"].unique())
    order = {s: i for i, s in enumerate(strata["stratum"])}
    t_index = {t: i for i, t in enumerate(terms)}
    shape = (len(terms), len(order))
    a = np.zeros(shape)
    n_term = np.zeros(shape)
    rows = cells["pt_key"].map(t_index).to_numpy(dtype=np.int64)
    cols = cells["stratum"].map(order).to_numpy(dtype=np.int64)
    a[rows, cols] = cells["a"].to_numpy()
    n_term[rows, cols] = cells["n_term"].to_numpy()
    n = strata["n"].to_numpy(dtype=float)[None, :]
    exposed = strata["n_exposed"].to_numpy(dtype=float)[None, :]
    b = exposed - a
    c = n_term - a
    d = n - exposed - c
    if removed is not None and not removed.empty:
        rows = removed["pt_key"].map(t_index).to_numpy(dtype=np.int64)
        cols = removed["stratum"].map(order).to_numpy(dtype=np.int64)
        np.subtract.at(c, (rows, cols), removed["c_removed"].to_numpy(dtype=float))
        np.subtract.at(d, (rows, cols), removed["d_removed"].to_numpy(dtype=float))
    return terms, a, b, c, d


def _pair_counts(con: duckdb.DuckDBPyConnection, stratified: bool) -> tuple[Any, Any]:
    """Observed n and expected E of every drug-term pair with n >= 1 (stratified E if asked)."""
    if not stratified:
        frame = con.execute(
            """WITH pairs AS (
                SELECT d.drug, r.pt_key, count(*) AS n
                FROM _sig_drugs d JOIN _sig_reac r USING (caseid) GROUP BY ALL),
            drug_tot AS (SELECT drug, count(DISTINCT caseid) AS n_i FROM _sig_drugs GROUP BY drug),
            term_tot AS (SELECT pt_key, count(*) AS n_j FROM _sig_reac GROUP BY pt_key)
            SELECT p.n, i.n_i * j.n_j / (SELECT count(*) FROM _sig_cases) AS e
            FROM pairs p JOIN drug_tot i USING (drug) JOIN term_tot j USING (pt_key)"""
        ).fetchnumpy()
        return frame["n"], frame["e"]
    frame = con.execute(
        """WITH dk AS (
            SELECT d.drug, c.stratum, count(DISTINCT d.caseid) AS n_ik
            FROM _sig_drugs d JOIN _sig_cases c USING (caseid) GROUP BY ALL),
        tk AS (SELECT pt_key, stratum, count(*) AS n_jk FROM _sig_reac GROUP BY ALL),
        nk AS (SELECT stratum, count(*) AS n_k FROM _sig_cases GROUP BY ALL),
        pairs AS (
            SELECT d.drug, r.pt_key, count(*) AS n
            FROM _sig_drugs d JOIN _sig_reac r USING (caseid) GROUP BY ALL)
        SELECT p.n, sum(dk.n_ik * tk.n_jk / nk.n_k) AS e
        FROM pairs p JOIN dk USING (drug) JOIN tk USING (pt_key, stratum) JOIN nk USING (stratum)
        GROUP BY p.drug, p.pt_key, p.n"""
    ).fetchnumpy()
    return frame["n"], frame["e"]


def fitted_prior(
    con: duckdb.DuckDBPyConnection,
    fingerprint: str,
    pairs: Callable[[], tuple[Any, Any]],
) -> stats.Prior:
    """The EBGM prior for these data and options: stored, or fitted now and stored.

    pairs counts the drug-term pairs the fit needs; it runs only when there is no stored prior."""
    row = con.execute(
        "SELECT alpha1, beta1, alpha2, beta2, p, loglik, converged, n_pairs, n_points, method, "
        "loglik_full FROM signal_priors WHERE fingerprint = $f",
        {"f": fingerprint},
    ).fetchone()
    if row:
        return stats.Prior(*row)
    start = time.perf_counter()
    prior = fit_pairs(pairs)
    seconds = time.perf_counter() - start
    con.execute(
        "INSERT OR REPLACE INTO signal_priors VALUES ($f, $alpha1, $beta1, $alpha2, $beta2, $p, "
        "$loglik, $converged, $n_pairs, $n_points, $method, $loglik_full, $seconds, $now)",
        {"f": fingerprint, **asdict(prior), "seconds": seconds, "now": _now()},
    )
    return prior


def fit_pairs(pairs: Callable[[], tuple[Any, Any]]) -> stats.Prior:
    """The EBGM prior fitted on the drug-term pairs that `pairs` counts."""
    n, e = pairs()
    return stats.fit_prior(np.asarray(n, dtype=float), np.asarray(e, dtype=float))


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def check_exposed(counts: Counts, substance: Substance, roles: str | None, through: str) -> None:
    """No case with the substance (in the roles) is a NoDataError."""
    if int(counts.strata["n_exposed"].sum()) == 0:
        in_roles = f" in roles {roles}" if roles else ""
        raise NoDataError(f"no {substance.name} cases{in_roles} through {through}")


def signals(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    through: str | None = None,
    roles: str | None = None,
    min_cases: int = 3,
    stratify: Sequence[str] | str | None = None,
    sort: str | None = None,
    prior: stats.Prior | None = None,
    background: str | Path | None = None,
    groups: bool = False,
    group_files: Sequence[str | Path] = (),
    meddra: str | Path | None = None,
    design: Design | None = None,
    terms: Sequence[str] | None = None,
    exclude_window: int | None = None,
    era: str | None = None,
    remove_maskers: int | None = None,
    subset: str | None = None,
) -> SignalRun:
    """Every reaction term co-reported with the substance, with PRR, ROR, IC and EBGM.

    Cases are as of the end of `through` (default: the last loaded quarter). Terms with fewer
    than `min_cases` substance cases are left out of the table (p_adj is over all terms with
    a >= 1). The run is stored in `signal_runs`/`signals`; its id names the prior used. A given
    `prior` is used as it is (e.g. one prior for a series of quarters); otherwise the stored or
    a newly fitted one. Under a prior that did not converge EBGM, EB05 and EB95 are missing
    and signal_ebgm is false (see `stats.signal_table`). `sort`: see `sort_key`. No case with
    the substance (in the roles) through the quarter is a NoDataError.

    The design (`surveillance.design`): `background` is the comparator, 'all' (default), a
    shipped one ('natural-products') or a term file: c and d then count only the cases matching
    it (not the substance), and the prior is fitted on the substance's and the background's
    cases. `groups` adds the shipped event groups, `group_files` a user's, `meddra` a MedDRA
    ASCII folder's HLT/HLGT/SOC groups: each is one row (term_kind says which), a case counting
    once if it has any PT of the group. A group's EBGM uses the same prior as the PTs, fitted on
    drug-by-PT pairs only, so adding groups changes no PT row; p_adj is adjusted within each
    kind of row (PTs, groups, HLTs, HLGTs, SOCs) for the same reason. `subset` limits the
    substance's cases to one of `polysubstance.SUBSETS` (only, with-opioids, without-opioids,
    ...): its other cases leave the analysis (not in c or d). A `design` already made
    (`design.make_design`, e.g. one per sensitivity run) is used as it is, without those options.

    `exclude_window` months leaves out every case initially received within that many months on
    or after one of the substance's regulatory events, `era` ('before-2018', '2018-on') every
    case initially received outside it (`surveillance.notoriety`; the prior is fitted without
    them); `remove_maskers` K takes off each term's c and d the cases of its K strongest maskers
    (`surveillance.masking`; the prior is unchanged), named in a `maskers` column.

    `terms` counts only these PTs (display names) and the design's groups, under a given
    `prior`: the few rows the sensitivity analyses compare, at a fraction of the cost. That
    table is partial (p_adj over its rows only), so it is returned and not stored.
    """
    check_options(min_cases, sort)
    if terms is not None and prior is None:
        raise UsageError("signals for some terms only need the prior of a full run")
    asked = (
        background,
        groups,
        tuple(group_files),
        meddra,
        exclude_window,
        era,
        remove_maskers,
        subset,
    )
    if design is None:
        design = make_design(
            *asked[:4],
            exclusion=exclusion(substance.name, exclude_window, era),
            masking=remove_maskers,
            subset=subset,
        )
    elif asked != (None, False, (), None, None, None, None, None):
        raise UsageError("give a design or its options (background, groups, ...), not both")
    for ddl in _DDL:
        ensure_derived_table(con, ddl)
    ensure_macros(con)
    ensure_extracted(con, substance)
    design.prepare(con, substance)
    roles = roles_option(roles)
    strata_keys = _stratify(stratify)
    through, latest = resolve_through(con, through)
    keys = None
    if terms is not None:
        members = [pt for g in design.groups for pt in g.pts]
        keys = sorted({t.strip().upper() for t in [*terms, *members]})
    if latest and not strata_keys and design.is_default and keys is None:
        counts = _duckdb_counts(con, substance, roles)
    else:
        counts = _asof_counts(con, substance, through, latest, roles, strata_keys, design, keys)
    check_exposed(counts, substance, roles, through)
    design.check_background(int((counts.strata["n"] - counts.strata["n_exposed"]).sum()), through)
    data = data_fingerprint(con)
    options = [data, substance.name, substance.version, through, roles, strata_keys]
    options += design.prior_key()
    prior_key = hashlib.sha256(json.dumps([*options, __version__]).encode()).hexdigest()
    if prior is None:
        prior = fitted_prior(con, prior_key, counts.pairs)
    run = signal_run(
        counts, prior, substance, through, roles, strata_keys, min_cases, sort, data, design
    )
    if terms is None:
        _store(con, run, data)
    return run


def check_options(min_cases: int, sort: str | None) -> None:
    """Refuse a min_cases below 1 or an unknown sort column before anything is counted."""
    if min_cases < 1:
        raise UsageError("--min-cases must be at least 1")
    sort_key(sort, True)


def signal_run(
    counts: Counts,
    prior: stats.Prior,
    substance: Substance,
    through: str,
    roles: str | None,
    stratify: tuple[str, ...],
    min_cases: int,
    sort: str | None,
    data: str | None,
    design: Design = DEFAULT,
) -> SignalRun:
    """The signal table from an engine's counts under a prior: statistics, min_cases, sort.

    data names the data vintage (`data_fingerprint`), part of the run's id. Each kind of row
    (PTs, then each kind of group) is one family for the statistics, p_adj adjusted within it."""
    terms, a, b, c, d = _cells(counts.strata, counts.cells, counts.removed)
    group_kinds = design.kinds()
    kinds = np.array([group_kinds.get(t, "pt") for t in terms], dtype=object)
    frames = []
    for kind in TERM_KINDS:
        rows = np.flatnonzero(kinds == kind)
        if len(rows) == 0:
            continue
        if stratify:
            cells = {"a": a[rows], "b": b[rows], "c": c[rows], "d": d[rows]}
            columns = stats.stratified_signal_table(**cells, prior=prior)
        else:
            cells = {"a": a[rows, 0], "b": b[rows, 0], "c": c[rows, 0], "d": d[rows, 0]}
            columns = stats.signal_table(**cells, prior=prior)
        frame = pd.DataFrame(columns)
        frame.insert(0, "term", [counts.names.get(terms[i], terms[i]) for i in rows])
        frame.insert(1, "term_kind", kind)
        if design.masking is not None:
            frame["maskers"] = [(counts.maskers or {}).get(terms[i], "") for i in rows]
        frames.append(frame)
    names = output_columns(design)
    if frames:
        table = pd.concat(frames, ignore_index=True).assign(background=design.background_label)
        if design.subset is not None:
            table = table.assign(subset=design.subset)
    else:
        table = pd.DataFrame({c: pd.Series([], dtype=object) for c in names})
    table = table[names]
    for cell in "abcd":
        table[cell] = table[cell].astype("int64")
    table = table[table["a"] >= min_cases]
    sort = sort_key(sort, bool(prior.converged))
    ascending = sort in ("p_adj", "term")
    table = table.sort_values([sort, "term"], ascending=[ascending, True], kind="mergesort")
    table = table.reset_index(drop=True)
    options = [data, substance.name, substance.version, through, roles, stratify]
    identity: list[Any] = [*options, min_cases, prior_fingerprint(prior)]
    if not design.is_default:
        identity.append(design.key())
    return SignalRun(
        table,
        prior,
        hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16],
        substance.name,
        substance.version,
        through,
        roles,
        stratify,
        min_cases,
        int(counts.strata["n"].sum()),
        int(counts.strata["n_exposed"].sum()),
        counts.exposed,
        sort,
        design=design,
    )


def background_statement(design: Design) -> str:
    """The sentences every printed run carries: which cases c and d count, and which cases the
    design leaves out (exclusion) or takes off each term's c and d (masking)."""
    if design.background is None:
        text = "Background (c, d): all cases without the substance."
    else:
        text = f"Background (c, d): only the {design.background_label} cases without the substance."
    if design.exclusion is not None:
        text += " " + design.exclusion.statement()
    if design.masking is not None:
        text += (
            f" Masking: each term's c and d leave out the cases of its {design.masking} drugs "
            "of highest masking ratio above 1 (Maignen 2014; column maskers)."
        )
    return text


def kind_marked(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each group row's term prefixed by its kind ('[group] liver injury'), so a
    display cut to the term column still tells a group from a PT of the same name."""
    if "term_kind" not in table:
        return table
    kind = table["term_kind"]
    return table.assign(term=table["term"].where(kind == "pt", "[" + kind + "] " + table["term"]))


def output_columns(design: Design) -> list[str]:
    """The signal table's columns: OUTPUT_COLUMNS, and under a design other than the default
    also what each row is (term_kind, after term) and the comparator (background), then the
    subset of the substance's cases when there is one, and under masking the drugs removed from
    each row's c and d (maskers, last)."""
    if design.is_default:
        return list(OUTPUT_COLUMNS)
    subset = ["subset"] if design.subset is not None else []
    masked = ["maskers"] if design.masking is not None else []
    return [OUTPUT_COLUMNS[0], "term_kind", *OUTPUT_COLUMNS[1:], "background", *subset, *masked]


def prior_fingerprint(prior: stats.Prior) -> str:
    """sha256 naming a prior by its five hyperparameters and convergence: part of a run's id."""
    theta = [prior.alpha1, prior.beta1, prior.alpha2, prior.beta2, prior.p, prior.converged]
    return hashlib.sha256(json.dumps([repr(float(v)) for v in theta]).encode()).hexdigest()


def _store(con: duckdb.DuckDBPyConnection, run: SignalRun, data: str) -> None:
    """Replace the stored run with the same inputs and prior (same run_id) by this one."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM signals WHERE run_id = $r", {"r": run.run_id})
        con.execute("DELETE FROM signal_runs WHERE run_id = $r", {"r": run.run_id})
        con.execute(
            "INSERT INTO signal_runs VALUES ($r, $s, $v, $through, $roles, $stratify, $min, "
            "$n, $ns, $nt, $alpha1, $beta1, $alpha2, $beta2, $p, $loglik, $converged, $n_pairs, "
            "$method, $loglik_full, $data, $tool, $now, $background, $background_version, "
            "$groups, $exclude_window, $era, $remove_maskers, $subset)",
            {
                "r": run.run_id,
                "s": run.substance,
                "v": run.substance_version,
                "through": run.through,
                "roles": run.roles,
                "stratify": ",".join(run.stratify) or None,
                "min": run.min_cases,
                "n": run.n_cases,
                "ns": run.n_substance_cases,
                "nt": len(run.table),
                **{k: v for k, v in asdict(run.prior).items() if k != "n_points"},
                "data": data,
                "tool": __version__,
                "now": _now(),
                "background": run.design.background_name,
                "background_version": b.version if (b := run.design.background) else None,
                "groups": run.design.groups_json(),
                "exclude_window": (x := run.design.exclusion) and x.months,
                "era": x and x.era,
                "remove_maskers": run.design.masking,
                "subset": run.design.subset,
            },
        )
        frame = run.table if "term_kind" in run.table else run.table.assign(term_kind="pt")
        if "maskers" not in frame:
            frame = frame.assign(maskers=pd.Series(None, index=frame.index, dtype=object))
        con.register("_signals_frame", frame)
        con.execute(
            f"INSERT INTO signals SELECT $r, $s, $through, {', '.join(OUTPUT_COLUMNS)}, "  # noqa: S608
            "term_kind, maskers FROM _signals_frame",
            {"r": run.run_id, "s": run.substance, "through": run.through},
        )
        con.unregister("_signals_frame")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise

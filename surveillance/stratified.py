"""The Mantel-Haenszel ROR beside the crude ROR, by age group, sex, year group and reporter type.

Reads the clean layer (`cases`, `case_reactions` through the shared `queries/signals/reactions.sql`,
`pt_terms`) and the substance's cases through the `involved_cases` macro, the one definition of
who is exposed that the signals use; the statistics are `stats.mantel_haenszel`. `signal_mh`
stores one row per term and factor of a signals run in the table `signal_mh`, keyed by the run's
run_id (which names its data, options and prior), so the report can show it later.

Strata, from the registry (`definitions`) and the clean layer: age = `age_group` of
`cases.age_years`; sex = `cases.sex`; year = YEAR_GROUPS of the year of `cases.initial_quarter`
(the case's initial FDA receipt); reporter = `cases.reporter_type` when it is a FAERS occupation
code, else unknown. UNKNOWN_RULE says what happens to unknown values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from . import stats
from .clean import ensure_macros
from .db import ensure_derived_table
from .definitions import AGE_GROUPS, AGE_UNKNOWN, SEXES, YEAR_BOUNDS, YEAR_GROUPS, roles_option
from .design import EventGroup, group_members
from .errors import NoDataError, UsageError
from .extract import ensure_extracted
from .freshness import data_fingerprint
from .output import p_text
from .signals import SignalRun, resolve_through, signal_sql
from .substances import Substance

FACTORS = ("age", "sex", "year", "reporter")
"""The factors `--mh-by` takes, in the order rows are listed."""
JOINT = "joint"
"""The cross-classification of every factor (age x sex x year x reporter): the MH-adjusted
estimate of the sensitivity analyses (`mh_joint`). MH pools many sparse strata soundly."""
_JOINT_SQL = "concat_ws('|', " + ", ".join(FACTORS) + ")"


def _stratum_sql(factor: str) -> str:
    """A factor's stratum over `_mh_cases`: its column, or JOINT's cross-classification."""
    return _JOINT_SQL if factor == JOINT else factor


UNKNOWN_RULE = (
    "Unknown values (no plausible age, sex not M or F, reporter type missing or not a FAERS "
    "occupation code) form a stratum of their own, so every case of the crude table is in one "
    "stratum and the MH ROR differs from the crude only by the stratification. A stratum "
    "without exposed or unexposed cases, or without cases with or without the term, carries no "
    "information on the odds ratio and is set aside (n_informative counts the others)."
)

# The year group of a case as SQL, built from the registry's constants (never from data).
_YEAR_GROUP = (
    f"CASE WHEN c.initial_quarter IS NULL THEN '{AGE_UNKNOWN}' "
    + " ".join(
        f"WHEN left(c.initial_quarter, 4)::INT < {bound} THEN '{label}'"
        for bound, label in zip(YEAR_BOUNDS, YEAR_GROUPS, strict=False)
    )
    + f" ELSE '{YEAR_GROUPS[-1]}' END"
)
# Each factor's stratum of a case (alias c: cases): the clean layer's one definition of each.
_FACTOR_SQL = {
    "age": "age_group(c.age_years)",
    "sex": "c.sex",
    "year": _YEAR_GROUP,
    "reporter": f"CASE WHEN c.reporter_type_label IS NULL THEN '{AGE_UNKNOWN}' "
    "ELSE c.reporter_type END",
}

OUTPUT_COLUMNS = (
    "term factor n_strata n_informative informative_strata a b c d ror ror_lower ror_upper "
    "ror_mh ror_mh_lower ror_mh_upper mh_change zero_corrected mh_zero_corrected bd_chi2 bd_df "
    "bd_p mh_chi2 mh_p confounding effect_modification"
).split()

_DDL = """CREATE TABLE IF NOT EXISTS signal_mh (
    run_id VARCHAR, substance VARCHAR, through VARCHAR, term VARCHAR, factor VARCHAR,
    n_strata INTEGER, n_informative INTEGER, informative_strata VARCHAR,
    a BIGINT, b BIGINT, c BIGINT, d BIGINT, ror DOUBLE, ror_lower DOUBLE, ror_upper DOUBLE,
    ror_mh DOUBLE, ror_mh_lower DOUBLE, ror_mh_upper DOUBLE, mh_change DOUBLE,
    zero_corrected BOOLEAN, mh_zero_corrected BOOLEAN, bd_chi2 DOUBLE, bd_df INTEGER,
    bd_p DOUBLE, mh_chi2 DOUBLE, mh_p DOUBLE, confounding BOOLEAN, effect_modification BOOLEAN,
    data_fingerprint VARCHAR, created_at TIMESTAMP)"""


def parse_factors(factors: Sequence[str] | str | None) -> tuple[str, ...]:
    """Factors as typed ("sex, age") in canonical order; an unknown or empty one is a UsageError."""
    if factors is None:
        return ()
    items = factors.split(",") if isinstance(factors, str) else list(factors)
    parsed = {f.strip().lower() for f in items if f.strip()}
    bad = sorted(parsed - set(FACTORS))
    if bad or not parsed:
        raise UsageError(
            f"--mh-by: unknown factor {', '.join(bad) or repr(factors)}; use {','.join(FACTORS)}"
        )
    return tuple(f for f in FACTORS if f in parsed)


@dataclass(frozen=True)
class _FactorCounts:
    """One factor's counts: strata labels and the (terms x strata) cells."""

    strata: list[str]
    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    d: np.ndarray


def _build_tables(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None,
    factors: tuple[str, ...],
    terms: Sequence[str] | None,
    groups: Sequence[EventGroup] = (),
) -> list[str]:
    """Temp tables of every case with its strata and exposure, and the wanted terms' reactions
    (and each group's cases once, under the group's key, as `design.Design.apply` counts them).

    Returns the keys counted: the wanted terms (all when None) and groups co-reported with the
    substance."""
    columns = ", ".join(f"{_FACTOR_SQL[f]} AS {f}" for f in factors)
    # The stratum expressions are the constants of _FACTOR_SQL, never input.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _mh_cases AS
        SELECT c.caseid, e.caseid IS NOT NULL AS exposed, {columns}
        FROM cases c
        LEFT JOIN (SELECT caseid FROM involved_cases($substance, $roles)) e USING (caseid)""",  # noqa: S608
        {"substance": substance.name, "roles": roles},
    )
    # The signals' own reaction rows (one per case and term), restricted to the wanted terms.
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE _mh_reac AS
        SELECT r.caseid, r.pt_key FROM (
        {signal_sql("reactions")}
        ) r
        WHERE $all_terms
           OR r.pt_key IN (SELECT pt_key FROM pt_terms WHERE list_contains($terms, pt))""",  # noqa: S608
        {"all_terms": terms is None, "terms": list(terms or [])},
    )
    if groups:
        con.register("_mh_group_frame", group_members({g.key: g.pts for g in groups}))
        try:
            con.execute(
                f"""INSERT INTO _mh_reac SELECT DISTINCT r.caseid, g.event_key FROM (
                {signal_sql("reactions")}
                ) r JOIN _mh_group_frame g USING (pt_key)"""  # noqa: S608
            )
        finally:
            con.unregister("_mh_group_frame")
    found = con.execute(
        """SELECT r.pt_key FROM _mh_reac r JOIN _mh_cases c USING (caseid)
        WHERE c.exposed GROUP BY r.pt_key"""
    ).fetchall()
    return [r[0] for r in found]


# The order strata are listed in: the registry's, unknown last; reporter codes alphabetically.
_STRATUM_ORDER = {
    "age": (*AGE_GROUPS, AGE_UNKNOWN),
    "sex": SEXES,
    "year": (*YEAR_GROUPS, AGE_UNKNOWN),
}


def _rank(factor: str, stratum: str) -> tuple[bool, int, str]:
    order = [s for s in _STRATUM_ORDER.get(factor, ()) if s != AGE_UNKNOWN]
    place = order.index(stratum) if stratum in order else len(order)
    return (stratum == AGE_UNKNOWN, place, stratum)


def _term_cells(con: duckdb.DuckDBPyConnection, factors: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Each factor's (or JOINT's) cells of every term by stratum (pt_key, stratum, n_term, a),
    from one join of the terms' cases with their strata (grouping sets, one per factor)."""
    # The factors are FACTORS (column names of _mh_cases) or JOINT, never input.
    strata = [_stratum_sql(f) for f in factors]
    columns = ", ".join(f"{column} AS s{i}" for i, column in enumerate(strata))
    names = [f"s{i}" for i in range(len(strata))]
    sets = ", ".join(f"(pt_key, {name})" for name in names)
    found = con.execute(
        f"""SELECT pt_key, {", ".join(names)}, grouping({", ".join(names)}) AS grouped,
            count(*) AS n_term, count(*) FILTER (WHERE exposed) AS a
        FROM (SELECT r.pt_key, c.exposed, {columns}
              FROM _mh_reac r JOIN _mh_cases c USING (caseid))
        GROUP BY GROUPING SETS ({sets})"""  # noqa: S608
    ).fetchdf()
    cells = {}
    for i, factor in enumerate(factors):
        # grouping() sets a bit for each column left out of the row's set, the first highest.
        own = found["grouped"] == (1 << len(names)) - 1 - (1 << (len(names) - 1 - i))
        cells[factor] = found.loc[own, ["pt_key", names[i], "n_term", "a"]].rename(
            columns={names[i]: "stratum"}
        )
    return cells


def _factor_counts(
    con: duckdb.DuckDBPyConnection, factor: str, keys: list[str], cells: pd.DataFrame
) -> _FactorCounts:
    """The per-stratum 2x2 cells of every term for one factor (or JOINT): its strata from the
    cases temp table, its term cells from `_term_cells`."""
    # factor is one of FACTORS (a column name of _mh_cases) or JOINT, never input.
    column = _stratum_sql(factor)
    strata = con.execute(
        f"""SELECT {column} AS stratum, count(*) AS n, count(*) FILTER (WHERE exposed) AS n_exposed
        FROM _mh_cases GROUP BY ALL"""  # noqa: S608
    ).fetchdf()
    strata = strata.iloc[
        sorted(range(len(strata)), key=lambda i: _rank(factor, strata["stratum"][i]))
    ]
    labels = [str(s) for s in strata["stratum"]]
    col = {s: i for i, s in enumerate(labels)}
    row = {k: i for i, k in enumerate(keys)}
    cells = cells[cells["pt_key"].isin(row)]
    shape = (len(keys), len(labels))
    a, n_term = np.zeros(shape), np.zeros(shape)
    rows = cells["pt_key"].map(row).to_numpy(dtype=np.int64)
    cols = cells["stratum"].astype(str).map(col).to_numpy(dtype=np.int64)
    a[rows, cols] = cells["a"].to_numpy(dtype=float)
    n_term[rows, cols] = cells["n_term"].to_numpy(dtype=float)
    n = strata["n"].to_numpy(dtype=float)[np.newaxis, :]
    exposed = strata["n_exposed"].to_numpy(dtype=float)[np.newaxis, :]
    c = n_term - a
    return _FactorCounts(labels, a, exposed - a, c, n - exposed - c)


def _rows(names: list[str], factor: str, counts: _FactorCounts) -> pd.DataFrame:
    """One row per term for one factor: cells, crude and MH ROR, the tests and the flags."""
    r = stats.mantel_haenszel(a=counts.a, b=counts.b, c=counts.c, d=counts.d)
    keep = stats.informative_strata(a=counts.a, b=counts.b, c=counts.c, d=counts.d)
    return pd.DataFrame(
        {
            "term": names,
            "factor": factor,
            "n_strata": r.n_strata,
            "n_informative": r.n_informative,
            "informative_strata": [
                ", ".join(s for s, k in zip(counts.strata, row, strict=True) if k) for row in keep
            ],
            **{cell: getattr(counts, cell).sum(axis=1).astype(np.int64) for cell in "abcd"},
            "ror": r.crude.ror,
            "ror_lower": r.crude.lower,
            "ror_upper": r.crude.upper,
            "ror_mh": r.mh.ror,
            "ror_mh_lower": r.mh.lower,
            "ror_mh_upper": r.mh.upper,
            "mh_change": r.change,
            "zero_corrected": r.crude.zero_corrected,
            "mh_zero_corrected": r.mh.zero_corrected,
            "bd_chi2": r.bd_chi2,
            "bd_df": r.bd_df,
            "bd_p": r.bd_p,
            "mh_chi2": r.mh_chi2,
            "mh_p": r.mh_p,
            "confounding": r.confounding,
            "effect_modification": r.effect_modification,
        }
    )


def mh_table(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None = None,
    factors: Sequence[str] | str = FACTORS,
    terms: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Crude and Mantel-Haenszel ROR of each term for each factor, through the latest quarter.

    One row per term (its display spelling) and factor, terms in the order given (default:
    every term co-reported with the substance, alphabetically), factors in FACTORS order; the
    columns are OUTPUT_COLUMNS (`stats.mantel_haenszel`; missing values are NaN). The crude
    a, b, c, d are the signals table's. A given term that no substance case reports is left
    out, as in the signals. No case with the substance (in the roles) is a NoDataError."""
    return _mh_rows(con, substance, roles, parse_factors(factors), terms)[list(OUTPUT_COLUMNS)]


def mh_joint(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None = None,
    terms: Sequence[str] | None = None,
    groups: Sequence[EventGroup] = (),
) -> pd.DataFrame:
    """`mh_table`'s rows for one stratification, the cross-classification of every factor
    (factor JOINT): the MH-adjusted ROR of the sensitivity analyses. `groups` adds a row per
    event group (its name as term), after the terms; column term_kind says which a row is."""
    return _mh_rows(con, substance, roles, FACTORS, terms, (JOINT,), groups)


def mh_tables(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None = None,
    terms: Sequence[str] | None = None,
    groups: Sequence[EventGroup] = (),
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`mh_table` of the terms (every factor) and `mh_joint` of the terms and groups, from one
    count of the cases and their strata: the report shows the first beside the sensitivity
    analyses, which use the second."""
    rows = _mh_rows(con, substance, roles, FACTORS, terms, (*FACTORS, JOINT), groups)
    joint = rows["factor"] == JOINT
    by_factor = rows[~joint & (rows["term_kind"] == "pt")]
    return (
        by_factor[list(OUTPUT_COLUMNS)].reset_index(drop=True),
        rows[joint].reset_index(drop=True),
    )


def _mh_rows(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None,
    chosen: tuple[str, ...],
    terms: Sequence[str] | None,
    counted: tuple[str, ...] | None = None,
    groups: Sequence[EventGroup] = (),
) -> pd.DataFrame:
    """Rows of `mh_table` for the `counted` stratifications (default: each chosen factor), with
    the kind of each row (term_kind: pt or group) last."""
    roles = roles_option(roles)
    ensure_macros(con)
    ensure_extracted(con, substance)
    try:
        keys = _build_tables(con, substance, roles, chosen, terms, groups)
        exposed = con.execute("SELECT count(*) FROM _mh_cases WHERE exposed").fetchone()
        if not exposed or not exposed[0]:
            in_roles = f" in roles {roles}" if roles else ""
            raise NoDataError(f"no {substance.name} cases{in_roles}")
        names = dict(con.execute("SELECT pt_key, pt FROM pt_terms").fetchall())
        order = {t: i for i, t in enumerate(terms)} if terms is not None else None
        order_of = {g.key: (0, i) for i, g in enumerate(groups)}
        names.update({g.key: g.name for g in groups})

        def rank(k: str) -> tuple[Any, ...]:
            if k in order_of:
                return (1, *order_of[k])
            return (0, order[names[k]] if order is not None else names[k], k)

        keys.sort(key=rank)
        factors = list(counted or chosen) if keys else []
        cells = _term_cells(con, factors) if factors else {}
        counts = {f: _factor_counts(con, f, keys, cells[f]) for f in factors}
    finally:
        con.execute("DROP TABLE IF EXISTS _mh_cases")
        con.execute("DROP TABLE IF EXISTS _mh_reac")
    kinds = ["group" if k in order_of else "pt" for k in keys]
    frames = [
        _rows([names[k] for k in keys], f, c).assign(term_kind=kinds) for f, c in counts.items()
    ]
    if not frames:
        return pd.DataFrame(
            {c: pd.Series([], dtype=object) for c in (*OUTPUT_COLUMNS, "term_kind")}
        )
    table = pd.concat(frames, ignore_index=True)
    table["_term_order"] = table.index % len(keys)
    table = table.sort_values("_term_order", kind="mergesort").drop(columns="_term_order")
    return table[[*OUTPUT_COLUMNS, "term_kind"]].reset_index(drop=True)


def signal_mh(
    con: duckdb.DuckDBPyConnection,
    run: SignalRun,
    substance: Substance,
    factors: Sequence[str] | str,
) -> pd.DataFrame:
    """`mh_table` for the terms, roles and substance of a signals run, stored in `signal_mh`
    under the run's run_id (its rows for these factors replaced).

    The strata are counted on the clean layer: a run through an earlier quarter than the latest
    loaded, or counted by another engine, is a UsageError."""
    chosen = parse_factors(factors)
    latest, _ = resolve_through(con, None)
    if not run.design.is_default:
        raise UsageError(
            "--mh-by counts single PTs against all cases: use it without --groups, --group-file, "
            "--meddra, --background (or with --background all), --exclude-window, --era and "
            "--remove-maskers"
        )
    if run.engine != "duckdb" or run.through != latest:
        raise UsageError(
            f"--mh-by counts the database's clean layer, which holds the cases through {latest}: "
            "use it without --through (or with the latest quarter) and with --engine duckdb"
        )
    table = mh_table(con, substance, run.roles, chosen, list(run.table["term"]))
    ensure_derived_table(con, _DDL)
    _store(con, run, chosen, table)
    return table


def _store(
    con: duckdb.DuckDBPyConnection, run: SignalRun, factors: tuple[str, ...], table: pd.DataFrame
) -> None:
    """Replace the run's stored rows for these factors by the table's, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "DELETE FROM signal_mh WHERE run_id = $r AND list_contains($f, factor)",
            {"r": run.run_id, "f": list(factors)},
        )
        con.register("_signal_mh_frame", table)
        con.execute(
            f"INSERT INTO signal_mh SELECT $r, $s, $through, {', '.join(OUTPUT_COLUMNS)}, "  # noqa: S608
            "$data, $now FROM _signal_mh_frame",
            {
                "r": run.run_id,
                "s": run.substance,
                "through": run.through,
                "data": data_fingerprint(con),
                "now": datetime.now(UTC).replace(tzinfo=None),
            },
        )
        con.unregister("_signal_mh_frame")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def compact_mh(table: pd.DataFrame) -> pd.DataFrame:
    """The columns an analyst scans, to fit 80 columns: k informative strata, crude and MH ROR
    with their CI ('*': zero-cell corrected), the Breslow-Day p and the flags (C: confounding,
    E: effect modification)."""

    def figure(value: float) -> str:
        return f"{value:.0f}" if value >= 100 else f"{value:.3g}"

    def ci(estimate: float, lower: float, upper: float, corrected: bool) -> str:
        if pd.isna(estimate):
            return "n/a"
        mark = "*" if corrected else ""
        return f"{figure(estimate)}{mark} ({figure(lower)}-{figure(upper)})"

    crude = ["ror", "ror_lower", "ror_upper", "zero_corrected"]
    pooled = ["ror_mh", "ror_mh_lower", "ror_mh_upper", "mh_zero_corrected"]
    return pd.DataFrame(
        {
            "term": table["term"].str.slice(0, 20),
            "by": table["factor"],
            "k": table["n_informative"],
            "ROR (95% CI)": [ci(*v) for v in table[crude].itertuples(index=False)],
            "MH ROR (95% CI)": [ci(*v) for v in table[pooled].itertuples(index=False)],
            "BD p": [p_text(v) for v in table["bd_p"]],
            "flag": [
                ("C" if c else ".") + ("E" if e else ".")
                for c, e in zip(table["confounding"], table["effect_modification"], strict=True)
            ],
        }
    )


def legend() -> list[str]:
    """The footer lines of the table format: what each column and flag means, and the rules."""
    return [
        "k: informative strata. MH ROR: Mantel-Haenszel ROR over them, 95% CI by Robins, "
        "Breslow & Greenland; BD p: Breslow-Day test of equal ORs with Tarone's correction "
        "(all columns, with the MH test of OR = 1: --format csv or json).",
        f"Flags: C = confounding (MH ROR differs from the crude by more than "
        f"{stats.MH_CONFOUNDING_CHANGE:.0%}, neither with *); E = effect modification (BD p < "
        f"{stats.EFFECT_MODIFICATION_P:g}); n/a: not estimable; * with the zero-cell correction "
        "(0.5 added to each cell of the informative strata).",
        UNKNOWN_RULE,
    ]

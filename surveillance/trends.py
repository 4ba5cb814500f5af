"""Per-quarter series for one substance, and its signal statistics quarter by quarter.

Reads the clean layer (`cases`, `case_drugs`), `substance_hits`, `quarters` and, through
`signals.signals`, the raw layer as of each loaded quarter. Writes nothing of its own; the
signals runs it makes are stored by `signals` in `signal_runs`/`signals` as usual.

The unit is the deduplicated case. A case counts once, in the FDA quarter of its surviving
(latest) version, so a follow-up report moves a case to a later quarter. The quarter axis holds
every loaded quarter, with 0 where the substance has no case; quarters between the first and the
last loaded one that were never loaded are not given rows (their counts are unknown, not 0) and
are listed in `Trends.missing_quarters`.

The cumulative statistics use ONE EBGM prior for every quarter: the one of the last quarter's run
(fitted on the whole database). Refitting per quarter would cost one maximum-likelihood fit on the
full drug-by-term table for each quarter; with a fixed prior each earlier quarter costs only its
2x2 counts, and changes in EBGM over time reflect the data, not a moving prior.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from . import __version__, stats
from .clean import REPORTER_TYPES
from .extract import ensure_extracted
from .faers_format import Quarter
from .query import run_query
from .signals import SignalRun, data_fingerprint, signals
from .substances import Substance

TOP_TERM_MIN_CASES = 3
"""A top term needs at least this many substance cases at the last quarter (Evans' a >= 3)."""
CO_REPORTED_ROWS = 20
CRITERIA = ("prr", "ror", "ic", "ebgm")
OUTCOMES = ("death", "life-threatening", "hospitalization", "other serious", "non-serious")
"""Worst outcome of a case, in priority order: each case falls in exactly one category."""
COUNTRY_GROUPS = ("US", "Non-US", "Unknown")
OTHER_REPORTER = ("other", "Other or not reported")
AGE_GROUPS = ("0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+", "unknown")
SEXES = ("F", "M", "unknown")
CUMULATIVE_COLUMNS = (
    "quarter term a n_substance_cases prr prr_lower prr_upper ror ror_lower ror_upper ic ic025 "
    "ic975 ebgm eb05 eb95 p_adj signal_prr signal_ror signal_ic signal_ebgm"
).split()
_STATISTICS = CUMULATIVE_COLUMNS[4:17]
_FLAG_COUNTS = {
    "n_serious": "serious",
    "n_death": "death",
    "n_hospitalization": "hospitalization",
    "n_life_threatening": "life_threatening",
}

# SQL kept as constants: the f-strings below join constant fragments; every value is bound.
_HITS = """WITH hit AS (
    SELECT DISTINCT caseid FROM substance_hits
    WHERE substance = $substance
      AND ($roles IS NULL OR list_contains(string_split($roles, ','), role_cod)))"""
_CASE_ROWS = f"""{_HITS}
SELECT c.caseid, c.quarter, c.event_year, c.age_years, c.sex, c.country, c.reporter_type,
    c.serious, c.death, c.life_threatening, c.hospitalization
FROM cases c JOIN hit USING (caseid)"""  # noqa: S608
_ALL_BY_QUARTER = "SELECT quarter, count(*) AS n_all_cases FROM cases GROUP BY quarter"
_ALL_BY_EVENT_YEAR = """SELECT event_year, count(*) AS n_all_cases FROM cases
WHERE event_year IS NOT NULL GROUP BY event_year"""


@dataclass(frozen=True)
class Trends:
    """The per-quarter series of one substance, its cumulative signals and their provenance."""

    substance: str
    substance_version: str
    roles: str | None
    quarters: tuple[str, ...]
    """Loaded quarters, oldest first: the quarter axis of every series."""
    missing_quarters: tuple[str, ...]
    """Quarters between the first and the last loaded one that are not loaded (no rows)."""
    through: str
    vintage: str
    """sha256 over the loaded zips' checksums and the dedup mode (`signals.data_fingerprint`)."""
    synthetic: bool
    """True when any loaded quarter was generated rather than published by the FDA."""
    tool_version: str
    top_terms: tuple[str, ...]
    prior: stats.Prior
    by_quarter: pd.DataFrame
    by_outcome: pd.DataFrame
    by_event_year: pd.DataFrame
    n_cases_no_event_year: int
    by_reporter: pd.DataFrame
    by_country_group: pd.DataFrame
    cumulative: pd.DataFrame
    first_signal: pd.DataFrame
    latest_signals: pd.DataFrame
    co_reported: pd.DataFrame
    demographics: pd.DataFrame

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every series by name, in the order a reader wants them."""
        return {
            "by_quarter": self.by_quarter,
            "by_outcome": self.by_outcome,
            "by_event_year": self.by_event_year,
            "by_reporter": self.by_reporter,
            "by_country_group": self.by_country_group,
            "cumulative": self.cumulative,
            "first_signal": self.first_signal,
            "co_reported": self.co_reported,
            "demographics": self.demographics,
        }

    def metadata(self) -> dict[str, Any]:
        """What the series were computed from: substance, quarters, data vintage, prior."""
        return {
            "substance": self.substance,
            "substance_version": self.substance_version,
            "roles": self.roles,
            "quarters": list(self.quarters),
            "missing_quarters": list(self.missing_quarters),
            "through": self.through,
            "vintage": self.vintage,
            "synthetic": self.synthetic,
            "tool_version": self.tool_version,
            "top_terms": list(self.top_terms),
            "n_cases_no_event_year": self.n_cases_no_event_year,
            "ebgm_prior": {
                k: getattr(self.prior, k) for k in ("alpha1", "beta1", "alpha2", "beta2", "p")
            },
        }


def trends(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    top_terms: int = 8,
    roles: str | None = None,
) -> Trends:
    """Every series for the substance over the loaded quarters, and cumulative signals of the
    `top_terms` terms with the highest EB05 (IC025 when EBGM is unavailable; at least
    TOP_TERM_MIN_CASES cases) at the end."""
    ensure_extracted(con, substance)
    latest = signals(con, substance, roles=roles, min_cases=1)
    loaded = [
        (str(q), bool(s))
        for q, s in con.execute(
            "SELECT quarter, synthetic FROM quarters ORDER BY quarter"
        ).fetchall()
    ]
    quarters = [q for q, _ in loaded]
    params = {"substance": substance.name, "roles": latest.roles}
    case_rows = con.execute(_CASE_ROWS, params).fetchdf()
    top = _top_terms(latest.table, top_terms, latest.sort)
    cumulative = _cumulative(con, substance, latest, quarters, top)
    event_years = case_rows["event_year"].dropna()
    return Trends(
        substance=substance.name,
        substance_version=substance.version,
        roles=latest.roles,
        quarters=tuple(quarters),
        missing_quarters=_missing(quarters),
        through=latest.through,
        vintage=data_fingerprint(con),
        synthetic=any(s for _, s in loaded),
        tool_version=__version__,
        top_terms=tuple(top),
        prior=latest.prior,
        by_quarter=_by_quarter(con, case_rows, quarters),
        by_outcome=_by_outcome(case_rows, quarters),
        by_event_year=_by_event_year(con, case_rows),
        n_cases_no_event_year=int(len(case_rows) - len(event_years)),
        by_reporter=_by_reporter(case_rows, quarters),
        by_country_group=_by_country_group(case_rows, quarters),
        cumulative=cumulative,
        first_signal=_first_signal(cumulative, top),
        latest_signals=latest.table,
        co_reported=run_query(
            con,
            "co_reported_substances",
            substance=params["substance"],
            roles=params["roles"],
            limit_rows=CO_REPORTED_ROWS,
        ),
        demographics=_demographics(case_rows),
    )


def _missing(quarters: list[str]) -> tuple[str, ...]:
    if not quarters:
        return ()
    loaded = set(quarters)
    q, last, gaps = Quarter.parse(quarters[0]), Quarter.parse(quarters[-1]), []
    while q < last:
        q = q.next()
        if str(q) not in loaded:
            gaps.append(str(q))
    return tuple(gaps)


def _counts(case_rows: pd.DataFrame, key: str, index: list[Any]) -> pd.DataFrame:
    """n_cases and the outcome-flag counts of the substance's cases per key, zero-filled."""
    grouped = case_rows.groupby(key)
    frame = pd.DataFrame({"n_cases": grouped.size()})
    for column, flag in _FLAG_COUNTS.items():
        frame[column] = grouped[flag].sum()
    return frame.reindex(index, fill_value=0).astype("int64")


def _with_share(frame: pd.DataFrame, all_cases: pd.Series) -> pd.DataFrame:
    n_all = all_cases.reindex(frame.index, fill_value=0).astype("int64")
    frame.insert(1, "n_all_cases", n_all)
    share = 100.0 * frame["n_cases"] / n_all.where(n_all > 0)
    frame.insert(2, "share_pct", share.round(3))
    return frame


def _by_quarter(
    con: duckdb.DuckDBPyConnection, case_rows: pd.DataFrame, quarters: list[str]
) -> pd.DataFrame:
    """Substance cases, all cases, the share and the outcome flags per loaded quarter."""
    frame = _counts(case_rows, "quarter", quarters)
    all_cases = con.execute(_ALL_BY_QUARTER).fetchdf().set_index("quarter")["n_all_cases"]
    return _with_share(frame, all_cases).rename_axis("quarter").reset_index()


def _by_event_year(con: duckdb.DuckDBPyConnection, case_rows: pd.DataFrame) -> pd.DataFrame:
    """The same per event year, every year from the substance's first to its last (where known)."""
    known = case_rows.dropna(subset=["event_year"]).astype({"event_year": "int64"})
    years = (
        list(range(int(known["event_year"].min()), int(known["event_year"].max()) + 1))
        if len(known)
        else []
    )
    frame = _counts(known, "event_year", years)
    all_cases = con.execute(_ALL_BY_EVENT_YEAR).fetchdf()
    all_by_year = all_cases.astype({"event_year": "int64"}).set_index("event_year")["n_all_cases"]
    frame = _with_share(frame, all_by_year).rename_axis("event_year").reset_index()
    return frame.astype({"event_year": "int64"})


def worst_outcome(case_rows: pd.DataFrame) -> pd.Series:
    """Each case's worst outcome: death > life-threatening > hospitalization > other serious >
    non-serious (a case with several outcomes takes the first in that order)."""
    choice = np.select(
        [
            case_rows["death"].to_numpy(bool),
            case_rows["life_threatening"].to_numpy(bool),
            case_rows["hospitalization"].to_numpy(bool),
            case_rows["serious"].to_numpy(bool),
        ],
        list(OUTCOMES[:4]),
        default=OUTCOMES[4],
    )
    return pd.Series(choice, index=case_rows.index, name="outcome")


def _long_counts(
    case_rows: pd.DataFrame, quarters: list[str], column: str, values: pd.Series, levels: list[str]
) -> pd.DataFrame:
    """n_cases per quarter and level of one categorical column, every combination present."""
    counts = (
        case_rows.assign(**{column: values}).groupby(["quarter", column]).size().rename("n_cases")
    )
    grid = pd.MultiIndex.from_product([quarters, levels], names=["quarter", column])
    return counts.reindex(grid, fill_value=0).astype("int64").reset_index()


def _by_outcome(case_rows: pd.DataFrame, quarters: list[str]) -> pd.DataFrame:
    """Substance cases per quarter by worst outcome (mutually exclusive categories)."""
    return _long_counts(case_rows, quarters, "outcome", worst_outcome(case_rows), list(OUTCOMES))


def _by_reporter(case_rows: pd.DataFrame, quarters: list[str]) -> pd.DataFrame:
    """Substance cases per quarter by reporter type; unknown codes and blanks are 'other'."""
    codes = case_rows["reporter_type"].where(
        case_rows["reporter_type"].isin(list(REPORTER_TYPES)), OTHER_REPORTER[0]
    )
    levels = [c for c in [*REPORTER_TYPES, OTHER_REPORTER[0]] if c in set(codes)]
    frame = _long_counts(case_rows, quarters, "reporter_type", codes, levels)
    labels = REPORTER_TYPES | {OTHER_REPORTER[0]: OTHER_REPORTER[1]}
    frame.insert(2, "reporter_type_label", frame["reporter_type"].map(labels))
    return frame


def _by_country_group(case_rows: pd.DataFrame, quarters: list[str]) -> pd.DataFrame:
    """Substance cases per quarter: US, other countries, or country not reported."""
    country = case_rows["country"]
    group = pd.Series(
        np.where(country.isna(), "Unknown", np.where(country == "US", "US", "Non-US")),
        index=case_rows.index,
    )
    return _long_counts(case_rows, quarters, "country_group", group, list(COUNTRY_GROUPS))


def _demographics(case_rows: pd.DataFrame) -> pd.DataFrame:
    """Substance cases by sex and age group (the groups of queries/demographics.sql)."""
    age = case_rows["age_years"]
    bins = pd.cut(age, [-np.inf, 18, 25, 35, 45, 55, 65, np.inf], right=False, labels=False)
    group = pd.Series(
        np.where(
            age.isna(), "unknown", np.array(AGE_GROUPS, dtype=object)[bins.fillna(0).astype(int)]
        ),
        index=case_rows.index,
    )
    counts = case_rows.assign(age_group=group).groupby(["sex", "age_group"]).size()
    grid = pd.MultiIndex.from_product([list(SEXES), list(AGE_GROUPS)], names=["sex", "age_group"])
    return counts.reindex(grid, fill_value=0).astype("int64").rename("n_cases").reset_index()


def _top_terms(table: pd.DataFrame, n: int, key: str) -> list[str]:
    eligible = table[table["a"] >= TOP_TERM_MIN_CASES]
    ranked = eligible.sort_values([key, "term"], ascending=[False, True], kind="mergesort")
    return [str(t) for t in ranked["term"].head(n)]


def _cumulative(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    latest: SignalRun,
    quarters: list[str],
    top: list[str],
) -> pd.DataFrame:
    """The top terms' statistics as of the end of each loaded quarter, with the latest prior;
    a term with no substance case yet has a = 0, no statistics and no signal."""
    frames = []
    for quarter in quarters:
        run = (
            latest
            if quarter == latest.through
            else signals(
                con,
                substance,
                through=quarter,
                roles=latest.roles,
                min_cases=1,
                prior=latest.prior,
            )
        )
        rows = run.table.set_index("term").reindex(top)
        rows["a"] = rows["a"].fillna(0).astype("int64")
        for criterion in CRITERIA:
            rows[f"signal_{criterion}"] = rows[f"signal_{criterion}"].fillna(False).astype(bool)
        rows = rows.rename_axis("term").reset_index()
        rows.insert(0, "quarter", quarter)
        rows["n_substance_cases"] = run.n_substance_cases
        frames.append(rows[CUMULATIVE_COLUMNS])
    if not frames:
        return pd.DataFrame(columns=CUMULATIVE_COLUMNS)
    out = pd.concat(frames, ignore_index=True)
    return out.astype({c: "float64" for c in _STATISTICS})


def _first_signal(cumulative: pd.DataFrame, top: list[str]) -> pd.DataFrame:
    """Per top term and criterion the first loaded quarter whose cumulative data met it (None if
    never), and whether it is still met at the last quarter."""
    rows = []
    last = cumulative["quarter"].max() if len(cumulative) else None
    for term in top:
        own = cumulative[cumulative["term"] == term].sort_values("quarter")
        for criterion in CRITERIA:
            met = own[own[f"signal_{criterion}"]]
            rows.append(
                {
                    "term": term,
                    "criterion": criterion,
                    "first_quarter": str(met["quarter"].iloc[0]) if len(met) else None,
                    "met_at_last_quarter": bool((met["quarter"] == last).any()),
                }
            )
    return pd.DataFrame(rows, columns=["term", "criterion", "first_quarter", "met_at_last_quarter"])

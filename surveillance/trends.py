"""Per-quarter series for one substance, and its signal statistics quarter by quarter.

Reads the clean layer (`cases`, `case_drugs`), `substance_hits`, `quarters` and, through
`asof.stored_asof_counts`, the raw layer as of each loaded quarter (one pass for all quarters,
kept in `asof_runs` and `asof_terms` for this data vintage). The one signals run it makes (the
last quarter's, for its prior; none when given a prior) is stored by `signals`.

The unit is the deduplicated case. A case is new, and counts once, in the quarter of its initial
FDA receipt (`cases.initial_quarter`, definitions.NEW_CASE): a follow-up of an older case is a
follow-up (`n_followup_cases`), not a new case. `by_quarter` also keeps the cases per quarter of
their latest version (`n_cases_latest_version`), clearly a second view. The quarter axis holds
every loaded quarter, with 0 where the substance has no case; quarters between the first and the
last loaded one that were never loaded are not given rows (their counts are unknown, not 0) and
are listed in `Trends.missing_quarters`; cases first received outside the loaded quarters are
counted in `Trends.n_cases_initial_not_loaded`.

The cumulative statistics use ONE EBGM prior for every quarter: the one of the last quarter's run
(fitted on the whole database), or the one the caller gives (the report: its quarter's).
Refitting per quarter would cost one maximum-likelihood fit on the full drug-by-term table for
each quarter; with a fixed prior each earlier quarter costs only its 2x2 counts (all quarters'
counts come from one pass, `asof`), and changes in EBGM over time reflect the data, not a moving
prior.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from importlib import resources
from typing import Any

import duckdb
import pandas as pd

from . import __version__, definitions, stats
from .asof import AsOfCounts, asof_signal_tables, stored_asof_counts
from .clean import REPORTER_TYPES, ensure_macros
from .definitions import (
    AGE_GROUPS,
    AGE_UNKNOWN,
    COUNTRY_GROUPS,
    OUTCOMES,
    SEXES,
    country_group,
    roles_option,
)
from .errors import NoDataError
from .extract import ensure_extracted
from .faers_format import quarter_gaps
from .query import run_query
from .signals import data_fingerprint, signals, sort_key
from .substances import Substance

EVENT_WINDOW_QUARTERS = 4
"""Regulatory-event readings compare this many quarters before an event's quarter with as many
after it (the event's own quarter, part before and part after, is in neither)."""
TOP_TERM_MIN_CASES = 3
"""A top term needs at least this many substance cases at the last quarter (Evans' a >= 3)."""
CO_REPORTED_ROWS = 20
CRITERIA = tuple(c.flag.removeprefix("signal_") for c in definitions.CRITERIA)
"""The criteria of the registry by short name: prr, ror, ic, ebgm."""
OTHER_REPORTER = ("other", "Other or not reported")
CUMULATIVE_COLUMNS = (
    "quarter term a n_substance_cases prr prr_lower prr_upper ror ror_lower ror_upper ic ic025 "
    "ic975 ebgm eb05 eb95 p_adj zero_corrected signal_prr signal_ror signal_ic signal_ebgm"
).split()
_STATISTICS = CUMULATIVE_COLUMNS[4:17]
_FLAG_COUNTS = {
    "n_serious": "serious",
    "n_death": "death",
    "n_hospitalization": "hospitalization",
    "n_life_threatening": "life_threatening",
}

# SQL kept as constants: the f-strings below join constant fragments; every value is bound.
_HITS = "WITH hit AS (SELECT caseid FROM involved_cases($substance, $roles))"
# `quarter` is the quarter of initial receipt, the one every per-quarter series counts in.
_CASE_ROWS = f"""{_HITS}
SELECT c.caseid, c.initial_quarter AS quarter, c.quarter AS latest_version_quarter,
    c.event_year, c.age_years, age_group(c.age_years) AS age_group, c.sex, c.country,
    c.reporter_type, c.serious, c.death, c.life_threatening, c.hospitalization,
    worst_outcome(c.death, c.life_threatening, c.hospitalization, c.serious) AS outcome
FROM cases c JOIN hit USING (caseid)"""  # noqa: S608
# A follow-up received in Q: a version first published in Q of a case initially received earlier.
_FOLLOWUPS = f"""{_HITS},
versions AS (
    SELECT caseid, source, primaryid, min(quarter) AS quarter FROM raw_demo
    WHERE caseid IN (SELECT caseid FROM hit) GROUP BY ALL)
SELECT v.quarter, count(DISTINCT v.caseid) AS n_followup_cases
FROM versions v JOIN cases c USING (caseid)
WHERE v.quarter > c.initial_quarter
GROUP BY v.quarter"""  # noqa: S608
_ALL_BY_QUARTER = (
    "SELECT initial_quarter AS quarter, count(*) AS n_all_cases FROM cases GROUP BY ALL"
)
_ALL_BY_EVENT_YEAR = """SELECT event_year, count(*) AS n_all_cases FROM cases
WHERE event_year IS NOT NULL GROUP BY event_year"""


@dataclass(frozen=True)
class RegulatoryEvent:
    """A dated regulatory action drawn on time axes; `source` cites where the date comes from."""

    date: date
    label: str
    substances: tuple[str, ...]
    source: str


def regulatory_events(substance: str | None = None) -> list[RegulatoryEvent]:
    """The events of the packaged data file, oldest first (only the substance's, if given)."""
    text = (resources.files("surveillance") / "data" / "regulatory_events.csv").read_text("utf-8")
    events = [
        RegulatoryEvent(
            date.fromisoformat(row["date"]),
            row["label"],
            tuple(s.strip() for s in row["substance"].split(";")),
            row["source"],
        )
        for row in csv.DictReader(text.splitlines())
    ]
    return sorted(
        (e for e in events if substance is None or substance in e.substances),
        key=lambda e: e.date,
    )


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
    """The terms of the cumulative series, ranked by `top_term_rank` at the last quarter."""
    top_term_rank: str
    """The statistic the top terms are ranked by: eb05, or ic025 when EBGM is unavailable."""
    prior: stats.Prior
    ebgm_available: bool
    """Whether EBGM/EB05/EB95 may be shown (`SignalRun.ebgm_available` of the last quarter)."""
    by_quarter: pd.DataFrame
    """Per loaded quarter: new cases (initial receipt), all new cases, share, outcome flags of
    the new cases, follow-up cases received, and cases by their latest version's quarter."""
    n_cases_initial_not_loaded: int
    """Substance cases whose initial receipt falls in no loaded quarter (before or in a gap)."""
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
    around_events: pd.DataFrame
    """New cases (initial receipt) in the loaded quarters before and after each regulatory event
    inside the loaded span (EVENT_WINDOW_QUARTERS each side)."""

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
            "around_events": self.around_events,
        }

    def long_table(self) -> pd.DataFrame:
        """Every series in one long table: `series` names it, then the union of the series'
        columns, blank where a series has no such column (the CSV form of `trends`)."""
        frames = [frame.astype(object).assign(series=name) for name, frame in self.tables().items()]
        out = pd.concat(frames, ignore_index=True, sort=False)
        return out[["series", *(c for c in out.columns if c != "series")]]

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
            "top_term_rank": self.top_term_rank,
            "ebgm_available": self.ebgm_available,
            "n_cases_no_event_year": self.n_cases_no_event_year,
            "n_cases_initial_not_loaded": self.n_cases_initial_not_loaded,
            "new_case_definition": definitions.NEW_CASE,
            "ebgm_prior": {
                k: getattr(self.prior, k) for k in ("alpha1", "beta1", "alpha2", "beta2", "p")
            },
        }


def trends(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    top_terms: int = 8,
    roles: str | None = None,
    progress: Callable[[str], None] | None = None,
    prior: stats.Prior | None = None,
    counts: AsOfCounts | None = None,
) -> Trends:
    """Every series for the substance over the loaded quarters, and cumulative signals of the
    `top_terms` terms with the highest EB05 (IC025 when EBGM is unavailable; at least
    TOP_TERM_MIN_CASES cases) at the end. `progress` is told each step. `prior`: the one EBGM
    prior of every quarter (default: that of a signals run through the last quarter, which is
    then made and stored); `counts`: the substance's as-of counts in these roles, without the
    event groups, when the caller already has them (default: `stored_asof_counts`)."""
    say = progress or (lambda message: None)
    ensure_extracted(con, substance)
    ensure_macros(con)
    latest_table = None
    if prior is None:
        say(f"trends: {substance.name} signals through the latest quarter")
        run = signals(con, substance, roles=roles, min_cases=1)
        prior, roles, latest_table = run.prior, run.roles, run.table
    else:
        roles = roles_option(roles)
    if counts is None:
        say("trends: cumulative counts as of every loaded quarter")
        counts = stored_asof_counts(con, substance, roles).pts()
    elif (counts.substance, counts.roles) != (substance.name, roles):
        raise ValueError("counts of another substance or other roles")
    tables = asof_signal_tables(con, counts, prior)
    if latest_table is None:
        latest_table = _latest_table(substance, counts, tables, prior)
    loaded = [
        (str(q), bool(s))
        for q, s in con.execute(
            "SELECT quarter, synthetic FROM quarters ORDER BY quarter"
        ).fetchall()
    ]
    quarters = [q for q, _ in loaded]
    params = {"substance": substance.name, "roles": roles}
    case_rows = con.execute(_CASE_ROWS, params).fetchdf()
    ebgm_available = bool(prior.converged)
    rank = "eb05" if ebgm_available else "ic025"
    top = _top_terms(latest_table, top_terms, rank)
    cumulative = _cumulative(counts, tables, top)
    event_years = case_rows["event_year"].dropna()
    return Trends(
        substance=substance.name,
        substance_version=substance.version,
        roles=roles,
        quarters=tuple(quarters),
        missing_quarters=_missing(quarters),
        through=quarters[-1],
        vintage=data_fingerprint(con),
        synthetic=any(s for _, s in loaded),
        tool_version=__version__,
        top_terms=tuple(top),
        top_term_rank=rank,
        prior=prior,
        ebgm_available=ebgm_available,
        by_quarter=_by_quarter(con, case_rows, quarters, params),
        n_cases_initial_not_loaded=int((~case_rows["quarter"].isin(quarters)).sum()),
        by_outcome=_by_outcome(case_rows, quarters),
        by_event_year=_by_event_year(con, case_rows),
        n_cases_no_event_year=int(len(case_rows) - len(event_years)),
        by_reporter=_by_reporter(case_rows, quarters),
        by_country_group=_by_country_group(case_rows, quarters),
        cumulative=cumulative,
        first_signal=_first_signal(cumulative, top),
        latest_signals=latest_table,
        co_reported=run_query(
            con,
            "co_reported_substances",
            substance=params["substance"],
            roles=params["roles"],
            limit_rows=CO_REPORTED_ROWS,
        ),
        demographics=_demographics(case_rows),
        around_events=_around_events(substance.name, case_rows, quarters),
    )


def _missing(quarters: list[str]) -> tuple[str, ...]:
    if not quarters:
        return ()
    return tuple(quarter_gaps(quarters[0], quarters[-1], quarters))


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
    con: duckdb.DuckDBPyConnection,
    case_rows: pd.DataFrame,
    quarters: list[str],
    params: dict[str, Any],
) -> pd.DataFrame:
    """New substance cases, all new cases, the share and the outcome flags per loaded quarter;
    follow-up cases received and cases by their latest version's quarter beside them."""
    frame = _counts(case_rows, "quarter", quarters)
    all_cases = con.execute(_ALL_BY_QUARTER).fetchdf().set_index("quarter")["n_all_cases"]
    frame = _with_share(frame, all_cases)
    followups = con.execute(_FOLLOWUPS, params).fetchdf().set_index("quarter")
    frame["n_followup_cases"] = (
        followups["n_followup_cases"].reindex(quarters, fill_value=0).astype("int64")
    )
    latest = case_rows.groupby("latest_version_quarter").size()
    frame["n_cases_latest_version"] = latest.reindex(quarters, fill_value=0).astype("int64")
    return frame.rename_axis("quarter").reset_index()


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
    return _long_counts(case_rows, quarters, "outcome", case_rows["outcome"], list(OUTCOMES))


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
    group = case_rows["country"].map(country_group)
    return _long_counts(case_rows, quarters, "country_group", group, list(COUNTRY_GROUPS))


def _demographics(case_rows: pd.DataFrame) -> pd.DataFrame:
    """Substance cases by sex and age group (the registry's groups, SQL macro age_group)."""
    counts = case_rows.groupby(["sex", "age_group"]).size()
    groups = [*AGE_GROUPS, AGE_UNKNOWN]
    grid = pd.MultiIndex.from_product([list(SEXES), groups], names=["sex", "age_group"])
    return counts.reindex(grid, fill_value=0).astype("int64").rename("n_cases").reset_index()


def _quarter(index: int) -> str:
    """The quarter of a count of quarters since year 0 (year * 4 + quarter - 1)."""
    return f"{index // 4}Q{index % 4 + 1}"


def _around_events(substance: str, case_rows: pd.DataFrame, quarters: list[str]) -> pd.DataFrame:
    """Per regulatory event in the loaded span: new cases in the loaded quarters of the window
    before and after the event's quarter, and how many of those quarters are loaded."""
    columns = (
        "event event_date event_quarter quarters_before quarters_after n_quarters_before_loaded "
        "n_quarters_after_loaded n_cases_before n_cases_after"
    ).split()
    rows = []
    loaded = set(quarters)
    new = case_rows["quarter"].value_counts()
    for event in regulatory_events(substance):
        at = event.date.year * 4 + (event.date.month - 1) // 3
        if not quarters or not quarters[0] <= _quarter(at) <= quarters[-1]:
            continue
        before = [_quarter(at - k) for k in range(EVENT_WINDOW_QUARTERS, 0, -1)]
        after = [_quarter(at + k) for k in range(1, EVENT_WINDOW_QUARTERS + 1)]
        seen_before = [x for x in before if x in loaded]
        seen_after = [x for x in after if x in loaded]
        rows.append(
            {
                "event": event.label,
                "event_date": event.date.isoformat(),
                "event_quarter": _quarter(at),
                "quarters_before": f"{before[0]}-{before[-1]}",
                "quarters_after": f"{after[0]}-{after[-1]}",
                "n_quarters_before_loaded": len(seen_before),
                "n_quarters_after_loaded": len(seen_after),
                "n_cases_before": int(sum(new.get(x, 0) for x in seen_before)),
                "n_cases_after": int(sum(new.get(x, 0) for x in seen_after)),
            }
        )
    return pd.DataFrame(rows, columns=columns)


def _top_terms(table: pd.DataFrame, n: int, rank: str) -> list[str]:
    eligible = table[table["a"] >= TOP_TERM_MIN_CASES]
    ranked = eligible.sort_values([rank, "term"], ascending=[False, True], kind="mergesort")
    return [str(t) for t in ranked["term"].head(n)]


def _latest_table(
    substance: Substance,
    counts: AsOfCounts,
    tables: dict[str, pd.DataFrame],
    prior: stats.Prior,
) -> pd.DataFrame:
    """The last quarter's table as `signals(min_cases=1, prior=prior)` gives it, sorted alike."""
    if not counts.quarters or counts.n_exposed[-1] == 0:
        in_roles = f" in roles {counts.roles}" if counts.roles else ""
        raise NoDataError(f"no {substance.name} cases{in_roles} in the loaded quarters")
    sort = sort_key(None, bool(prior.converged))
    table = tables[counts.quarters[-1]]
    table = table.sort_values([sort, "term"], ascending=[False, True], kind="mergesort")
    return table.reset_index(drop=True)


def _cumulative(
    counts: AsOfCounts, tables: dict[str, pd.DataFrame], top: list[str]
) -> pd.DataFrame:
    """The top terms' statistics as of the end of each loaded quarter (`tables`, one prior);
    a term with no substance case yet has a = 0, no statistics and no signal."""
    frames = []
    for index, quarter in enumerate(counts.quarters):
        rows = tables[quarter].set_index("term").reindex(top)
        rows["a"] = rows["a"].fillna(0).astype("int64")
        for flag in ("zero_corrected", *(f"signal_{c}" for c in CRITERIA)):
            rows[flag] = rows[flag].fillna(False).astype(bool)
        rows = rows.rename_axis("term").reset_index()
        rows.insert(0, "quarter", quarter)
        rows["n_substance_cases"] = int(counts.n_exposed[index])
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

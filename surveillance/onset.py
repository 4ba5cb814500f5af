"""Time to onset of a substance's cases: days from the first therapy start of the substance to
the event, and the Weibull shape of their distribution (Cornelius et al. 2012).

Reads the clean layer (`cases` event dates, `case_therapies` start dates, `case_reactions`) and
`substance_hits` (which drug rows are the substance); writes nothing. The cases are those
`cases.cases` lists for the same options, so "which cases" has one definition.

Rules, per case (the event date is the case's; FAERS does not date each reaction):
- The start is the earliest THER `start_dt` of the substance's drug rows (in the counted roles)
  on or before the event date: a restart after the first start, or a row begun after the event,
  does not move it. Onset = event date - start date, in whole days.
- Days only from full dates: a case whose event date, or a start that could be the earliest,
  is known only to the month or year is flagged `partial date` and left out of every day-level
  number; no day is invented.
- A case whose every start is after its event is flagged `negative onset`, not used.
- A case without a valid event date, or without a valid start of the substance, is counted as
  such. The statuses of a term's cases add up to its `n_cases`.

The Weibull fit treats an onset of d days as interval-censored in [d, d+1) days (the event
happened during the (d+1)-th day counted from the start day), so that same-day onsets (d = 0)
need no shift. Shape and scale are maximum-likelihood estimates; the shape's 95% CI is the
profile-likelihood interval (deviance <= chi-square(1) 95% point, 3.84), the scale re-fitted at
each shape. Cornelius VR, Sauzet O, Evans SJW. Pharmacoepidemiol Drug Saf 2012;21:1199 (and
Drug Saf 2012;35:599): shape < 1 with its CI below 1 is an early hazard (decreasing with time
since the start), a CI including 1 a constant hazard, > 1 with its CI above 1 a late hazard
(increasing, wear-out type). Fewer than ONSET_MIN_CASES cases with an onset: no estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from scipy import optimize
from scipy import stats as sps

from . import __version__
from .cases import cases
from .clean import ensure_macros
from .definitions import parse_roles
from .design import make_design
from .freshness import data_fingerprint
from .substances import Substance

ONSET_MIN_CASES = 5
"""A Weibull fit needs at least this many cases with an onset in days; fewer: no estimate."""
CI_LEVEL = 0.95
ALL_TERMS = "all reactions"
"""The `term` of the row over every case of the substance (term_kind 'all')."""
STATUSES: dict[str, str] = {
    "onset": "both dates full days, event on or after the first start: used",
    "partial date": "event or a possible first start known only to the month or year: not used",
    "negative onset": "event before every start of the substance: flagged, not used",
    "no event date": "no valid event date",
    "no start date": "no valid therapy start date of the substance",
}
"""Each case's `onset_status` and its meaning; the count columns of the table follow it."""
_COUNT_COLUMNS = {
    "onset": "n_with_onset",
    "partial date": "n_partial_date",
    "negative onset": "n_negative_onset",
    "no event date": "n_no_event_date",
    "no start date": "n_no_start_date",
}
HAZARDS: dict[str, str] = {
    "early": "shape < 1 (95% CI below 1): the hazard falls with time since the first use; "
    "events cluster soon after starting",
    "constant": "95% CI includes 1: no evidence that the hazard changes with time since the "
    "first use",
    "late": "shape > 1 (95% CI above 1): the hazard rises with time since the first use "
    "(wear-out type)",
}
"""The reading of the Weibull shape (Cornelius et al. 2012), by its 95% CI."""

_DEVIANCE_95 = float(sps.chi2.ppf(CI_LEVEL, 1))
# Search range of the shape (log scale): wide enough for any onset distribution seen in
# practice; an estimate or bound at its edge is reported as not found.
_LOG_SHAPE_RANGE = (math.log(0.02), math.log(50.0))

_CASE_DATES = """SELECT caseid, event_dt, event_date, event_dt_precision
    FROM cases WHERE caseid IN (SELECT unnest($caseids))"""
_STARTS = """SELECT DISTINCT t.caseid, t.start_dt, t.start_date, t.start_dt_precision
    FROM case_therapies t
    JOIN substance_hits h ON h.caseid = t.caseid AND h.drug_seq = t.drug_seq
    WHERE h.substance = $substance AND role_counts(h.role_cod, $roles)
      AND t.caseid IN (SELECT unnest($caseids)) AND t.start_dt_precision IS NOT NULL"""
_REACTIONS = """SELECT DISTINCT caseid, pt_key, pt FROM case_reactions
    WHERE caseid IN (SELECT unnest($caseids))"""


@dataclass(frozen=True)
class WeibullFit:
    """Maximum-likelihood Weibull fit of onsets in days: shape with its profile-likelihood CI,
    scale in days; `note` says why a value is missing (NaN)."""

    n: int
    shape: float
    shape_lower: float
    shape_upper: float
    scale_days: float
    hazard: str | None  # a HAZARDS key, None without an estimate
    note: str

    @property
    def interpretation(self) -> str:
        """The estimate and its reading in words."""
        if self.hazard is None:
            return self.note
        ci = f"{_num(self.shape_lower)}-{_num(self.shape_upper)}"
        return (
            f"Weibull shape {self.shape:.2f} (95% CI {ci}), {self.hazard} hazard: "
            f"{HAZARDS[self.hazard]}"
        )


def _num(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "not found"


def _log_interval_mass(days: np.ndarray, log_shape: float, log_scale: float) -> np.ndarray:
    """log P(d <= T < d + 1) for T ~ Weibull(shape, scale), computed without cancellation."""
    k = math.exp(log_shape)
    lower = np.zeros_like(days, dtype=float)
    positive = days > 0
    # Far from the optimum the powers overflow to inf; the log-likelihood is then -inf or NaN,
    # which `_loglik` turns into -inf.
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        lower[positive] = np.exp(k * (np.log(days[positive]) - log_scale))
        upper = np.exp(k * (np.log(days + 1.0) - log_scale))
        return -lower + np.log(-np.expm1(-(upper - lower)))


_Days = tuple[np.ndarray, np.ndarray]  # distinct onsets in days, and how many cases have each


def _loglik(days: _Days, log_shape: float, log_scale: float) -> float:
    value = float(np.dot(days[1], _log_interval_mass(days[0], log_shape, log_scale)))
    return value if math.isfinite(value) else -math.inf


def _profile(days: _Days, log_shape: float) -> tuple[float, float]:
    """The log-likelihood maximised over the scale at this shape, and that scale (log)."""
    hi = math.log(float(days[0].max()) + 1.0) + 12.0
    found = optimize.minimize_scalar(
        lambda s: -_loglik(days, log_shape, s),
        bounds=(math.log(1e-3), hi),
        method="bounded",
        options={"xatol": 1e-6},
    )
    return -float(found.fun), float(found.x)


def _bound(days: _Days, top: float, log_shape: float, edge: float) -> float:
    """The shape where the profile deviance reaches the 95% point, between the estimate and
    `edge` (log scale); NaN when it is not reached inside the search range."""

    def excess(s: float) -> float:
        return 2.0 * (top - _profile(days, s)[0]) - _DEVIANCE_95

    if excess(edge) < 0:
        return math.nan
    lo, hi = sorted((log_shape, edge))
    return math.exp(optimize.brentq(excess, lo, hi, xtol=1e-5))


def _no_estimate(n: int, note: str) -> WeibullFit:
    return WeibullFit(n, math.nan, math.nan, math.nan, math.nan, None, note)


def weibull_fit(days: np.ndarray | list[int]) -> WeibullFit:
    """Weibull shape (95% profile-likelihood CI) and scale of onsets in whole days (>= 0), each
    interval-censored in [d, d+1); no estimate with fewer than ONSET_MIN_CASES onsets or fewer
    than two distinct days."""
    d = np.asarray(days, dtype=float)
    n = int(d.size)
    if n < ONSET_MIN_CASES:
        return _no_estimate(
            n, f"no estimate: {n} case(s) with an onset in days, fewer than {ONSET_MIN_CASES}"
        )
    if np.any(d < 0) or np.any(d != np.floor(d)):
        raise ValueError("onsets must be whole days >= 0")
    grouped: _Days = np.unique(d, return_counts=True)
    if grouped[0].size < 2:
        return _no_estimate(n, "no estimate: every onset on the same day count")
    found = optimize.minimize_scalar(
        lambda s: -_profile(grouped, s)[0],
        bounds=_LOG_SHAPE_RANGE,
        method="bounded",
        options={"xatol": 1e-6},
    )
    log_shape = float(found.x)
    top, log_scale = _profile(grouped, log_shape)
    edge_lo, edge_hi = _LOG_SHAPE_RANGE
    if not (edge_lo + 1e-3 < log_shape < edge_hi - 1e-3) or not math.isfinite(top):
        return _no_estimate(n, "no estimate: the likelihood has no interior maximum")
    lower = _bound(grouped, top, log_shape, edge_lo)
    upper = _bound(grouped, top, log_shape, edge_hi)
    hazard = "constant"
    if upper < 1:
        hazard = "early"
    elif lower > 1:
        hazard = "late"
    return WeibullFit(
        n=n,
        shape=math.exp(log_shape),
        shape_lower=lower,
        shape_upper=upper,
        scale_days=math.exp(log_scale),
        hazard=hazard,
        note="",
    )


def weibull_cdf(days: np.ndarray, shape: float, scale_days: float) -> np.ndarray:
    """P(T <= t) of the fitted Weibull (for figures and checks)."""
    t = np.clip(np.asarray(days, dtype=float), 0, None)
    return -np.expm1(-((t / scale_days) ** shape))


def _first_day(text: str, precision: str) -> date:
    """The earliest day a FAERS date text at this precision can be."""
    if precision == "day":
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    if precision == "month":
        return date(int(text[:4]), int(text[4:6]), 1)
    return date(int(text[:4]), 1, 1)


_Start = tuple[str, str]  # a therapy start date text and its precision


def _case_onset(
    event_dt: str | None, precision: str | None, starts: list[_Start]
) -> tuple[str, str | None, float]:
    """One case's status (a STATUSES key), the start date text used, and the onset in days."""
    if precision is None or event_dt is None:
        return "no event date", None, math.nan
    if not starts:
        return "no start date", None, math.nan
    if precision != "day":
        return "partial date", None, math.nan
    event_day = _first_day(event_dt, "day")
    full = sorted((_first_day(t, p), t) for t, p in starts if p == "day")
    earliest_partial = min((_first_day(t, p) for t, p in starts if p != "day"), default=None)
    before = [(day, text) for day, text in full if day <= event_day]
    if before:
        start_day, text = before[0]
        if earliest_partial is not None and earliest_partial < start_day:
            return "partial date", None, math.nan
        return "onset", text, float((event_day - start_day).days)
    if earliest_partial is not None and earliest_partial <= event_day:
        return "partial date", None, math.nan
    if not full:  # only partial starts, each wholly after the event: negative, days unknown
        return "negative onset", None, math.nan
    start_day, text = full[0]
    return "negative onset", text, float((event_day - start_day).days)


def case_onsets(
    con: duckdb.DuckDBPyConnection, substance: Substance, caseids: list[str], roles: str | None
) -> pd.DataFrame:
    """One row per case: caseid, event_dt, start_dt (the one used), onset_days (NaN unless
    used or negative) and onset_status (a STATUSES key)."""
    ensure_macros(con)
    params = {"caseids": caseids}
    starts: dict[str, list[_Start]] = {}
    query = {**params, "substance": substance.name, "roles": roles}
    for caseid, text, _day, precision in con.execute(_STARTS, query).fetchall():
        starts.setdefault(caseid, []).append((text, precision))
    rows = [
        (caseid, event_dt, *_case_onset(event_dt, precision, starts.get(caseid, [])))
        for caseid, event_dt, _day, precision in con.execute(_CASE_DATES, params).fetchall()
    ]
    columns = ["caseid", "event_dt", "onset_status", "start_dt", "onset_days"]
    out = pd.DataFrame(rows, columns=columns).astype({"onset_days": float})
    out = out[["caseid", "event_dt", "start_dt", "onset_days", "onset_status"]]
    return out.sort_values("caseid", kind="stable").reset_index(drop=True)


def term_cases(
    con: duckdb.DuckDBPyConnection, caseids: list[str], top_terms: int, groups: bool
) -> list[tuple[str, str, list[str]]]:
    """Which of these cases each row counts, as (term, term_kind, caseids): ALL_TERMS (kind
    'all') has every case; then the `top_terms` PTs with the most of these cases (ties by
    name), kind 'pt'; then, with `groups`, each shipped event group (kind 'group'), where a
    case counts once however many of the group's PTs it has."""
    reactions = con.execute(_REACTIONS, {"caseids": caseids}).fetchdf()
    rows = [(ALL_TERMS, "all", list(caseids))]
    counts = (
        reactions.groupby(["pt_key", "pt"])["caseid"]
        .nunique()
        .reset_index(name="n")
        .sort_values(["n", "pt"], ascending=[False, True], kind="stable")
    )
    for pt_key, pt in counts[["pt_key", "pt"]].head(max(top_terms, 0)).values:
        members = reactions.loc[reactions["pt_key"] == pt_key, "caseid"]
        rows.append((str(pt), "pt", sorted(set(members))))
    if groups:
        for group in make_design(groups=True).groups:
            keys = {p.strip().upper() for p in group.pts}
            members = reactions.loc[reactions["pt_key"].isin(keys), "caseid"]
            rows.append((group.name, "group", sorted(set(members))))
    return rows


@dataclass(frozen=True)
class TermCases:
    """The cases `cases` lists for some options and the rows `term_cases` makes of them, with
    the options and data vintage they were made for: one report's onset and dechallenge tables
    read them once (the substance's cases query is about 4 s on the whole archive)."""

    made_for: tuple[Any, ...]
    caseids: list[str]
    rows: list[tuple[str, str, list[str]]]


def cases_by_term(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
    top_terms: int = 10,
    groups: bool = False,
    made: TermCases | None = None,
) -> TermCases:
    """The substance's cases for these options and each row's cases (`term_cases`); `made` is
    returned as it is when it was made for the same options and data."""
    made_for = (
        substance.identity,
        since,
        until,
        roles,
        term,
        top_terms,
        groups,
        data_fingerprint(con),
    )
    if made is not None and made.made_for == made_for:
        return made
    listed = cases(con, substance, since, until, roles, term)
    caseids = [str(c) for c in listed["caseid"]]
    return TermCases(made_for, caseids, term_cases(con, caseids, top_terms, groups))


@dataclass(frozen=True)
class Onset:
    """Time to onset of one substance's cases, per term, with its provenance."""

    substance: str
    substance_version: str
    roles: str | None
    through: str
    vintage: str
    synthetic: bool
    tool_version: str
    table: pd.DataFrame
    """One row per term (ALL_TERMS first, top PTs, groups): counts by status, median and IQR
    of the onsets in days, Weibull shape with its 95% CI, scale, hazard and interpretation."""
    cases: pd.DataFrame
    """One row per case (`case_onsets`)."""
    fits: dict[str, WeibullFit]
    """The Weibull fit of each row, by `term_kind:term`."""

    def metadata(self) -> dict[str, Any]:
        """What the table was computed from, and how."""
        return {
            "substance": self.substance,
            "substance_version": self.substance_version,
            "roles": self.roles,
            "through": self.through,
            "vintage": self.vintage,
            "synthetic": self.synthetic,
            "tool_version": self.tool_version,
            "statuses": STATUSES,
            "method": (
                "onset = event date - earliest therapy start of the substance on or before it, "
                "full dates only; Weibull maximum likelihood with each onset interval-censored "
                "in [d, d+1) days; shape CI by profile likelihood (Cornelius et al. 2012)"
            ),
            "min_cases": ONSET_MIN_CASES,
        }


def _row(term: str, kind: str, statuses: pd.Series, days: np.ndarray, fit: WeibullFit) -> dict:
    row: dict[str, Any] = {"term": term, "term_kind": kind, "n_cases": int(statuses.size)}
    for status, column in _COUNT_COLUMNS.items():
        row[column] = int((statuses == status).sum())
    q1, median, q3 = np.percentile(days, [25, 50, 75]) if days.size else (math.nan,) * 3
    row.update(
        median_days=float(median),
        q1_days=float(q1),
        q3_days=float(q3),
        weibull_shape=fit.shape,
        shape_lower=fit.shape_lower,
        shape_upper=fit.shape_upper,
        weibull_scale_days=fit.scale_days,
        hazard=fit.hazard,
        interpretation=fit.interpretation,
    )
    return row


def onset(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
    top_terms: int = 10,
    groups: bool = False,
    by_term: TermCases | None = None,
) -> Onset:
    """Time to onset of the substance's cases (the cases `cases` lists for these options), overall,
    for its `top_terms` most reported PTs and, with `groups`, each shipped event group
    (`by_term`: those cases as `cases_by_term` made them, used if made for these options)."""
    made = cases_by_term(con, substance, since, until, roles, term, top_terms, groups, by_term)
    roles = parse_roles(roles)
    per_case = case_onsets(con, substance, made.caseids, roles)
    status = per_case.set_index("caseid")["onset_status"]
    days = per_case.set_index("caseid")["onset_days"]
    rows, fits = [], {}
    for name, kind, ids in made.rows:
        used = days[ids][status[ids] == "onset"].to_numpy(dtype=float)
        fit = weibull_fit(used)
        fits[f"{kind}:{name}"] = fit
        rows.append(_row(name, kind, status[ids], used, fit))
    loaded = con.execute("SELECT quarter, synthetic FROM quarters ORDER BY quarter").fetchall()
    return Onset(
        substance=substance.name,
        substance_version=substance.version,
        roles=roles,
        through=str(loaded[-1][0]) if loaded else "",
        vintage=data_fingerprint(con),
        synthetic=any(bool(s) for _, s in loaded),
        tool_version=__version__,
        table=pd.DataFrame(rows),
        cases=per_case,
        fits=fits,
    )


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """The onset table as an analyst scans it in 80 columns: cases, onsets used, flagged
    (partial date or negative onset), median (IQR) days, hazard, shape (95% CI)."""

    def days(row: pd.Series) -> str:
        if pd.isna(row["median_days"]):
            return ""
        return f"{row['median_days']:.3g} ({row['q1_days']:.3g}-{row['q3_days']:.3g})"

    def shape(row: pd.Series) -> str:
        if pd.isna(row["weibull_shape"]):
            return "no estimate"
        bounds = (_num(row["shape_lower"]), _num(row["shape_upper"]))
        return f"{row['weibull_shape']:.2f} ({bounds[0]}-{bounds[1]})"

    return pd.DataFrame(
        {
            "term": table["term"].str.slice(0, 20),
            "cases": table["n_cases"],
            "used": table["n_with_onset"],
            "flagged": table["n_partial_date"] + table["n_negative_onset"],
            "median (IQR)": table.apply(days, axis=1) if len(table) else [],
            "hazard": table["hazard"],
            "shape (95% CI)": table.apply(shape, axis=1) if len(table) else [],
        }
    )

"""Sensitivity analyses: the main signals beside runs that each change one design choice.

For the substance's top terms and every event group of the main run (`signals` with the shipped
groups), each analysis of ANALYSES is run through the same quarter and roles: suspect roles
only, the natural-product comparator, the substance's cases without another suspect drug,
without the cases received in the notoriety windows after regulatory events, masking-adjusted,
Mantel-Haenszel-adjusted for age, sex, year group and reporter jointly (`stratified.mh_tables`),
and by era. Every run uses the main run's EBGM prior, so that a difference comes from the 2x2
table the analysis changes, not from a refitted prior. A term is classed by one criterion in all
of them (`definitions.SENSITIVITY_CRITERION`); `verdict` says in one sentence whether its
signal is robust (`definitions.ROBUSTNESS_RULE`). An analysis that cannot be run on these data
(no comparator case, an earlier quarter for MH) is listed with the reason, never left blank.
Results are stored in `signal_sensitivity` under the main run's run_id, with the options and
skipped analyses in `signal_sensitivity_runs`; a later call on the same data, options and tool
version reads them back instead of running the analyses again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from . import __version__, stats
from .db import ensure_derived_table
from .definitions import (
    ROBUSTNESS_RULE,
    SENSITIVITY_CRITERION,
    SUSPECT_ROLES,
    marks,
    roles_option,
)
from .errors import NoDataError, UsageError
from .freshness import data_fingerprint, has_table
from .signals import SignalRun, forget_keyed_reactions, resolve_through, signals
from .stratified import mh_tables
from .substances import Substance

TOP_TERMS = 10
"""How many PTs the analyses compare (the main run's strongest, by its sort), besides groups."""
MH = "mh"


@dataclass(frozen=True)
class Analysis:
    """One sensitivity analysis: its key (a column and table value), label and signals options."""

    key: str
    label: str
    options: Mapping[str, Any] = field(default_factory=dict)
    what: str = ""  # one line for the methods block
    short: str = ""  # the terminal's column heading


ANALYSES: tuple[Analysis, ...] = (
    Analysis(
        "main", "Main", {}, "the main analysis: the run's roles, all cases as comparator", "main"
    ),
    Analysis(
        "suspect_only",
        "Suspect only",
        {"roles": SUSPECT_ROLES},
        "the substance and the other drugs counted only as suspect (PS, SS)",
        "susp",
    ),
    Analysis(
        "natural_products",
        "Natural-product comparator",
        {"background": "natural-products"},
        "c and d count only the cases of other herbal and dietary-supplement products",
        "natprod",
    ),
    Analysis(
        "substance_only",
        "Substance only",
        {"subset": "only"},
        "only the substance's cases without another suspect drug (the others left out)",
        "alone",
    ),
    Analysis(
        "without_notoriety",
        "Without notoriety windows",
        {"exclude_window": 6},
        "without every case initially received within 6 months after a regulatory event",
        "notor",
    ),
    Analysis(
        "masking_adjusted",
        "Masking-adjusted",
        {"remove_maskers": 1},
        "each term's strongest masking drug (Maignen et al. 2014) removed from its background",
        "mask",
    ),
    Analysis(
        MH,
        "MH-adjusted",
        {},
        "Mantel-Haenszel ROR over the joint strata of age group, sex, year group and reporter",
        "mh",
    ),
    Analysis(
        "before_2018",
        "Before 2018",
        {"era": "before-2018"},
        "only the cases initially received before 2018",
        "<2018",
    ),
    Analysis(
        "from_2018",
        "2018 on",
        {"era": "2018-on"},
        "only the cases initially received from 2018",
        "2018+",
    ),
)
"""The analyses in the order the report's table shows them, the main one first."""

COLUMNS = "analysis term term_kind a b c d ror ror_lower ror_upper marks signal changed".split()
_DDL = """CREATE TABLE IF NOT EXISTS signal_sensitivity (
    run_id VARCHAR, substance VARCHAR, through VARCHAR, analysis VARCHAR, term VARCHAR,
    term_kind VARCHAR, a BIGINT, b BIGINT, c BIGINT, d BIGINT, ror DOUBLE, ror_lower DOUBLE,
    ror_upper DOUBLE, marks VARCHAR, signal BOOLEAN, changed BOOLEAN, data_fingerprint VARCHAR,
    created_at TIMESTAMP)"""
_RUNS_DDL = """CREATE TABLE IF NOT EXISTS signal_sensitivity_runs (
    run_id VARCHAR, substance VARCHAR, through VARCHAR, options VARCHAR, skipped VARCHAR,
    data_fingerprint VARCHAR, tool_version VARCHAR, created_at TIMESTAMP)"""


@dataclass(frozen=True)
class Sensitivity:
    """The analyses' results for the compared terms, and the analyses that could not be run.

    table: one row per analysis and term (COLUMNS; a term without a case in an analysis has
    a = 0 and no ROR); skipped: analysis key -> why it was not run; verdicts: term -> sentence."""

    main: SignalRun
    terms: list[tuple[str, str]]  # (term, term_kind) compared, in the main run's order
    table: pd.DataFrame
    skipped: dict[str, str]
    verdicts: dict[tuple[str, str], str]
    stratified: pd.DataFrame | None = None
    """`stratified.mh_table` of the compared PTs by each factor, counted with the MH analysis
    (None when that did not run here: skipped, or the analyses were read back)."""

    def changes(self) -> pd.DataFrame:
        """The rows whose classification differs from the main analysis's."""
        return self.table[self.table["changed"]].reset_index(drop=True)


def compared_terms(main: SignalRun, top: int = TOP_TERMS) -> list[tuple[str, str]]:
    """The main run's `top` strongest PTs (its sort order) and every event group it kept."""
    table = main.table
    groups = table[table["term_kind"] != "pt"]
    return [(t, "pt") for t in _top_pts(table, top)] + [
        (t, k) for t, k in zip(groups["term"], groups["term_kind"], strict=True)
    ]


def _top_pts(table: pd.DataFrame, top: int) -> list[str]:
    """A run's `top` strongest PTs in its sort order: of a plain run's table (PTs only) or of the
    main run's, whose PT rows are the plain run's in the same order."""
    pts = table[table["term_kind"] == "pt"] if "term_kind" in table else table
    return [str(t) for t in pts["term"].head(top)]


def main_run(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    through: str | None,
    roles: str | None,
    min_cases: int,
    plain: SignalRun | None = None,
    top: int = TOP_TERMS,
) -> SignalRun:
    """The main analysis: the plain run (stored, its prior fitted or reused) with the shipped
    event groups' rows added. Groups change no PT row and are a family of their own for p_adj,
    so this is `signals(groups=True)` without counting every PT a second time. `plain`: that
    run of these options when the caller has it already (the report). The groups are counted
    with the `top` PTs that `compared_terms` compares, which the analyses' runs then find in
    the keyed reactions (`signals._keyed_reactions`) instead of reading them again."""
    if plain is None:
        plain = signals(con, substance, through, roles, min_cases)
    elif not _is_plain(plain, substance, through, roles, min_cases):
        raise ValueError("the plain run given is not the run of these options")
    compared = _top_pts(plain.table, top)
    grouped = signals(
        con,
        substance,
        plain.through,
        roles,
        min_cases,
        prior=plain.prior,
        groups=True,
        terms=compared,
    )
    groups = grouped.table[grouped.table["term_kind"] != "pt"]
    pts = plain.table.assign(term_kind="pt", background=grouped.design.background_label)
    table = pd.concat([pts[groups.columns], groups], ignore_index=True)
    return replace(plain, table=table, design=grouped.design)


def sensitivity(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    through: str | None = None,
    roles: str | None = None,
    min_cases: int = 3,
    top: int = TOP_TERMS,
    analyses: Sequence[Analysis] = ANALYSES,
    plain: SignalRun | None = None,
) -> Sensitivity:
    """Run every analysis for the main run's top terms and event groups; store and return them.

    The main run is `main_run` (its prior fitted or stored as usual, or `plain`); the others
    reuse its prior. The stored analyses of the same main run, options and tool version are
    read back, not run again (the main run's id names the data vintage). No case of the
    substance is a NoDataError."""
    try:
        main = main_run(con, substance, through, roles, min_cases, plain, top)
        terms = compared_terms(main, top)
        options = json.dumps(
            [top, [[a.key, a.label, dict(a.options)] for a in analyses]], default=str
        )
        stored = _stored(con, main, options, analyses, terms)
        if stored is not None:
            return stored
        frames = [_rows(analyses[0].key, main.table, terms)]
        skipped: dict[str, str] = {}
        by_factor: pd.DataFrame | None = None
        for analysis in analyses[1:]:
            try:
                if analysis.key == MH:
                    by_factor, joint = _mh(con, substance, main, terms)
                    frames.append(_rows(MH, _mh_frame(joint), terms, marked=False))
                else:
                    frames.append(_analysis(con, substance, main, analysis, terms))
            except (NoDataError, UsageError) as e:
                skipped[analysis.key] = str(e)
    finally:
        forget_keyed_reactions(con)  # the runs' shared reactions of the compared terms
    table = pd.concat(frames, ignore_index=True)
    base = table[table["analysis"] == analyses[0].key].set_index(["term", "term_kind"])["signal"]
    table["changed"] = [
        bool(s) != bool(base.get((t, k), False))
        for t, k, s in zip(table["term"], table["term_kind"], table["signal"], strict=True)
    ]
    table = table[list(COLUMNS)]
    _store(con, main, table, options, skipped)
    return replace(_result(main, terms, table, skipped, analyses), stratified=by_factor)


def _result(
    main: SignalRun,
    terms: list[tuple[str, str]],
    table: pd.DataFrame,
    skipped: dict[str, str],
    analyses: Sequence[Analysis],
) -> Sensitivity:
    """The result of these rows, with each compared term's verdict over the analyses run."""
    run = [a for a in analyses if a.key not in skipped]
    verdicts = {term: verdict(table, term, run) for term in terms}
    return Sensitivity(main, terms, table, skipped, verdicts)


def _is_plain(
    run: SignalRun, substance: Substance, through: str | None, roles: str | None, min_cases: int
) -> bool:
    """Whether a run is the plain signals run of these options (default design, no strata)."""
    return (
        run.design.is_default
        and not run.stratify
        and run.substance == substance.name
        and run.substance_version == substance.version
        and through in (None, run.through)
        and run.roles == roles_option(roles)
        and run.min_cases == min_cases
    )


def _analysis(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    main: SignalRun,
    analysis: Analysis,
    terms: list[tuple[str, str]],
) -> pd.DataFrame:
    """One analysis's rows for the compared terms (MH: `_mh`)."""
    options = {"roles": main.roles, **analysis.options}
    pts = [t for t, k in terms if k == "pt"]
    run = signals(
        con,
        substance,
        main.through,
        min_cases=1,
        groups=True,
        prior=main.prior,
        terms=pts,
        **options,
    )
    return _rows(analysis.key, run.table, terms)


def _mh(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    main: SignalRun,
    terms: list[tuple[str, str]],
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The compared PTs' MH table by each factor and the MH-adjusted rows of the terms and
    groups (`stratified.mh_tables`): the clean layer's cases, so the latest quarter only."""
    latest, _ = resolve_through(con, None)
    if main.through != latest:
        raise UsageError(
            f"Mantel-Haenszel counts the clean layer, which holds the cases through {latest}"
        )
    pts = [t for t, k in terms if k == "pt"]
    return mh_tables(con, substance, main.roles, pts, main.design.groups)


def _mh_frame(mh: pd.DataFrame) -> pd.DataFrame:
    """`mh_joint` rows as signal-table rows: the pooled ROR, classed by the ROR criterion."""
    return pd.DataFrame(
        {
            "term": mh["term"],
            "term_kind": mh["term_kind"],
            **{c: mh[c] for c in "abcd"},
            "ror": mh["ror_mh"],
            "ror_lower": mh["ror_mh_lower"],
            "ror_upper": mh["ror_mh_upper"],
            # The ROR criterion on the pooled estimate, as stats.ror_mh applies it.
            "signal": stats.ror_signal(mh["ror_mh_lower"].astype(float), mh["a"].astype(float)),
        }
    )


def _rows(
    key: str, table: pd.DataFrame, terms: list[tuple[str, str]], marked: bool = True
) -> pd.DataFrame:
    """An analysis's rows for the compared terms; a term it does not report has a = 0."""
    found = table.set_index(["term", "term_kind"])
    rows = []
    for term, kind in terms:
        if (term, kind) in found.index:
            r = found.loc[(term, kind)]
            rows.append(
                {
                    "analysis": key,
                    "term": term,
                    "term_kind": kind,
                    **{c: int(r[c]) for c in "abcd"},
                    **{c: float(r[c]) for c in ("ror", "ror_lower", "ror_upper")},
                    "marks": marks(r) if marked else "",
                    "signal": bool(r[SENSITIVITY_CRITERION.flag] if marked else r["signal"]),
                }
            )
        else:
            rows.append(
                {
                    "analysis": key,
                    "term": term,
                    "term_kind": kind,
                    **dict.fromkeys("abcd", 0),
                    **dict.fromkeys(("ror", "ror_lower", "ror_upper"), np.nan),
                    "marks": "",
                    "signal": False,
                }
            )
    return pd.DataFrame(rows, columns=[c for c in COLUMNS if c != "changed"])


def verdict(table: pd.DataFrame, term: tuple[str, str], run: Sequence[Analysis]) -> str:
    """One sentence on whether the term's signal is robust (`definitions.ROBUSTNESS_RULE`)."""
    rows = table[(table["term"] == term[0]) & (table["term_kind"] == term[1])]
    signal = dict(zip(rows["analysis"], rows["signal"].astype(bool), strict=True))
    labels = {a.key: a.label for a in run}
    main_key, others = run[0].key, [a.key for a in run[1:] if a.key in signal]
    if signal.get(main_key, False):
        lost = [labels[k] for k in others if not signal[k]]
        if not lost:
            return f"Robust: a signal in all {len(others) + 1} analyses run."
        return f"Not robust: no longer a signal in {_listed(lost)}."
    gained = [labels[k] for k in others if signal[k]]
    if gained:
        return f"Not a signal in the main analysis; a signal in {_listed(gained)}."
    return "Not a signal in any analysis run."


def _listed(labels: list[str]) -> str:
    names = [f"'{label}'" for label in labels]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def wide(result: Sensitivity) -> pd.DataFrame:
    """The compact side-by-side table: a term per row, an analysis per column, each cell its
    ROR (95% CI) and a, '✓' where it is classed a signal; then the verdict."""
    run = [a for a in ANALYSES if a.key in set(result.table["analysis"])]
    cells = result.table.set_index(["analysis", "term", "term_kind"])
    data: dict[str, list[str]] = {"term": [], "kind": []}
    for analysis in run:
        data[analysis.label] = []
    data["verdict"] = []
    for term, kind in result.terms:
        data["term"].append(term)
        data["kind"].append(kind)
        for analysis in run:
            key = (analysis.key, term, kind)
            data[analysis.label].append(_cell(cells.loc[key]) if key in cells.index else "n/a")
        data["verdict"].append(result.verdicts[(term, kind)])
    return pd.DataFrame(data)


def terminal(result: Sensitivity) -> pd.DataFrame:
    """The side-by-side table narrow enough for a terminal: per analysis '✓' (a signal), '·'
    (not), '-' (no case) or 'n/a' (not run), with a."""
    cells = result.table.set_index(["analysis", "term", "term_kind"])
    data: dict[str, list[str]] = {"term": [], "kind": []}
    for analysis in ANALYSES:
        data[analysis.short] = []
    for term, kind in result.terms:
        data["term"].append(term[:26])
        data["kind"].append(kind)
        for analysis in ANALYSES:
            key = (analysis.key, term, kind)
            if key not in cells.index:
                data[analysis.short].append("n/a")
                continue
            row = cells.loc[key]
            a = int(row["a"])
            data[analysis.short].append("-" if a == 0 else f"{'✓' if row['signal'] else '·'}{a}")
    return pd.DataFrame(data)


TERMINAL_LEGEND = (
    "✓ a signal by the ROR criterion, · not, with a; - no case; n/a not run. Columns: "
    + "; ".join(f"{a.short} = {a.label}" for a in ANALYSES)
    + "."
)


def _cell(row: pd.Series) -> str:
    if int(row["a"]) == 0:
        return "no cases"
    if pd.isna(row["ror"]):
        return f"n/a, a={int(row['a'])}"
    mark = " ✓" if bool(row["signal"]) else ""
    interval = f"{_fig(row['ror_lower'])}-{_fig(row['ror_upper'])}"
    return f"{_fig(row['ror'])} ({interval}), a={int(row['a'])}{mark}"


def _fig(value: float) -> str:
    return f"{value:.0f}" if value >= 100 else f"{value:.3g}"


def methods() -> list[str]:
    """The methods block's lines: each analysis, the shared prior and the classification rule."""
    lines = [f"{a.label}: {a.what}." for a in ANALYSES]
    lines.append(
        "Every analysis uses the main analysis's EBGM prior, so that differences come from the "
        "2x2 tables the analysis changes. " + ROBUSTNESS_RULE
    )
    return lines


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create `signal_sensitivity` and `signal_sensitivity_runs` (safe to repeat)."""
    ensure_derived_table(con, _DDL)
    ensure_derived_table(con, _RUNS_DDL)


def _stored(
    con: duckdb.DuckDBPyConnection,
    main: SignalRun,
    options: str,
    analyses: Sequence[Analysis],
    terms: list[tuple[str, str]],
) -> Sensitivity | None:
    """The stored analyses of this main run and options, made by this version on this data;
    None when there are none."""
    if not has_table(con, "signal_sensitivity_runs") or not has_table(con, "signal_sensitivity"):
        return None
    row = con.execute(
        "SELECT skipped FROM signal_sensitivity_runs WHERE run_id = $r AND options = $o "
        "AND tool_version = $v AND data_fingerprint = $f",
        {"r": main.run_id, "o": options, "v": __version__, "f": data_fingerprint(con)},
    ).fetchone()
    if row is None:
        return None
    table = con.execute(
        f"SELECT {', '.join(COLUMNS)} FROM signal_sensitivity WHERE run_id = $r",  # noqa: S608
        {"r": main.run_id},
    ).fetchdf()
    order = {a.key: i for i, a in enumerate(analyses)}
    place = {term: i for i, term in enumerate(terms)}
    table["_order"] = [
        order.get(a, len(order)) * (len(place) + 1) + place.get((t, k), len(place))
        for a, t, k in zip(table["analysis"], table["term"], table["term_kind"], strict=True)
    ]
    table = table.sort_values("_order", kind="mergesort").drop(columns="_order")
    table = table.reset_index(drop=True).astype({c: "int64" for c in "abcd"})
    table["marks"] = table["marks"].fillna("")
    return _result(main, terms, table, json.loads(row[0]), analyses)


def _store(
    con: duckdb.DuckDBPyConnection,
    main: SignalRun,
    table: pd.DataFrame,
    options: str,
    skipped: dict[str, str],
) -> None:
    """Replace the main run's stored sensitivity rows and options by these, in one transaction."""
    ensure_tables(con)
    fingerprint = data_fingerprint(con)
    created = datetime.now(UTC).replace(tzinfo=None)
    frame = table.assign(
        run_id=main.run_id,
        substance=main.substance,
        through=main.through,
        data_fingerprint=fingerprint,
        created_at=created,
    )
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM signal_sensitivity WHERE run_id = $r", {"r": main.run_id})
        con.execute("DELETE FROM signal_sensitivity_runs WHERE run_id = $r", {"r": main.run_id})
        con.execute(
            "INSERT INTO signal_sensitivity_runs VALUES ($r, $s, $t, $o, $k, $f, $v, $c)",
            {
                "r": main.run_id,
                "s": main.substance,
                "t": main.through,
                "o": options,
                "k": json.dumps(skipped),
                "f": fingerprint,
                "v": __version__,
                "c": created,
            },
        )
        con.register("_sensitivity_frame", frame)
        con.execute(
            "INSERT INTO signal_sensitivity SELECT run_id, substance, through, analysis, term, "
            "term_kind, a, b, c, d, ror, ror_lower, ror_upper, marks, signal, changed, "
            "data_fingerprint, created_at FROM _sensitivity_frame"
        )
        con.unregister("_sensitivity_frame")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise

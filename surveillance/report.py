"""The quarterly surveillance report: one self-contained folder per quarter and substance.

Reads the database (signals as of the quarter and the loaded quarters before it, the substance's
cases with the quarter of their initial FDA receipt, trends) and writes `<out>/index.html` (one
file, figures embedded, no external requests), `report.md`, `tables/*.csv`, `figures/*.png|svg`
and `metadata.json` (data vintage: quarters and zip checksums, term-file version, thresholds,
dedup mode, prior). The folder is built under a hidden work name beside `out` and renamed into
place; work folders left by a killed run are removed by the next one. Everything from the data
or the file system is escaped in HTML and Markdown. Same database and options, same tables and
figures.
"""

from __future__ import annotations

import base64
import json
import math
import os
import re
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader
from markupsafe import Markup

from . import __version__, stats
from .asof import AsOfCounts, asof_signal_tables, stored_asof_counts
from .caers import caers_side_by_side
from .caers import is_loaded as caers_is_loaded
from .clean import REPORTER_TYPES, ensure_macros
from .dechallenge import compact as dechallenge_compact
from .dechallenge import dechallenge
from .definitions import (
    AGE_GROUPS,
    AGE_UNKNOWN,
    COUNTRY_GROUPS,
    CRITERIA,
    NEW_CASE,
    OUTCOMES,
    SEXES,
    SUSPECT_ROLES,
    country_group,
    criteria_legend,
    marks,
    parse_roles,
)
from .errors import NoDataError
from .extract import ensure_extracted, has_table, resolve
from .faers_format import quarter_gaps, quarter_option
from .onset import Onset, TermCases, cases_by_term
from .onset import compact as onset_compact
from .onset import onset as time_to_onset
from .output import p_text, render
from .pipeline import current_dedup
from .polysubstance import OTHER_DRUGS, DrugClass, class_named, co_suspect_profile, subset_shares
from .sensitivity import ANALYSES, Sensitivity, methods, sensitivity
from .sensitivity import wide as sensitivity_wide
from .sequential import sequential
from .signals import (
    CAVEATS,
    OUTPUT_COLUMNS,
    SignalRun,
    background_statement,
    data_fingerprint,
    resolve_through,
    signals,
)
from .stratified import FACTORS, UNKNOWN_RULE, compact_mh, mh_table
from .stratified import legend as mh_legend
from .substances import Substance

MOVERS = 10
TOP_ROWS = 15
STRONGEST = 3
SEVEN_OH = "7-oh"
EBGM_COLUMNS = ("ebgm", "eb05", "eb95")
ZERO_MARK = "†"
NOT_REPORTED = "not reported"

# NEW_CASE (definitions.NEW_CASE) is cases.initial_quarter, from the clean layer's one macro
# (clean.initial_receipts); beside it the quarters in which the case's versions were received,
# for counting follow-ups.
_INITIAL = """initial AS (
    SELECT r.caseid, any_value(c.initial_quarter) AS initial_quarter,
        list(r.quarter ORDER BY r.quarter) AS version_quarters
    FROM reports r JOIN cases c USING (caseid)
    WHERE r.caseid IN (SELECT caseid FROM hits) GROUP BY r.caseid)"""

# One row per surviving case involving the substance in the counted roles; `suspect` says whether
# it is involved as PS or SS. Constant fragments only; every value is bound.
_CASE_FRAME = f"""WITH hits AS (
    SELECT caseid,
        list_sort(list_distinct(list(matched_string || ' (' || upper(trim(role_cod)) || ')')))
            AS matched,
        bool_or(upper(trim(role_cod)) IN ('PS', 'SS')) AS suspect
    FROM substance_hits WHERE substance = $substance
    GROUP BY caseid
    HAVING bool_or(role_counts(role_cod, $roles))),
{_INITIAL},
seven_oh AS (SELECT DISTINCT caseid FROM substance_hits WHERE substance = $seven_oh),
reactions AS (
    SELECT caseid, list_sort(list_distinct(list(pt))) AS reactions
    FROM case_reactions WHERE caseid IN (SELECT caseid FROM hits) GROUP BY caseid),
others AS (
    SELECT d.caseid,
        list_sort(list_distinct(list(d.ingredient) FILTER (WHERE d.co_suspect))) AS co_suspects,
        list_sort(list_distinct(list(d.ingredient))) AS co_drugs
    FROM ({OTHER_DRUGS}) d JOIN hits USING (caseid)
    GROUP BY d.caseid)
SELECT c.caseid, i.initial_quarter, i.version_quarters, c.init_fda_date,
    c.quarter AS latest_quarter, c.age_years, c.sex, c.country, c.reporter_type_label,
    c.serious, c.death, c.life_threatening, c.hospitalization, h.matched, h.suspect,
    age_group(c.age_years) AS age_group,
    worst_outcome(c.death, c.life_threatening, c.hospitalization, c.serious) AS outcome,
    s.caseid IS NOT NULL AS seven_oh, coalesce(r.reactions, []) AS reactions,
    coalesce(o.co_suspects, []) AS co_suspects, coalesce(o.co_drugs, []) AS co_drugs
FROM cases c
JOIN hits h USING (caseid)
JOIN initial i USING (caseid)
LEFT JOIN seven_oh s USING (caseid)
LEFT JOIN reactions r USING (caseid)
LEFT JOIN others o USING (caseid)
ORDER BY c.caseid"""  # noqa: S608


def opioids() -> DrugClass:
    """The opioid class of the shipped class file (`surveillance.polysubstance`)."""
    return class_named("opioids")


# ---------------------------------------------------------------------------------------------
# Quarters


def _comparison(loaded: Sequence[str], quarter: str) -> tuple[str | None, str | None]:
    """The previous loaded quarter, and a notice when it is not the calendar-previous one."""
    earlier = [q for q in loaded if q < quarter]
    if not earlier:
        return (
            None,
            f"{quarter} is the first loaded quarter: there is no earlier quarter to compare with",
        )
    previous = earlier[-1]
    gap = quarter_gaps(previous, quarter, loaded)
    if not gap:
        return previous, None
    missing = gap[0] + " is" if len(gap) == 1 else f"{gap[0]}-{gap[-1]} are"
    return previous, f"compared with {previous}, the previous loaded quarter; {missing} not loaded"


# ---------------------------------------------------------------------------------------------
# Signals


def _run(
    con: duckdb.DuckDBPyConnection, s: Substance, through: str | None, **options: Any
) -> tuple[SignalRun | None, str | None]:
    """A signals run, or None and the reason when no case involves the substance by then."""
    if through is None:
        return None, None
    try:
        return signals(con, s, through=through, **options), None
    except NoDataError as e:
        return None, str(e)


def usable_table(run: SignalRun) -> pd.DataFrame:
    """The run's table as the report shows it (see `_shown`)."""
    return _shown(run.table, run.ebgm_available)


def _shown(table: pd.DataFrame, ebgm_available: bool) -> pd.DataFrame:
    """A signal table as the report shows it: EBGM blanked and not counted when its prior is
    unavailable, strongest first (by EB05, else by the ROR's lower bound)."""
    table = table.copy()
    if not ebgm_available:
        for column in EBGM_COLUMNS:
            table[column] = np.nan
        table["signal_ebgm"] = False
    key = "eb05" if ebgm_available else "ror_lower"
    table = table.sort_values([key, "term"], ascending=[False, True], kind="mergesort")
    return table.reset_index(drop=True)


def _earlier_tables(
    con: duckdb.DuckDBPyConnection,
    counts: AsOfCounts,
    now: SignalRun | None,
    quarters: Iterable[str | None],
) -> dict[str | None, pd.DataFrame | None]:
    """The comparison quarters' signal tables as shown, from the cumulative counts the trends
    use and under the report quarter's prior: the numbers `signals(through=q, prior=...)` gives.
    None for no quarter, no report-quarter run, or no substance case by then."""
    shown: dict[str | None, pd.DataFrame | None] = dict.fromkeys(quarters)
    if now is None:
        return shown
    wanted = [q for q in quarters if q is not None]
    tables = asof_signal_tables(con, counts, now.prior, wanted)
    for q in wanted:
        if counts.n_exposed[counts.quarters.index(q)] > 0:
            table = tables[q]
            shown[q] = _shown(table[table["a"] >= now.min_cases], now.ebgm_available)
    return shown


def _flags(table: pd.DataFrame | None) -> set[tuple[str, str]]:
    """(term, criterion flag) pairs met in a table (none for no table)."""
    if table is None:
        return set()
    return {(t, c.flag) for c in CRITERIA for t in table["term"][table[c.flag].astype(bool)]}


def what_changed(
    now: pd.DataFrame, before: pd.DataFrame | None, previous: str | None, measure: str
) -> dict[str, Any]:
    """New and lost signals (per term and criterion), and the terms whose `measure` moved most."""
    if previous is None:
        return {"previous": None, "new": [], "lost": [], "movers": [], "measure": measure}
    names = {c.flag: c.name for c in CRITERIA}
    cur = now.set_index("term")
    old = before.set_index("term") if before is not None else now.iloc[0:0].set_index("term")
    was, isnow = _flags(before), _flags(now)

    def row(term: str, flag: str) -> dict[str, Any]:
        a = int(cur.loc[term, "a"]) if term in cur.index else 0
        return {"term": term, "criterion": names[flag], "a": a}

    both = cur.index.intersection(old.index)
    moved = pd.DataFrame(
        {
            "term": both,
            "a_before": old.loc[both, "a"].to_numpy(),
            "a_now": cur.loc[both, "a"].to_numpy(),
            "before": old.loc[both, measure].to_numpy(dtype=float),
            "now": cur.loc[both, measure].to_numpy(dtype=float),
        }
    )
    moved["change"] = moved["now"] - moved["before"]
    moved = moved.dropna(subset=["change"])
    moved = moved.iloc[np.lexsort((moved["term"].to_numpy(), -moved["change"].abs().to_numpy()))]
    return {
        "previous": previous,
        "new": [row(t, f) for t, f in sorted(isnow - was, key=lambda p: (names[p[1]], p[0]))],
        "lost": [row(t, f) for t, f in sorted(was - isnow, key=lambda p: (names[p[1]], p[0]))],
        "movers": moved.head(MOVERS).to_dict(orient="records"),
        "measure": measure,
    }


# ---------------------------------------------------------------------------------------------
# Number formats (2-3 significant figures for reading; the CSV keeps full precision)


def sig(value: Any) -> str:
    """A number to three significant figures (integers above 100), 'n/a' when missing."""
    if value is None or (isinstance(value, float | np.floating) and math.isnan(value)):
        return "n/a"
    x = float(value)
    if math.isinf(x):
        return "∞" if x > 0 else "-∞"
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:#.3g}".rstrip(".")


def _interval(estimate: Any, lower: Any, upper: Any) -> str:
    return f"{sig(estimate)} ({sig(lower)}-{sig(upper)})"


def _compact(table: pd.DataFrame, ebgm_available: bool) -> list[dict[str, Any]]:
    """The signal table as the report prints it by default, with sort keys for each column."""
    rows = []
    for r in table.to_dict(orient="records"):
        ebgm = _interval(r["ebgm"], r["eb05"], r["eb95"]) if ebgm_available else "unavailable"
        rows.append(
            {
                "term": r["term"],
                "zero_corrected": bool(r["zero_corrected"]),
                "a": int(r["a"]),
                "expected": sig(r["expected"]),
                "prr": _interval(r["prr"], r["prr_lower"], r["prr_upper"]),
                "ror": _interval(r["ror"], r["ror_lower"], r["ror_upper"]),
                "ic025": sig(r["ic025"]),
                "ebgm": ebgm,
                "p": p_text(r["p_adj"]),
                "marks": marks(r),
                "signal": any(bool(r[c.flag]) for c in CRITERIA),
                "keys": {
                    "expected": r["expected"],
                    "prr": r["prr"],
                    "ror": r["ror"],
                    "ic025": r["ic025"],
                    "ebgm": r["ebgm"] if ebgm_available else "",
                    "p": r["p_adj"],
                },
            }
        )
    return rows


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _pct_text(value: Any) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.1f}"


def _age_text(value: Any) -> str:
    return "" if value is None or pd.isna(value) else f"{float(value):g}"


def _full_cell(value: Any) -> str:
    if value is None or value is pd.NA:
        return "n/a"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        return "n/a" if math.isnan(value) else f"{value:.6g}"
    return str(value)


# ---------------------------------------------------------------------------------------------
# Cases: this quarter, the line listing and the descriptive tables


def case_frame(con: duckdb.DuckDBPyConnection, s: Substance, roles: str | None) -> pd.DataFrame:
    """One row per surviving case involving the substance, with its initial-receipt quarter,
    worst outcome, age group, country group, product type and co-reported drugs."""
    ensure_macros(con)
    ensure_extracted(con, s)
    ensure_extracted(con, resolve(SEVEN_OH))
    frame = con.execute(
        _CASE_FRAME, {"substance": s.name, "roles": roles, "seven_oh": SEVEN_OH}
    ).fetchdf()
    for column in ("version_quarters", "matched", "reactions", "co_suspects", "co_drugs"):
        frame[column] = [list(v) for v in frame[column]]
    frame["country_group"] = [country_group(c) for c in frame["country"]]
    frame["reporter"] = frame["reporter_type_label"].fillna(NOT_REPORTED)
    frame["initial_year"] = frame["initial_quarter"].str[:4]
    return frame


def _followups(frame: pd.DataFrame, quarter: str) -> int:
    """Report versions received in `quarter` for cases initially received before it."""
    earlier = frame[frame["initial_quarter"] < quarter]
    return int(sum(v.count(quarter) for v in earlier["version_quarters"]))


_QUARTER_ROWS = {
    "new_cases": "New cases (initial FDA receipt in the quarter)",
    "new_deaths": "New cases with a fatal outcome",
    "new_serious": "New serious cases",
    "followups": "Follow-up reports received for earlier cases",
    "new_signals": "New signals (term and criterion)",
}


def quarter_counts(
    frame: pd.DataFrame, quarter: str | None, n_new_signals: int | None
) -> dict[str, int | None]:
    """The 'This quarter' numbers of one quarter (all None when there is no such quarter)."""
    if quarter is None:
        return dict.fromkeys(_QUARTER_ROWS)
    new = frame[frame["initial_quarter"] == quarter]
    return {
        "new_cases": len(new),
        "new_deaths": int(new["death"].sum()),
        "new_serious": int(new["serious"].sum()),
        "followups": _followups(frame, quarter),
        "new_signals": n_new_signals,
    }


def this_quarter_table(
    quarter: str, now: dict[str, int | None], previous: str | None, before: dict[str, int | None]
) -> pd.DataFrame:
    """The 'This quarter' table: one row per measure, the quarter and the previous one."""
    return pd.DataFrame(
        {
            "measure": list(_QUARTER_ROWS.values()),
            quarter: pd.array([now[k] for k in _QUARTER_ROWS], dtype="Int64"),
            f"previous ({previous or 'none'})": pd.array(
                [before[k] for k in _QUARTER_ROWS], dtype="Int64"
            ),
        }
    )


def line_listing(frame: pd.DataFrame, quarter: str) -> pd.DataFrame:
    """The new cases of the quarter, one row each, as the report lists them."""
    return listing_columns(frame[frame["initial_quarter"] == quarter])


def listing_columns(new: pd.DataFrame) -> pd.DataFrame:
    """Cases of the case frame with the columns of the line listing."""
    return pd.DataFrame(
        {
            "caseid": new["caseid"],
            "initial_receipt": [
                q if pd.isna(d) else f"{q} ({pd.Timestamp(d).date().isoformat()})"
                for q, d in zip(new["initial_quarter"], new["init_fda_date"], strict=True)
            ],
            "age_years": new["age_years"],
            "sex": new["sex"],
            "country": new["country"].fillna(NOT_REPORTED),
            "reporter_type": new["reporter"],
            "outcome": new["outcome"],
            "substance_matched": new["matched"],
            "co_suspect_drugs": new["co_suspects"],
            "reactions": new["reactions"],
        }
    ).reset_index(drop=True)


def _shares(
    values: pd.Series,
    suspect: pd.Series,
    label: str,
    order: Iterable[str] | None = None,
    top: int | None = None,
) -> pd.DataFrame:
    """Cases per category with percentages, for all cases and for suspect-only cases.

    A list value puts a case in each of its categories (percentages then do not add up)."""
    n_all, n_suspect = len(values), int(suspect.sum())
    exploded = values.explode().dropna()
    all_counts = exploded.value_counts()
    suspect_counts = exploded[suspect.reindex(exploded.index).to_numpy(bool)].value_counts()
    if order is not None:
        index = list(order)
    else:
        ranked = sorted(all_counts.items(), key=lambda kv: (-kv[1], str(kv[0])))
        index = [k for k, _ in ranked][:top]
    counts = all_counts.reindex(index, fill_value=0).astype("int64")
    suspects = suspect_counts.reindex(index, fill_value=0).astype("int64")
    return pd.DataFrame(
        {
            label: index,
            "n_cases": counts.to_numpy(),
            "pct": _pct(counts.to_numpy(), n_all),
            "n_cases_suspect": suspects.to_numpy(),
            "pct_suspect": _pct(suspects.to_numpy(), n_suspect),
        }
    )


def _pct(counts: np.ndarray, total: int) -> np.ndarray:
    if total == 0:
        return np.full(len(counts), np.nan)
    return np.round(100.0 * counts / total, 1)


def describe(frame: pd.DataFrame, opioid_class: DrugClass) -> dict[str, pd.DataFrame]:
    """The descriptive tables of a set of cases, any role and suspect-only side by side."""
    suspect = frame["suspect"].astype(bool)
    opioid = [[d for d in drugs if opioid_class.has(d)] for drugs in frame["co_drugs"]]
    poly = pd.Series(
        [
            [
                label
                for label, present in (
                    ("another drug (any role)", bool(drugs)),
                    ("another suspect drug (PS/SS)", bool(co)),
                    ("an opioid (any role)", bool(op)),
                    ("an opioid as suspect (PS/SS)", bool(set(op) & set(co))),
                )
                if present
            ]
            for drugs, co, op in zip(frame["co_drugs"], frame["co_suspects"], opioid, strict=True)
        ],
        index=frame.index,
        dtype=object,
    )
    product = pd.Series(
        np.where(frame["seven_oh"].to_numpy(bool), _PRODUCTS[0], _PRODUCTS[1]),
        index=frame.index,
        dtype=object,
    )
    years = sorted(frame["initial_year"].dropna().unique())
    reporters = [*REPORTER_TYPES.values(), NOT_REPORTED]
    return {
        "outcomes": _shares(frame["outcome"], suspect, "outcome", OUTCOMES),
        "reporter_type": _shares(frame["reporter"], suspect, "reporter type", reporters),
        "country_group": _shares(frame["country_group"], suspect, "country", COUNTRY_GROUPS),
        "sex": _shares(frame["sex"], suspect, "sex", SEXES),
        "age_group": _shares(frame["age_group"], suspect, "age group", (*AGE_GROUPS, AGE_UNKNOWN)),
        "initial_year": _shares(frame["initial_year"], suspect, "year", years),
        "product_type": _shares(product, suspect, "product", _PRODUCTS),
        "polysubstance": _shares(poly, suspect, "co-reported", _POLY),
        "top_reactions": _shares(frame["reactions"], suspect, "reaction", top=TOP_ROWS),
        "co_reported": _shares(frame["co_drugs"], suspect, "substance", top=TOP_ROWS),
    }


_PRODUCTS = ("7-OH product (7-oh term file)", "kratom leaf or unspecified")
_POLY = (
    "another drug (any role)",
    "another suspect drug (PS/SS)",
    "an opioid (any role)",
    "an opioid as suspect (PS/SS)",
)
TABLE_TITLES = {
    "outcomes": "Worst outcome",
    "reporter_type": "Reporter type",
    "country_group": "US and non-US cases",
    "sex": "Sex",
    "age_group": "Age group (years)",
    "initial_year": "Cases by year of initial FDA receipt",
    "product_type": "Kratom leaf and 7-OH products",
    "polysubstance": "Polysubstance reports",
    "top_reactions": f"Top {TOP_ROWS} reaction terms",
    "co_reported": f"Top {TOP_ROWS} co-reported substances",
}


# ---------------------------------------------------------------------------------------------
# Key findings


def key_findings(
    substance: str,
    quarter: str,
    counts: dict[str, int | None],
    changed: dict[str, Any],
    table: pd.DataFrame | None,
    caveats: list[str],
    no_cases: str | None,
) -> str:
    """One paragraph an analyst can paste into an email: this quarter's numbers, new and lost
    signals, the strongest signals and the caveats that apply."""
    parts = [
        f"{quarter}: {counts['new_cases']} new {substance} cases (initial FDA receipt in "
        f"{quarter}), {counts['new_deaths']} with a fatal outcome and {counts['new_serious']} "
        f"serious; {counts['followups']} follow-up reports of earlier cases."
    ]
    if no_cases is not None:
        parts.append(f"No signal analysis: {no_cases}.")
    elif changed["previous"] is not None:
        news = ", ".join(f"{r['term']} ({r['criterion']})" for r in changed["new"][:5])
        more = " and more" if len(changed["new"]) > 5 else ""
        parts.append(
            f"Since {changed['previous']}: {len(changed['new'])} new and "
            f"{len(changed['lost'])} lost signals (term and criterion)"
            + (f", new: {news}{more}." if news else ".")
        )
    if table is not None and no_cases is None:
        flagged = table[table[[c.flag for c in CRITERIA]].any(axis=1)].head(STRONGEST)
        if flagged.empty:
            parts.append(f"No term meets a signal criterion through {quarter}.")
        else:
            strongest = "; ".join(
                f"{r['term']} (a = {int(r['a'])}, "
                f"ROR {sig(r['ror'])}, 95% CI {sig(r['ror_lower'])}-{sig(r['ror_upper'])}"
                + ("" if pd.isna(r["eb05"]) else f", EB05 {sig(r['eb05'])}")
                + ")"
                for r in flagged.to_dict(orient="records")
            )
            parts.append(f"Strongest signals through {quarter}: {strongest}.")
    if caveats:
        parts.append("Caveats: " + "; ".join(caveats) + ".")
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------
# Figures


def png_text(path: Path) -> dict[str, str]:
    """The text chunks (tEXt, zTXt, iTXt) of a PNG file: matplotlib's Title, Description..."""
    data = path.read_bytes()
    found: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IEND":
            break
        try:
            if kind == b"tEXt":
                key, _, value = body.partition(b"\0")
                found[key.decode("latin-1")] = value.decode("latin-1")
            elif kind == b"zTXt":
                key, _, rest = body.partition(b"\0")
                found[key.decode("latin-1")] = zlib.decompress(rest[1:]).decode("latin-1")
            elif kind == b"iTXt":
                key, _, rest = body.partition(b"\0")
                compressed, rest = rest[0], rest[2:]
                _lang, _, rest = rest.partition(b"\0")
                _translated, _, text = rest.partition(b"\0")
                raw = zlib.decompress(text) if compressed else text
                found[key.decode("latin-1")] = raw.decode("utf-8")
        except (zlib.error, UnicodeDecodeError, IndexError):
            continue
    return found


def _figures(paths: Iterable[Path]) -> list[dict[str, str]]:
    """Each PNG with its caption and alt text from its metadata (Title, Description), in the
    order of the figure numbers there; a PNG without them is captioned from its file name."""
    texts = {p: png_text(p) for p in paths if p.suffix == ".png"}

    def number(png: Path) -> tuple[int, str]:
        found = re.match(r"Figure (\d+)", texts[png].get("Title", ""))
        return (int(found.group(1)) if found else 10_000, png.name)

    described = []
    for i, png in enumerate(sorted(texts, key=number), start=1):
        caption = texts[png].get("Title") or f"Figure {i}. {png.stem.replace('_', ' ')}"
        described.append(
            {
                "caption": caption,
                "alt": texts[png].get("Description") or caption,
                "src": "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode(),
                "svg": f"figures/{png.stem}.svg",
                "png": f"figures/{png.name}",
            }
        )
    return described


# ---------------------------------------------------------------------------------------------
# Escaping


_MD_SPECIAL = re.compile(r"([\\`*_\[\]|~])")
_JS_SCHEME = re.compile(r"(?i)(java|vb)(\s*)script(\s*):")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f]")


def md_escape(value: Any) -> str:
    """Text safe inside a Markdown table cell: no raw HTML, no broken row, no live link."""
    if value is None:
        return ""
    text = _CONTROL.sub("", str(value)).replace("\r", " ").replace("\n", " ")
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    text = _MD_SPECIAL.sub(r"\\\1", text)
    return _JS_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}script{m.group(3)}&#58;", text)


def _md_finalize(value: Any) -> Any:
    """Every value a Markdown template prints is escaped, except text the template marks safe."""
    if isinstance(value, Markup) or not isinstance(value, str):
        return value
    return md_escape(value)


def _environments() -> tuple[Environment, Environment]:
    """The HTML environment (autoescape always on) and the Markdown one (every value passes
    md_escape); the template names decide nothing."""
    loader = PackageLoader("surveillance", "templates")
    html = Environment(loader=loader, autoescape=True, keep_trailing_newline=True)
    md = Environment(
        loader=loader, autoescape=False, keep_trailing_newline=True, finalize=_md_finalize
    )
    for env in (html, md):
        env.filters.update(
            sig=sig, cell=_full_cell, sentence=_sentence, pct=_pct_text, age=_age_text
        )
        env.globals["zip"] = zip
    return html, md


# ---------------------------------------------------------------------------------------------
# The work folder


_WORK = re.compile(r"^\..+\.report-(\d+)-[A-Za-z0-9_]+$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def clean_stale_work(parent: Path) -> list[Path]:
    """Remove work folders (`.<name>.report-<pid>-*`) left in `parent` by killed report runs."""
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    for path in sorted(parent.iterdir()):
        match = _WORK.match(path.name)
        if match and path.is_dir() and not _alive(int(match.group(1))):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _replace(work: Path, out: Path) -> None:
    """Put the finished folder at `out`, replacing an older report there."""
    if out.exists():
        old = out.with_name(f".{out.name}.report-{os.getpid()}-old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(out)


# ---------------------------------------------------------------------------------------------
# Metadata and freshness


def _metadata(
    con: duckdb.DuckDBPyConnection,
    quarter: str,
    substance: Substance,
    now: SignalRun | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    quarters = con.execute(
        "SELECT quarter, era, zip_name, zip_sha256, synthetic FROM quarters ORDER BY quarter"
    ).fetchdf()
    return {
        "quarter": quarter,
        "substance": substance.name,
        "term_file": substance.source_path.rsplit("/", 1)[-1],
        "term_file_version": substance.version,
        "tool_version": __version__,
        "data_fingerprint": data_fingerprint(con),
        "dedup_mode": current_dedup(con),
        "synthetic": bool(quarters["synthetic"].any()),
        "quarters_loaded": quarters.drop(columns=["synthetic"]).to_dict(orient="records"),
        "new_case_definition": NEW_CASE,
        "criteria": [asdict(c) for c in CRITERIA],
        "thresholds": {
            "evans_min_cases": stats.EVANS_MIN_CASES,
            "evans_min_prr": stats.EVANS_MIN_PRR,
            "evans_min_chi2": stats.EVANS_MIN_CHI2,
            "ror_min_cases": stats.ROR_MIN_CASES,
            "ic_signal": next(c.rule for c in CRITERIA if c.flag == "signal_ic"),
            "eb05_threshold": stats.EB05_THRESHOLD,
            "min_cases_shown": now.min_cases if now else None,
        },
        "prior": asdict(now.prior) if now else None,
        "ebgm_available": bool(now.ebgm_available) if now else None,
        **extra,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report_is_current(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    substance: str = "kratom",
    substance_file: Path | None = None,
) -> bool:
    """Whether `out` holds a report of the data now loaded, with the current term file."""
    meta = out / "metadata.json"
    if not meta.is_file():
        return False
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    s = resolve(substance, substance_file)
    return bool(
        saved.get("data_fingerprint") == data_fingerprint(con)
        and saved.get("substance") == s.name
        and saved.get("term_file_version") == s.version
        and saved.get("tool_version") == __version__
    )


# ---------------------------------------------------------------------------------------------
# The report


def _quarter_option(con: duckdb.DuckDBPyConnection, quarter: str | None) -> tuple[str, list[str]]:
    """The quarter to report (default: the latest loaded) and the loaded quarters."""
    if not has_table(con, "cases") or not has_table(con, "quarters"):
        raise NoDataError("the clean layer is empty; run 'surveillance load' first")
    resolved, _ = resolve_through(con, quarter_option(quarter, "--quarter"))
    loaded = [str(r[0]) for r in con.execute("SELECT quarter FROM quarters ORDER BY 1").fetchall()]
    return resolved, loaded


def write_report(
    con: duckdb.DuckDBPyConnection,
    quarter: str | None = None,
    substance: str = "kratom",
    substance_file: Path | None = None,
    out: Path | None = None,
    roles: str | None = None,
    min_cases: int = 3,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write the report for a quarter (default: the latest loaded) into `out` (default
    reports/<quarter>); return the folder. `progress` is told each step as it starts."""
    step = progress or (lambda _message: None)
    quarter, loaded = _quarter_option(con, quarter)
    out = Path(out) if out is not None else Path("reports") / quarter
    s = resolve(substance, substance_file)
    previous, gap_notice = _comparison(loaded, quarter)
    before_previous, _ = _comparison(loaded, previous) if previous else (None, None)

    step(f"signals through {quarter}")
    options = {"roles": roles, "min_cases": min_cases}
    now, no_cases = _run(con, s, quarter, **options)
    prior = now.prior if now else None
    suspect, _ = _run(con, s, quarter, roles=SUSPECT_ROLES, min_cases=min_cases, prior=prior)
    counted_roles = now.roles if now else parse_roles(roles)
    step("signals of the earlier quarters")
    # One set of as-of counts (stored per data vintage) for the comparisons, the trends and,
    # with the event groups, the sequential alerts.
    with_groups = stored_asof_counts(con, s, counted_roles)
    cumulative = with_groups.pts()
    ebgm = bool(now.ebgm_available) if now else False
    table = usable_table(now) if now else None
    earlier = _earlier_tables(con, cumulative, now, (previous, before_previous))
    before_table, before2_table = earlier[previous], earlier[before_previous]
    measure = "ebgm" if ebgm else "ror"
    changed = what_changed(table, before_table, previous, measure) if table is not None else None
    older = (
        what_changed(before_table, before2_table, before_previous, measure)
        if (before_table is not None and before2_table is not None)
        else None
    )

    step("sensitivity analyses")
    sens, sens_note = _sensitivity(con, s, now, roles, min_cases) if now else (None, None)
    step("stratified results")
    mh, mh_note = _stratified(con, s, now, sens)

    step("sequential alerts")
    alerts, alerts_note = _alerts(con, s, counted_roles, quarter, loaded[-1], with_groups)

    step("cases")
    frame = case_frame(con, s, counted_roles)
    through = frame[frame["initial_quarter"] <= quarter]
    counts = quarter_counts(frame, quarter, len(changed["new"]) if changed else None)
    counts_before = quarter_counts(frame, previous, len(older["new"]) if older else None)
    listing = line_listing(frame, quarter)
    descriptive = describe(through.reset_index(drop=True), opioids())

    step("polysubstance, time to onset, dechallenge and CAERS")
    extra = _case_summaries(con, s, counted_roles)

    step("trends")
    series = _trends(con, s, roles, prior, cumulative)
    meta = _metadata(
        con,
        quarter,
        s,
        now,
        {
            "options": options,
            "previous_quarter": previous,
            "comparison_notice": gap_notice,
            "no_cases": no_cases,
        },
    )
    caveats = _caveats(
        now, ebgm, meta["synthetic"], gap_notice if previous else None, quarter, loaded
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    clean_stale_work(out.parent)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.report-{os.getpid()}-", dir=out.parent))
    try:
        step("tables")
        tables = work / "tables"
        tables.mkdir()
        frames: dict[str, pd.DataFrame] = {
            "this_quarter": this_quarter_table(quarter, counts, previous, counts_before),
            "new_cases": listing,
            "cases": listing_columns(through),
            **{f"cases_{k}": v for k, v in descriptive.items()},
        }
        if table is not None:
            frames["signals"] = table
        if suspect is not None:
            frames["signals_suspect"] = usable_table(suspect)
        if sens is not None:
            frames["signals_groups"] = _group_rows(sens.main)
            frames["sensitivity"] = sens.table
        if mh is not None:
            frames["stratified"] = mh
        if alerts is not None:
            frames["sequential_alerts"] = alerts
        frames.update({name: table for name, table in extra.tables.items()})
        if series is not None:
            frames.update(
                {
                    "trends_by_quarter": series.by_quarter,
                    "cumulative_signals": series.cumulative,
                    "first_signal": series.first_signal,
                    "co_reported": series.co_reported,
                    "demographics": series.demographics,
                }
            )
        for name, data in frames.items():
            (tables / f"{name}.csv").write_text(render(data, "csv"), encoding="utf-8")
        step("figures")
        figures: list[Path] = []
        if series is not None:
            from .plots import plot_all

            figures = plot_all(series, work / "figures")
        if extra.onset is not None:
            from .plots import plot_onset

            figures += plot_onset(extra.onset, work / "figures")
        (work / "metadata.json").write_text(
            json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
        )
        step("pages")
        context = {
            "quarter": quarter,
            "substance": s,
            "run": now,
            "no_cases": no_cases,
            "ebgm_available": ebgm,
            "previous": previous,
            "gap_notice": gap_notice,
            "changed": changed,
            "counts": counts,
            "this_quarter_rows": {
                "header": list(frames["this_quarter"].columns[1:]),
                "rows": [
                    tuple("n/a" if pd.isna(v) else v for v in r)
                    for r in frames["this_quarter"].itertuples(index=False)
                ],
            },
            "findings": key_findings(
                s.name, quarter, counts, changed or {"previous": None}, table, caveats, no_cases
            ),
            "caveats": caveats,
            "signals": _compact(table, ebgm) if table is not None else [],
            "full_columns": list(OUTPUT_COLUMNS),
            "full": table.to_dict(orient="records") if table is not None else [],
            "n_zero_corrected": int(table["zero_corrected"].sum()) if table is not None else 0,
            "n_signals": {
                c.name: int(table[c.flag].sum()) if table is not None else 0 for c in CRITERIA
            },
            "n_suspect_signals": {
                c.name: int(usable_table(suspect)[c.flag].sum()) for c in CRITERIA
            }
            if suspect is not None
            else None,
            "suspect": suspect,
            "groups": _compact(_group_rows(sens.main), ebgm) if sens else [],
            "group_files": sens.main.design.groups if sens else (),
            "background": background_statement(now.design) if now else None,
            "sensitivity": _sensitivity_context(sens, sens_note),
            "stratified": {
                **_stratified_rows(mh),
                "note": mh_note,
                "legend": mh_legend(),
                "unknown_rule": UNKNOWN_RULE,
            },
            "alerts": {**_table_context(alerts), "note": alerts_note},
            "summaries": {name: _table_context(t) for name, t in extra.shown().items()},
            "summary_notes": extra.notes,
            "caers_loaded": extra.caers_loaded,
            "criteria": CRITERIA,
            "legend": criteria_legend(),
            "zero_mark": ZERO_MARK,
            "listing": listing.to_dict(orient="records"),
            "n_through": len(through),
            "n_through_suspect": int(through["suspect"].sum()),
            "descriptive": descriptive,
            "titles": TABLE_TITLES,
            "series": series,
            "figures": _figures(figures),
            "meta": meta,
            "read_with_care": CAVEATS,
            "new_case": NEW_CASE,
            "latest": loaded[-1],
        }
        html, md = _environments()
        (work / "index.html").write_text(
            html.get_template("report.html.j2").render(**context), encoding="utf-8"
        )
        (work / "report.md").write_text(
            md.get_template("report.md.j2").render(**context), encoding="utf-8"
        )
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _table_context(table: pd.DataFrame | None) -> dict[str, Any]:
    """A table's columns and rows as the templates print a plain table (none: empty)."""
    if table is None:
        return {"columns": [], "rows": []}
    return {
        "columns": list(table.columns),
        "rows": [list(r) for r in table.itertuples(index=False)],
    }


_ALERT_SHOWN = (
    "term term_kind method alert_quarter new_this_quarter cum_observed cum_expected statistic "
    "threshold"
).split()


def _alerts(
    con: duckdb.DuckDBPyConnection,
    s: Substance,
    roles: str | None,
    quarter: str,
    latest: str,
    counts: AsOfCounts,
) -> tuple[pd.DataFrame | None, str | None]:
    """The sequential alerts over the loaded quarters (new this quarter first), or None and why
    not: they look at every loaded quarter, so a report on an earlier quarter does not show
    them. `counts`: the report's as-of counts, with the event groups."""
    if quarter != latest:
        return None, (
            f"not shown: the sequential tests look at every loaded quarter, through {latest}"
        )
    try:
        found = sequential(con, s, roles, counts=counts)
    except NoDataError as e:
        return None, str(e)
    table = found.alerts[_ALERT_SHOWN].copy()
    for column in ("cum_expected", "statistic", "threshold"):
        table[column] = table[column].astype(float).round(3)
    return table, None


@dataclass(frozen=True)
class _Summaries:
    """The report's per-case summaries: tables by name, notes on those it could not make, the
    onset result (for its figure) and whether a CAERS export is loaded."""

    tables: dict[str, pd.DataFrame]
    notes: dict[str, str]
    onset: Onset | None
    caers_loaded: bool

    def shown(self) -> dict[str, pd.DataFrame]:
        """The tables as the pages show them: onset and dechallenge in their compact columns
        (every column is in the CSV)."""
        compact = {"onset": onset_compact, "dechallenge": dechallenge_compact}
        return {name: compact.get(name, lambda t: t)(t) for name, t in self.tables.items()}


def _case_summaries(con: duckdb.DuckDBPyConnection, s: Substance, roles: str | None) -> _Summaries:
    """Co-suspects by class, subsets by year, time to onset, dechallenge and, when a CAERS export
    is loaded, FAERS and CAERS side by side: each as the library functions give it."""
    tables: dict[str, pd.DataFrame] = {}
    notes: dict[str, str] = {}
    result: Onset | None = None
    try:  # the cases of the onset and dechallenge tables, read once for both
        by_term: TermCases | None = cases_by_term(con, s, roles=roles, groups=True)
    except NoDataError:
        by_term = None  # each table says why it has none
    makers: dict[str, Callable[[], pd.DataFrame]] = {
        "co_suspects": lambda: co_suspect_profile(con, s, roles),
        "subset_shares": lambda: subset_shares(con, s, roles),
        "dechallenge": lambda: dechallenge(con, s, roles=roles, groups=True, by_term=by_term),
    }
    for name, make in makers.items():
        try:
            tables[name] = make()
        except NoDataError as e:
            notes[name] = str(e)
    try:
        result = time_to_onset(con, s, roles=roles, groups=True, by_term=by_term)
        tables["onset"] = result.table
    except NoDataError as e:
        notes["onset"] = str(e)
    loaded = caers_is_loaded(con)
    if loaded:
        both = caers_side_by_side(con, s, roles)
        tables["caers_by_year"] = both.by_year
        tables["caers_top_terms"] = both.top_terms
    return _Summaries(tables, notes, result, loaded)


def _sensitivity(
    con: duckdb.DuckDBPyConnection, s: Substance, now: SignalRun, roles: str | None, min_cases: int
) -> tuple[Sensitivity | None, str | None]:
    """The sensitivity analyses of the report's signals run, or None and why not."""
    try:
        return sensitivity(con, s, now.through, roles, min_cases, plain=now), None
    except NoDataError as e:
        return None, str(e)


def _group_rows(run: SignalRun) -> pd.DataFrame:
    """The event-group rows of a run with groups, as the report shows signal tables."""
    table = usable_table(run)
    return table[table["term_kind"] != "pt"].reset_index(drop=True)


def _sensitivity_context(sens: Sensitivity | None, note: str | None) -> dict[str, Any]:
    """What the templates print of the sensitivity analyses: the side-by-side table, the
    analyses not run and why, the changed classifications and the methods lines."""
    labels = {a.key: a.label for a in ANALYSES}
    if sens is None:
        return {"note": note, "columns": [], "rows": [], "skipped": [], "methods": methods()}
    return {
        "note": None,
        **_table_context(sensitivity_wide(sens)),
        "skipped": [(labels[k], why) for k, why in sens.skipped.items()],
        "n_changed": len(sens.changes()),
        "methods": methods(),
    }


def _stratified(
    con: duckdb.DuckDBPyConnection, s: Substance, now: SignalRun | None, sens: Sensitivity | None
) -> tuple[pd.DataFrame | None, str | None]:
    """Crude and MH ROR by each factor for the compared PTs, or None and why not."""
    if now is None or sens is None:
        return None, None
    latest, _ = resolve_through(con, None)
    if now.through != latest:
        return None, (
            f"not shown: Mantel-Haenszel counts the clean layer, which holds the cases through "
            f"{latest}, not as of {now.through}"
        )
    if sens.stratified is not None:  # counted with the sensitivity analyses' MH
        return sens.stratified, None
    pts = [t for t, k in sens.terms if k == "pt"]
    return mh_table(con, s, now.roles, FACTORS, pts), None


def _stratified_rows(mh: pd.DataFrame | None) -> dict[str, Any]:
    """The stratified table's columns and rows as the report prints them (full term names)."""
    return _table_context(None if mh is None else compact_mh(mh).assign(term=mh["term"]))


def _trends(
    con: duckdb.DuckDBPyConnection,
    s: Substance,
    roles: str | None,
    prior: stats.Prior | None,
    counts: AsOfCounts,
) -> Any:
    """The trend series under the report's prior (when there is one) and from its cumulative
    counts, or None when no loaded quarter has a case of the substance."""
    from .trends import trends

    try:
        return trends(con, s, roles=roles, prior=prior, counts=counts)
    except NoDataError:
        return None


def _caveats(
    now: SignalRun | None,
    ebgm: bool,
    synthetic: bool,
    gap: str | None,
    quarter: str,
    loaded: list[str],
) -> list[str]:
    """The data caveats that apply to this report."""
    found = []
    if now is not None and not ebgm:
        found.append(
            "EBGM unavailable: its prior did not converge or sits on a bound, so EBGM, EB05 "
            "and EB95 are not shown and do not count as a criterion"
        )
    if synthetic:
        found.append("SYNTHETIC DATA: generated FAERS-format files, not FDA data")
    if gap:
        found.append(gap)
    if quarter != loaded[-1]:
        found.append(f"cases are described as they stand in the latest loaded data ({loaded[-1]})")
    if now is not None and bool(now.table["zero_corrected"].any()):
        found.append("some statistics use a zero-cell correction (marked " + ZERO_MARK + ")")
    return found

"""Case listings for a substance and the full record of one case, as data and as a summary a
person reads.

Reads the clean layer, `reports`, the raw rows of every version and `substance_hits` (through
the named query `substance_cases` for listings); writes nothing except, for a user's term file
not yet extracted, its `substance_hits`.
"""

from __future__ import annotations

import textwrap
from typing import Any

import duckdb
import pandas as pd

from .clean import OUTCOME_FLAGS
from .definitions import CHALLENGE_CODES, ROLES, roles_option
from .errors import NoDataError
from .extract import ensure_extracted, has_table
from .faers_format import quarter_option
from .output import terminal_safe
from .query import run_query
from .substances import Substance


def cases(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
) -> pd.DataFrame:
    """One row per surviving case that involves the substance (any role unless `roles`)."""
    if not has_table(con, "cases"):
        raise NoDataError("the clean layer is empty; run 'surveillance load' first")
    roles = roles_option(roles)
    ensure_extracted(con, substance)
    return run_query(
        con,
        "substance_cases",
        substance=substance.name,
        since=quarter_option(since, "--since"),
        until=quarter_option(until, "--until"),
        roles=roles,
        term=term,
    )


_VERSIONS = """SELECT r.source, r.primaryid, try_cast(r.caseversion AS INTEGER) AS caseversion,
        r.quarter, q.quarters, r.i_f_code, r.fda_dt, r.init_fda_dt, r.rept_cod, r.occp_cod,
        r.age, r.age_cod, r.sex, r.wt, r.wt_cod, r.event_dt, r.reporter_country,
        r.occr_country, r.caseid IN (SELECT caseid FROM raw_deleted) AS deleted_later
    FROM reports r
    JOIN (SELECT source, primaryid, list(DISTINCT quarter ORDER BY quarter) AS quarters
          FROM raw_demo WHERE caseid = $caseid GROUP BY ALL) q USING (source, primaryid)
    WHERE r.caseid = $caseid
    ORDER BY (r.source = 'FAERS'), try_cast(r.caseversion AS BIGINT) NULLS FIRST,
        r.fda_dt NULLS FIRST, r.quarter, try_cast(r.primaryid AS BIGINT)"""
# What each version reported: its drugs, reaction terms and outcome codes, for the changes.
_VERSION_ITEMS = """SELECT r.primaryid, r.source, 'drugs' AS kind,
        upper(trim(coalesce(g.drugname, g.prod_ai))) AS item
    FROM reports r JOIN raw_drug g
      ON g.source = r.source AND g.primaryid = r.primaryid AND g.quarter = r.quarter
    WHERE r.caseid = $caseid AND coalesce(g.drugname, g.prod_ai) IS NOT NULL
    UNION
    SELECT r.primaryid, r.source, 'reactions', coalesce(t.pt, trim(x.pt))
    FROM reports r JOIN raw_reac x
      ON x.source = r.source AND x.primaryid = r.primaryid AND x.quarter = r.quarter
    LEFT JOIN pt_terms t ON t.pt_key = upper(trim(x.pt))
    WHERE r.caseid = $caseid AND x.pt IS NOT NULL
    UNION
    SELECT r.primaryid, r.source, 'outcomes', upper(trim(o.outc_cod))
    FROM reports r JOIN raw_outc o
      ON o.source = r.source AND o.primaryid = r.primaryid AND o.quarter = r.quarter
    WHERE r.caseid = $caseid AND o.outc_cod IS NOT NULL"""
_MATCHES = """SELECT substance, drug_seq, field, matched_string, rule, term FROM substance_hits
    WHERE caseid = $caseid ORDER BY substance, try_cast(drug_seq AS BIGINT)"""
# One query per child table of the surviving version; the table names are constants.
_CHILDREN = {
    "drugs": "SELECT * EXCLUDE (caseid, primaryid, source) FROM case_drugs "
    "WHERE caseid = $caseid ORDER BY try_cast(drug_seq AS BIGINT)",
    "reactions": "SELECT * EXCLUDE (caseid, primaryid, source) FROM case_reactions "
    "WHERE caseid = $caseid ORDER BY pt",
    "outcomes": "SELECT * EXCLUDE (caseid, primaryid, source) FROM case_outcomes "
    "WHERE caseid = $caseid ORDER BY outc_cod",
    "indications": "SELECT * EXCLUDE (caseid, primaryid, source) FROM case_indications "
    "WHERE caseid = $caseid ORDER BY try_cast(drug_seq AS BIGINT), indi_pt",
    "therapies": "SELECT * EXCLUDE (caseid, primaryid, source) FROM case_therapies "
    "WHERE caseid = $caseid ORDER BY try_cast(drug_seq AS BIGINT), start_dt",
}
# Demographic fields whose change between versions the summary names.
_COMPARED = {
    "age": ("age", "age_cod"),
    "sex": ("sex",),
    "weight": ("wt", "wt_cod"),
    "event date": ("event_dt",),
    "reporter type": ("occp_cod",),
    "report type": ("rept_cod",),
    "country": ("reporter_country",),
}


def case(con: duckdb.DuckDBPyConnection, caseid: str) -> dict[str, Any]:
    """Everything known about one case: its surviving report, drugs (with the substances they
    matched), reactions, outcomes, indications, therapy dates, and every version seen in any
    quarter with what changed from the version before."""
    params = {"caseid": str(caseid).strip()}
    if not (has_table(con, "cases") and has_table(con, "reports")):
        raise NoDataError(f"no case {params['caseid']} in the database (nothing loaded yet)")
    summary = con.execute("SELECT * FROM cases WHERE caseid = $caseid", params).fetchdf()
    versions = con.execute(_VERSIONS, params).fetchdf()
    if summary.empty and versions.empty:
        raise NoDataError(f"no case {params['caseid']} in the database")
    items = con.execute(_VERSION_ITEMS, params).fetchdf()
    versions["changes"] = _changes(versions, items)
    detail: dict[str, Any] = {"caseid": params["caseid"], "versions": versions}
    if summary.empty:
        detail["note"] = "this case does not survive deduplication (deleted by the FDA)"
        return detail
    detail["case"] = summary
    for key, sql in _CHILDREN.items():
        detail[key] = con.execute(sql, params).fetchdf()
    detail["matches"] = (
        con.execute(_MATCHES, params).fetchdf()
        if has_table(con, "substance_hits")
        else pd.DataFrame(columns=["substance", "drug_seq", "field", "matched_string", "rule"])
    )
    return detail


def _raw_text(value: Any) -> str:
    """A value as text, missing values as empty text (never NaN/None/NaT/<NA>)."""
    if value is None or (not isinstance(value, list | tuple) and pd.isna(value)):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _text(value: Any) -> str:
    """A value as text for a terminal: `_raw_text` with control characters made visible."""
    return terminal_safe(_raw_text(value))


def iso_date(raw: Any) -> str:
    """A FAERS date (YYYYMMDD, YYYYMM or YYYY) as ISO text at its own precision."""
    text = _raw_text(raw)
    if text.isdigit() and len(text) in (4, 6, 8):
        return "-".join(p for p in (text[:4], text[4:6], text[6:8]) if p)
    return text


def _field(row: pd.Series, columns: tuple[str, ...]) -> str:
    return " ".join(t for t in (_raw_text(row[c]) for c in columns) if t)


def _changes(versions: pd.DataFrame, items: pd.DataFrame) -> list[list[str]]:
    """Per version, what differs from the version before it: demographic fields, then drugs,
    reactions and outcomes added or removed."""
    sets = {
        (source, primaryid, kind): set(group["item"])
        for (source, primaryid, kind), group in items.groupby(["source", "primaryid", "kind"])
    }
    out: list[list[str]] = []
    previous: pd.Series | None = None
    for _, row in versions.iterrows():
        changes: list[str] = []
        if previous is not None:
            for label, columns in _COMPARED.items():
                if label == "country" and row["source"] != previous["source"]:
                    continue  # LAERS wrote country names, FAERS writes codes
                before, after = _field(previous, columns), _field(row, columns)
                if label == "event date":
                    before, after = iso_date(before), iso_date(after)
                if before.upper() != after.upper():
                    changes.append(f"{label} {before or '(none)'} -> {after or '(none)'}")
            for kind in ("drugs", "reactions", "outcomes"):
                old = sets.get((previous["source"], previous["primaryid"], kind), set())
                new = sets.get((row["source"], row["primaryid"], kind), set())
                if new - old:
                    changes.append(f"{kind} added: {'; '.join(sorted(new - old))}")
                if old - new:
                    changes.append(f"{kind} removed: {'; '.join(sorted(old - new))}")
        out.append(changes)
        previous = row
    return out


def _line(*parts: tuple[str, Any]) -> str:
    """'label value' pairs joined by '; ', leaving out the missing ones."""
    return "; ".join(f"{label} {text}".strip() for label, v in parts if (text := _text(v)))


def format_case(detail: dict[str, Any]) -> str:
    """A case summary a person reads: header, patient, versions and their changes, drugs with
    the matched substance marked, reactions, outcomes. ISO dates, no missing-value markers."""
    versions: pd.DataFrame = detail["versions"]
    caseid = terminal_safe(detail["caseid"])
    lines: list[str] = []
    if "case" not in detail:
        lines.append(f"case {caseid}: {detail['note']}")
        lines += _version_lines(versions, None)
        return "\n".join(map(terminal_safe, lines)) + "\n"
    c = detail["case"].iloc[0]
    current = versions[versions["primaryid"] == c["primaryid"]]
    raw = current.iloc[-1] if not current.empty else None
    initial = _text(c["init_fda_dt"]) or next(
        (t for t in map(_text, versions["init_fda_dt"]) if t), ""
    )
    initial_label = "initial receipt"
    if not initial and not versions.empty:
        initial, initial_label = (
            _text(versions["fda_dt"].iloc[0]),
            "initial receipt (first version)",
        )
    version = (
        f"version {_text(c['caseversion'])}"
        if _text(c["caseversion"])
        else f"legacy report (ISR {_text(c['primaryid'])})"
    )
    reporter = _text(c["reporter_type_label"])
    reporter = (
        f"{reporter} ({_text(c['reporter_type'])})" if reporter else _text(c["reporter_type"])
    )
    lines.append(
        " | ".join(
            p
            for p in (
                f"case {caseid} {version}",
                f"{initial_label} {iso_date(initial) or 'unknown'}",
                f"latest FDA date {iso_date(c['fda_dt']) or 'unknown'}",
                f"report type {_text(c['report_type']) or 'unknown'}",
                f"reporter {reporter or 'unknown'}",
                f"country {_text(c['country']) or 'unknown'}",
            )
        )
    )
    lines.append(
        f"{_text(c['source'])} primaryid {_text(c['primaryid'])}, quarter {_text(c['quarter'])}; "
        f"{len(versions)} version{'s' * (len(versions) != 1)} seen"
    )
    age = f"{_text(c['age_years'])} years" if _text(c["age_years"]) else ""
    weight = _field(raw, ("wt", "wt_cod")) if raw is not None else ""
    event = iso_date(c["event_dt"])
    lines += ["", "== patient"]
    lines.append(
        "  "
        + (
            _line(("age", age), ("sex", c["sex"]), ("weight", weight), ("event date", event))
            or "(nothing reported)"
        )
    )
    flags = [label.replace("_", " ") for label in OUTCOME_FLAGS.values() if bool(c[label])]
    lines.append("  serious: " + (", ".join(flags) if flags else "no (no serious outcome)"))
    lines += _version_lines(versions, c["primaryid"])
    lines += _drug_lines(detail)
    reactions = [_text(pt) for pt in detail["reactions"]["pt"]]
    lines += ["", f"== reactions ({len(reactions)})"]
    lines += [f"  {pt}" for pt in reactions] or ["  (none)"]
    outcomes = [_text(code) for code in detail["outcomes"]["outc_cod"]]
    lines += ["", f"== outcomes ({len(outcomes)})"]
    lines += [
        f"  {code} {OUTCOME_FLAGS.get(code, 'unknown code').replace('_', ' ')}" for code in outcomes
    ] or ["  (none)"]
    return "\n".join(map(terminal_safe, lines)) + "\n"


def _version_lines(versions: pd.DataFrame, current: Any) -> list[str]:
    lines = ["", f"== versions ({len(versions)}, oldest first)"]
    for _, v in versions.iterrows():
        label = f"v{_text(v['caseversion'])}" if _text(v["caseversion"]) else v["source"]
        kind = {"I": "initial", "F": "follow-up"}.get(_text(v["i_f_code"]).upper(), "")
        quarters = ", ".join(_text(q) for q in v["quarters"])
        marks = [m for m in (kind, "current" if v["primaryid"] == current else "") if m]
        if v["deleted_later"]:
            marks.append("deleted by the FDA")
        lines.append(
            f"  {label:<6} primaryid {_text(v['primaryid'])}  FDA date "
            f"{iso_date(v['fda_dt']) or 'unknown'}  quarter {quarters}"
            + (f"  ({', '.join(marks)})" if marks else "")
        )
        lines += [f"         {terminal_safe(change)}" for change in v["changes"]]
    return lines


def _drug_lines(detail: dict[str, Any]) -> list[str]:
    drugs: pd.DataFrame = detail["drugs"]
    matches: pd.DataFrame = detail["matches"]
    by_seq: dict[str, list[str]] = {}
    for _, m in matches.iterrows():
        by_seq.setdefault(_text(m["drug_seq"]), []).append(
            f"matched {_text(m['substance'])}: '{_text(m['matched_string'])}' "
            f"({_text(m['rule'])} rule, in {_text(m['field'])})"
        )
    indications: dict[str, list[str]] = {}
    for _, i in detail["indications"].iterrows():
        indications.setdefault(_text(i["drug_seq"]), []).append(_text(i["indi_pt"]))
    therapies: dict[str, list[str]] = {}
    for _, t in detail["therapies"].iterrows():
        span = " to ".join(d for d in (iso_date(t["start_dt"]), iso_date(t["end_dt"])) if d)
        duration = _field(t, ("dur", "dur_cod"))
        text = span + (f" ({duration})" if duration else "")
        if text:
            therapies.setdefault(_text(t["drug_seq"]), []).append(text)
    lines = ["", f"== drugs ({len(drugs)}; * = matched substance)"]
    for _, d in drugs.iterrows():
        seq = _text(d["drug_seq"])
        role = _text(d["role_cod"])
        name = _text(d["drugname"]) or _text(d["prod_ai"]) or "(no name)"
        ai = _text(d["prod_ai"])
        if ai and ai.upper() != name.upper():
            name += f" [{ai}]"
        mark = "*" if seq in by_seq else " "
        lines.append(f"{mark} {seq:>3} {role:<2} {name}  ({ROLES.get(role, 'role ' + role)})")
        dose = " ".join(t for t in (_text(d["dose_amt"]), _text(d["dose_unit"])) if t)
        details = _line(
            ("route", d["route"]),
            ("dose", dose or d["dose_vbm"]),
            ("form", d["dose_form"]),
            ("frequency", d["dose_freq"]),
            ("dechallenge", _challenge(d["dechal"])),
            ("rechallenge", _challenge(d["rechal"])),
        )
        for extra in (
            details,
            *by_seq.get(seq, []),
            _line(("indication", "; ".join(indications.get(seq, [])))),
            _line(("therapy", "; ".join(therapies.get(seq, [])))),
        ):
            lines += textwrap.wrap(extra, 78, initial_indent=" " * 8, subsequent_indent=" " * 10)
    if drugs.empty:
        lines.append("  (none)")
    return lines


def _challenge(code: Any) -> str:
    text = _text(code).upper()
    return f"{text} ({CHALLENGE_CODES[text]})" if text in CHALLENGE_CODES else text

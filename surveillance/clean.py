"""The clean layer: one row per surviving case, typed, with its child rows.

Reads the raw layer (`raw_*`, `raw_deleted`) and rebuilds, in one transaction, `reports` (every
distinct report version), `cases`, `case_drugs`, `case_reactions`, `case_outcomes`,
`case_indications`, `case_therapies`, `pt_terms` and `dedup_log`. The statements in `REBUILD`
are safe to run twice: each replaces its table whole.

Deduplication follows the FDA's recommendation (faers-format.md §6-§7): pool all quarters; a
primaryid published in several quarters counts once (its latest quarter); keep one report per
caseid (any FAERS version beats any LAERS one; FAERS by highest caseversion, then fda_dt, then
quarter; LAERS by latest FDA_DT, then highest ISR); remove every caseid named in any quarter's
deleted list. The optional strict pass (`dedup="strict"`) only flags, AEOLUS-style
(derive_unique_all_case.sql): cases whose event date, age, sex, country, drug set and reaction
set are all present and all equal are flagged as duplicates of the latest one.
"""

from __future__ import annotations

from datetime import UTC, datetime

import duckdb
import pandas as pd
import pycountry

from .db import ensure_derived_table
from .definitions import AGE_BOUNDS, AGE_GROUPS, AGE_UNKNOWN, OUTCOME_CODES, WORST_OUTCOME_RULE
from .ingest import quarters_fingerprint

DEDUP_MODES = ("fda", "strict")

# A date text of 4, 6 or 8 digits keeps its precision; the typed DATE is set only for full days.
_DATE_PARTS = """
CREATE OR REPLACE MACRO date_precision(t) AS CASE
    WHEN regexp_full_match(t, '[0-9]{8}') AND try_strptime(t, '%Y%m%d') IS NOT NULL
         AND substr(t, 1, 4)::INT BETWEEN 1900 AND 2100 THEN 'day'
    WHEN regexp_full_match(t, '[0-9]{6}') AND substr(t, 5, 2)::INT BETWEEN 1 AND 12
         AND substr(t, 1, 4)::INT BETWEEN 1900 AND 2100 THEN 'month'
    WHEN regexp_full_match(t, '[0-9]{4}') AND t::INT BETWEEN 1900 AND 2100 THEN 'year'
    END
"""
# Age units to years (faers-format §4: DEC, YR, MON, WK, DY, HR; long forms seen in RFAERS).
# Ages outside 0..120 years are implausible and nulled (DIANA treats > 122 as entry errors).
AGE_UNIT_YEARS = {
    "DEC": 10.0,
    "YR": 1.0,
    "YEAR": 1.0,
    "MON": 1 / 12,
    "WK": 7 / 365.25,
    "WEEK": 7 / 365.25,
    "DY": 1 / 365.25,
    "DAY": 1 / 365.25,
    "HR": 1 / 8766,
    "HOUR": 1 / 8766,
}
MAX_AGE_YEARS = 120.0
# The unit factors as one SQL CASE, built from the constants above (never from data).
_YEARS_PER_UNIT = "CASE upper(trim(age_cod)) {} END".format(
    " ".join(f"WHEN '{unit}' THEN {factor!r}" for unit, factor in AGE_UNIT_YEARS.items())
)

# The registry's age groups, outcome labels and worst-outcome rule as SQL, built from the
# constants of `definitions` (never from data): the one SQL form of each definition.
_AGE_GROUP = (
    "CREATE OR REPLACE MACRO age_group(age_years) AS CASE "
    f"WHEN age_years IS NULL THEN '{AGE_UNKNOWN}' "
    + " ".join(
        f"WHEN age_years < {bound} THEN '{label}'"
        for bound, label in zip(AGE_BOUNDS, AGE_GROUPS, strict=False)
    )
    + f" ELSE '{AGE_GROUPS[-1]}' END"
)
_OUTCOME_LABEL = (
    "CREATE OR REPLACE MACRO outcome_label(code) AS CASE upper(trim(code)) {} END".format(
        " ".join(f"WHEN '{o.code}' THEN '{o.label}'" for o in OUTCOME_CODES)
    )
)
_WORST_OUTCOME = (
    "CREATE OR REPLACE MACRO worst_outcome(death, life_threatening, hospitalization, serious) "
    "AS CASE {} ELSE '{}' END".format(
        " ".join(f"WHEN {flag} THEN '{label}'" for label, flag in WORST_OUTCOME_RULE if flag),
        WORST_OUTCOME_RULE[-1][0],
    )
)

_MACROS = (
    _DATE_PARTS,
    # Whether a drug row's role counts under a role filter ('PS,SS'; NULL = any role): the one
    # rule every "case involves substance S in roles R" goes through (extract.involved_cases).
    "CREATE OR REPLACE MACRO role_counts(role_cod, in_roles) AS in_roles IS NULL OR "
    "list_contains(string_split(upper(replace(in_roles, ' ', '')), ','), upper(trim(role_cod)))",
    _AGE_GROUP,
    _OUTCOME_LABEL,
    _WORST_OUTCOME,
    # Age in years from age and age_cod (AGE_UNIT_YEARS); outside 0..MAX_AGE_YEARS -> NULL.
    "CREATE OR REPLACE MACRO age_in_years(age, age_cod) AS "
    f"CASE WHEN try_cast(age AS DOUBLE) * {_YEARS_PER_UNIT} BETWEEN 0 AND {MAX_AGE_YEARS!r} "
    f"THEN round(try_cast(age AS DOUBLE) * {_YEARS_PER_UNIT}, 2) END",
    "CREATE OR REPLACE MACRO sex_code(x) AS "
    "CASE upper(trim(x)) WHEN 'M' THEN 'M' WHEN 'F' THEN 'F' ELSE 'unknown' END",
    # Every distinct report version known through a quarter (NULL = all): a primaryid
    # republished in later quarters counts once, in its latest quarter.
    """CREATE OR REPLACE MACRO report_versions(through) AS TABLE
    SELECT * EXCLUDE (rn) FROM (
        SELECT d.*, row_number() OVER (
            PARTITION BY source, primaryid ORDER BY quarter DESC, source_line DESC) AS rn
        FROM raw_demo d
        WHERE caseid IS NOT NULL AND (through IS NULL OR quarter <= through))
    WHERE rn = 1""",
    # The FDA rule: one report per caseid; FAERS beats LAERS; FAERS by caseversion, fda_dt,
    # quarter; LAERS by FDA_DT then ISR. version_rank 1 is the case's current report.
    """CREATE OR REPLACE MACRO ranked_reports(through) AS TABLE
    SELECT *, row_number() OVER (
        PARTITION BY caseid ORDER BY
            (source = 'FAERS') DESC,
            try_cast(caseversion AS BIGINT) DESC NULLS LAST,
            fda_dt DESC NULLS LAST,
            quarter DESC,
            try_cast(primaryid AS BIGINT) DESC) AS version_rank,
        count(*) OVER (PARTITION BY caseid) AS n_versions
    FROM report_versions(through)""",
    # Cases as the data stood at the end of a quarter: deleted lists published by then apply.
    """CREATE OR REPLACE MACRO surviving_reports(through) AS TABLE
    SELECT * FROM ranked_reports(through)
    WHERE version_rank = 1 AND caseid NOT IN (
        SELECT caseid FROM raw_deleted WHERE through IS NULL OR quarter <= through)""",
    "CREATE OR REPLACE MACRO date_day(t) AS CASE WHEN date_precision(t) = 'day' "
    "THEN CAST(strptime(t, '%Y%m%d') AS DATE) END",
    # A date text as ISO 8601 at its own precision: 2012-05-15, 2012-05 or 2012.
    """CREATE OR REPLACE MACRO date_iso(t) AS CASE date_precision(t)
        WHEN 'day' THEN strftime(strptime(t, '%Y%m%d'), '%Y-%m-%d')
        WHEN 'month' THEN substr(t, 1, 4) || '-' || substr(t, 5, 2)
        WHEN 'year' THEN t END""",
    # The quarter ('2012Q2') of a date text known at least to the month.
    """CREATE OR REPLACE MACRO date_quarter(t) AS CASE WHEN date_precision(t) IN ('day', 'month')
        THEN substr(t, 1, 4) || 'Q' || ((substr(t, 5, 2)::INT + 2) // 3)::VARCHAR END""",
    # definitions.NEW_CASE as of a quarter (NULL = all): the initial receipt of each case is the
    # earliest init_fda_dt of its versions (a partial date from its first day; on a tie the more
    # precise); its quarter, unless that is unknown (year only, no date) or later than the
    # quarter of the case's first version seen, which then stands in.
    """CREATE OR REPLACE MACRO initial_receipts(through) AS TABLE
    WITH versions AS (
        SELECT caseid, quarter, init_fda_dt, date_precision(init_fda_dt) AS precision
        FROM raw_demo
        WHERE caseid IS NOT NULL AND (through IS NULL OR quarter <= through)),
    earliest AS (
        SELECT caseid, min(quarter) AS first_version_quarter,
            arg_min(init_fda_dt, rpad(init_fda_dt, 8, '0') || CASE precision
                WHEN 'day' THEN '0' WHEN 'month' THEN '1' ELSE '2' END)
                FILTER (WHERE precision IS NOT NULL) AS init_fda_dt
        FROM versions GROUP BY caseid)
    SELECT caseid, first_version_quarter,
        date_iso(init_fda_dt) AS initial_receipt_date,
        date_precision(init_fda_dt) AS initial_receipt_precision,
        CASE WHEN date_quarter(init_fda_dt) < first_version_quarter
            THEN date_quarter(init_fda_dt) ELSE first_version_quarter END AS initial_quarter
    FROM earliest""",
    "CREATE OR REPLACE MACRO date_year(t) AS CASE WHEN date_precision(t) IS NOT NULL "
    "THEN substr(t, 1, 4)::INT END",
    "CREATE OR REPLACE MACRO date_month(t) AS CASE WHEN date_precision(t) IN ('day', 'month') "
    "THEN substr(t, 5, 2)::INT END",
)

REPORTER_TYPES = {
    "MD": "Physician",
    "PH": "Pharmacist",
    "OT": "Other health professional",
    "HP": "Health professional",
    "RN": "Registered nurse",
    "LW": "Lawyer",
    "CN": "Consumer",
}
OUTCOME_FLAGS = {o.code: o.flag for o in OUTCOME_CODES}
# LAERS full country names that pycountry does not resolve by itself.
_COUNTRY_OVERRIDES = {
    "TURKEY": "TR",
    "MACEDONIA": "MK",
    "SWAZILAND": "SZ",
    "BURMA": "MM",
    "CAPE VERDE": "CV",
    "CZECHOSLOVAKIA": "CZ",
    "YUGOSLAVIA": "RS",
    "SERBIA AND MONTENEGRO": "RS",
    "NETHERLANDS ANTILLES": "CW",
    "KOSOVO": "XK",
    "EUROPEAN UNION": "EU",
    "IVORY COAST": "CI",
    "LAOS": "LA",
    "SOUTH KOREA": "KR",
    "NORTH KOREA": "KP",
    "RUSSIA": "RU",
    "VIETNAM": "VN",
    "SYRIA": "SY",
    "IRAN": "IR",
    "TANZANIA": "TZ",
    "MOLDOVA": "MD",
    "BOLIVIA": "BO",
    "VENEZUELA": "VE",
}


def country_code(name: str | None) -> str | None:
    """ISO 3166 alpha-2 for a FAERS code or a LAERS full name; None when unknown/unspecified."""
    if name is None or not name.strip():
        return None
    text = name.strip().upper()
    if len(text) == 2 and text.isalpha():
        return text
    if text in _COUNTRY_OVERRIDES:
        return _COUNTRY_OVERRIDES[text]
    try:
        return str(pycountry.countries.lookup(text).alpha_2)
    except LookupError:
        return None


def _lookups(con: duckdb.DuckDBPyConnection) -> None:
    """Small lookup tables used by the rebuild: countries, age units, reporter types."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT reporter_country FROM raw_demo WHERE reporter_country IS NOT NULL "
            "UNION SELECT DISTINCT occr_country FROM raw_demo WHERE occr_country IS NOT NULL"
        ).fetchall()
    ]
    countries = pd.DataFrame({"raw": names, "iso": [country_code(n) for n in names]})
    reporters = pd.DataFrame({"code": list(REPORTER_TYPES), "label": list(REPORTER_TYPES.values())})
    for name, frame in (("_country", countries), ("_reporter", reporters)):
        con.register(f"{name}_frame", frame)
        con.execute(f"CREATE OR REPLACE TEMP TABLE {name} AS SELECT * FROM {name}_frame")  # noqa: S608
        con.unregister(f"{name}_frame")


_OUTCOME_COLUMNS = ",\n        ".join(
    f"bool_or(outc_cod = '{code}') AS {flag}" for code, flag in OUTCOME_FLAGS.items()
)

# The ordered rebuild; each statement replaces its table whole.
REBUILD: tuple[str, ...] = (
    "CREATE OR REPLACE TABLE reports AS SELECT * FROM report_versions(NULL)",
    "CREATE OR REPLACE TEMP TABLE _ranked AS SELECT * FROM ranked_reports(NULL)",
    "CREATE OR REPLACE TEMP TABLE _surviving AS SELECT * FROM surviving_reports(NULL)",
    """CREATE OR REPLACE TABLE case_outcomes AS
    SELECT DISTINCT s.caseid, s.primaryid, s.source, upper(trim(o.outc_cod)) AS outc_cod
    FROM _surviving s JOIN raw_outc o
      ON o.source = s.source AND o.primaryid = s.primaryid AND o.quarter = s.quarter
    WHERE o.outc_cod IS NOT NULL""",
    # Column names and code literals come from OUTCOME_FLAGS, a constant.
    f"""CREATE OR REPLACE TEMP TABLE _outcome_flags AS
    SELECT caseid,
        {_OUTCOME_COLUMNS}
    FROM case_outcomes GROUP BY caseid""",  # noqa: S608
    """CREATE OR REPLACE TABLE cases AS
    SELECT s.caseid, s.primaryid, s.source, try_cast(d.caseversion AS INTEGER) AS caseversion,
        s.quarter, s.n_versions, d.i_f_code,
        d.fda_dt, date_day(d.fda_dt) AS fda_date, date_precision(d.fda_dt) AS fda_dt_precision,
        d.init_fda_dt, date_day(d.init_fda_dt) AS init_fda_date,
        i.initial_receipt_date, i.initial_receipt_precision, i.initial_quarter,
        i.first_version_quarter,
        d.event_dt, date_day(d.event_dt) AS event_date, date_year(d.event_dt) AS event_year,
        date_month(d.event_dt) AS event_month, date_precision(d.event_dt) AS event_dt_precision,
        age_in_years(d.age, d.age_cod) AS age_years,
        d.age AS age_raw, d.age_cod AS age_cod_raw, d.age_grp,
        sex_code(d.sex) AS sex,
        coalesce(rc.iso, oc.iso) AS country,
        rc.iso AS reporter_country, oc.iso AS occr_country,
        d.reporter_country AS reporter_country_raw,
        upper(trim(d.occp_cod)) AS reporter_type, rt.label AS reporter_type_label,
        CASE WHEN upper(trim(d.rept_cod)) IN ('5DAY', '30DAY') THEN 'EXP'
             ELSE upper(trim(d.rept_cod)) END AS report_type,
        d.mfr_sndr, d.mfr_num,
        coalesce(f.death, false) AS death,
        coalesce(f.life_threatening, false) AS life_threatening,
        coalesce(f.hospitalization, false) AS hospitalization,
        coalesce(f.disability, false) AS disability,
        coalesce(f.congenital_anomaly, false) AS congenital_anomaly,
        coalesce(f.required_intervention, false) AS required_intervention,
        coalesce(f.other_serious, false) AS other_serious,
        f.caseid IS NOT NULL AS serious,
        CAST(NULL AS VARCHAR) AS strict_duplicate_of
    FROM _surviving s
    JOIN reports d ON d.source = s.source AND d.primaryid = s.primaryid
    LEFT JOIN _country rc ON rc.raw = d.reporter_country
    LEFT JOIN _country oc ON oc.raw = d.occr_country
    LEFT JOIN _reporter rt ON rt.code = upper(trim(d.occp_cod))
    LEFT JOIN _outcome_flags f ON f.caseid = s.caseid
    LEFT JOIN initial_receipts(NULL) i ON i.caseid = s.caseid
    ORDER BY s.caseid""",
    """CREATE OR REPLACE TABLE case_drugs AS
    SELECT s.caseid, s.primaryid, s.source, g.drug_seq, upper(trim(g.role_cod)) AS role_cod,
        g.drugname, g.prod_ai, g.route, g.dose_vbm, g.dose_amt, g.dose_unit, g.dose_form,
        g.dose_freq, g.cum_dose_chr, g.cum_dose_unit, g.dechal, g.rechal, g.lot_num, g.exp_dt,
        g.nda_num, g.val_vbm
    FROM _surviving s JOIN raw_drug g
      ON g.source = s.source AND g.primaryid = s.primaryid AND g.quarter = s.quarter
    ORDER BY s.caseid, g.source_line""",
    # MedDRA terms: legacy upper case and current mixed case are one term; show the spelling
    # the FAERS era uses most, else the legacy spelling with only its first letter capital.
    """CREATE OR REPLACE TABLE pt_terms AS
    WITH spellings AS (
        SELECT upper(trim(pt)) AS pt_key, trim(pt) AS spelling, count(*) AS n_rows,
            trim(pt) <> upper(trim(pt)) AS mixed
        FROM raw_reac WHERE pt IS NOT NULL AND trim(pt) <> '' GROUP BY ALL)
    SELECT pt_key, CASE WHEN bool_or(mixed)
            THEN arg_max(spelling, (mixed, n_rows, spelling))
            ELSE upper(left(pt_key, 1)) || lower(substr(pt_key, 2)) END AS pt
    FROM spellings GROUP BY pt_key""",
    """CREATE OR REPLACE TABLE case_reactions AS
    SELECT DISTINCT s.caseid, s.primaryid, s.source, t.pt, t.pt_key, r.drug_rec_act
    FROM _surviving s JOIN raw_reac r
      ON r.source = s.source AND r.primaryid = s.primaryid AND r.quarter = s.quarter
    JOIN pt_terms t ON t.pt_key = upper(trim(r.pt))""",
    """CREATE OR REPLACE TABLE case_indications AS
    SELECT DISTINCT s.caseid, s.primaryid, s.source, i.indi_drug_seq AS drug_seq,
        trim(i.indi_pt) AS indi_pt
    FROM _surviving s JOIN raw_indi i
      ON i.source = s.source AND i.primaryid = s.primaryid AND i.quarter = s.quarter
    WHERE i.indi_pt IS NOT NULL""",
    """CREATE OR REPLACE TABLE case_therapies AS
    SELECT s.caseid, s.primaryid, s.source, t.dsg_drug_seq AS drug_seq,
        t.start_dt, date_day(t.start_dt) AS start_date,
        date_precision(t.start_dt) AS start_dt_precision,
        t.end_dt, date_day(t.end_dt) AS end_date, date_precision(t.end_dt) AS end_dt_precision,
        t.dur, t.dur_cod
    FROM _surviving s JOIN raw_ther t
      ON t.source = s.source AND t.primaryid = s.primaryid AND t.quarter = s.quarter""",
)

# AEOLUS-style rule-based flags: only cases with every key present can match.
STRICT = (
    """CREATE OR REPLACE TEMP TABLE _keys AS
    WITH drug_sets AS (
        SELECT caseid, list_sort(list_distinct(list(upper(trim(drugname))))) AS drug_set
        FROM case_drugs WHERE drugname IS NOT NULL GROUP BY caseid),
    reaction_sets AS (
        SELECT caseid, list_sort(list_distinct(list(pt_key))) AS reaction_set
        FROM case_reactions GROUP BY caseid)
    SELECT c.caseid, c.fda_dt, c.primaryid, c.event_dt, c.age_years, c.sex, c.country,
        g.drug_set, r.reaction_set
    FROM cases c LEFT JOIN drug_sets g USING (caseid) LEFT JOIN reaction_sets r USING (caseid)""",
    """CREATE OR REPLACE TEMP TABLE _strict AS
    SELECT caseid, first_value(caseid) OVER (
        PARTITION BY event_dt, age_years, sex, country, drug_set, reaction_set
        ORDER BY fda_dt DESC, try_cast(primaryid AS BIGINT) DESC) AS keeper
    FROM _keys
    WHERE event_dt IS NOT NULL AND age_years IS NOT NULL AND sex <> 'unknown'
      AND country IS NOT NULL AND drug_set IS NOT NULL AND reaction_set IS NOT NULL""",
    """UPDATE cases SET strict_duplicate_of = s.keeper
    FROM _strict s WHERE s.caseid = cases.caseid AND s.keeper <> s.caseid""",
)

_DEDUP_LOG = """
CREATE TABLE IF NOT EXISTS dedup_log (
    step_order INTEGER, step VARCHAR, n_reports BIGINT, n_cases BIGINT, dedup_mode VARCHAR,
    raw_fingerprint VARCHAR, rebuilt_at TIMESTAMP)
"""
_STEP_COUNTS = (
    ("raw DEMO rows, all quarters", "SELECT count(*), count(DISTINCT caseid) FROM raw_demo"),
    (
        "distinct report versions (republished primaryids once)",
        "SELECT count(*), count(DISTINCT caseid) FROM reports",
    ),
    (
        "latest version per caseid (FDA rule)",
        "SELECT count(*), count(*) FROM _ranked WHERE version_rank = 1",
    ),
    ("after removing deleted caseids", "SELECT count(*), count(*) FROM cases"),
)
_STRICT_COUNT = (
    "not flagged by the strict rule-based pass",
    "SELECT count(*), count(*) FROM cases WHERE strict_duplicate_of IS NULL",
)


def ensure_macros(con: duckdb.DuckDBPyConnection) -> None:
    """Create the SQL macros the clean layer and the as-of analyses share (safe to repeat)."""
    for macro in _MACROS:
        con.execute(macro)


def rebuild(con: duckdb.DuckDBPyConnection, dedup: str = "fda") -> pd.DataFrame:
    """Rebuild the clean layer from the raw layer in one transaction; return the step counts."""
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {DEDUP_MODES}, not {dedup!r}")
    con.execute("BEGIN TRANSACTION")
    try:
        _lookups(con)
        ensure_macros(con)
        for statement in REBUILD:
            con.execute(statement)
        steps = list(_STEP_COUNTS)
        if dedup == "strict":
            for statement in STRICT:
                con.execute(statement)
            steps.append(_STRICT_COUNT)
        ensure_derived_table(con, _DEDUP_LOG)
        con.execute("DELETE FROM dedup_log")
        now = datetime.now(UTC).replace(tzinfo=None)
        raw = quarters_fingerprint(con)
        for order, (step, sql) in enumerate(steps, start=1):
            row = con.execute(sql).fetchone()
            assert row is not None
            con.execute(
                "INSERT INTO dedup_log VALUES ($o, $step, $reports, $cases, $mode, $raw, $now)",
                {"o": order, "step": step, "reports": row[0], "cases": row[1]}
                | {"mode": dedup, "raw": raw, "now": now},
            )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return con.execute("SELECT * FROM dedup_log ORDER BY step_order").fetchdf()

"""The clean layer: one row per surviving case, typed, with its child rows.

Reads the raw layer (`raw_*`, `raw_deleted`) and rebuilds, in one transaction, `reports` (every
distinct report version), `cases`, `case_drugs`, `case_reactions`, `case_outcomes`,
`case_indications`, `case_therapies`, `pt_terms`, `dedup_log`, and `clean_quarters` and
`clean_keys` (what it was built from). The steps of `REBUILD` are safe to run twice: each
replaces its table whole, or (incremental) the rows of the cases that the quarters loaded,
replaced or removed since the last rebuild affect, derived by the same SELECT.

Deduplication follows the FDA's recommendation (faers-format.md §6-§7): pool all quarters; a
primaryid published in several quarters counts once (its latest quarter); keep one report per
caseid (any FAERS version beats any LAERS one; FAERS by highest caseversion, then fda_dt, then
quarter; LAERS by latest FDA_DT, then highest ISR); remove every caseid named in any quarter's
deleted list. The optional strict pass (`dedup="strict"`) only flags, AEOLUS-style
(derive_unique_all_case.sql): cases whose event date, age, sex, country, drug set and reaction
set are all present and all equal are flagged as duplicates of the latest one; then cases that
share a normalised literature reference, age, sex and reaction set (`literature`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd
import pycountry

from . import __version__, definitions, literature
from .db import SCHEMA_VERSION, ensure_derived_table
from .definitions import AGE_BOUNDS, AGE_GROUPS, AGE_UNKNOWN, OUTCOME_CODES, WORST_OUTCOME_RULE
from .freshness import clean_data_fingerprint, has_table, has_temp_table
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

# The FDA rule for a case's current report, as an ORDER BY over report versions (first = current):
# FAERS beats LAERS; FAERS by caseversion, fda_dt, quarter; LAERS by FDA_DT then ISR. One text,
# used by `ranked_keys` here and by the one-pass as-of counts (`asof`).
VERSION_ORDER = """(source = 'FAERS') DESC,
            try_cast(caseversion AS BIGINT) DESC NULLS LAST,
            fda_dt DESC NULLS LAST,
            quarter DESC,
            try_cast(primaryid AS BIGINT) DESC,
            primaryid DESC"""

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
    # `demo` names the DEMO rows read (a rebuild's scope; raw_demo unless given).
    # The *_keys macros rank narrow rows (a version is its quarter and source_line, unique in
    # raw_demo); report_versions and surviving_reports join the whole DEMO row back, so that no
    # window sorts the wide rows (at 32 quarters that halved the rebuild's time and let it spill
    # at 4 GiB).
    """CREATE OR REPLACE MACRO version_keys(through, demo := 'raw_demo') AS TABLE
    SELECT source, primaryid, caseid, quarter, source_line, caseversion, fda_dt
    FROM query_table(demo)
    WHERE caseid IS NOT NULL AND (through IS NULL OR quarter <= through)
    QUALIFY row_number() OVER (
        PARTITION BY source, primaryid ORDER BY quarter DESC, source_line DESC) = 1""",
    # The FDA rule: one report per caseid; FAERS beats LAERS; FAERS by caseversion, fda_dt,
    # quarter; LAERS by FDA_DT then ISR. version_rank 1 is the case's current report.
    f"""CREATE OR REPLACE MACRO ranked_keys(through, demo := 'raw_demo') AS TABLE
    SELECT source, primaryid, caseid, quarter, source_line, row_number() OVER (
        PARTITION BY caseid ORDER BY {VERSION_ORDER}) AS version_rank,
        count(*) OVER (PARTITION BY caseid) AS n_versions
    FROM version_keys(through, demo := demo)""",  # noqa: S608 (VERSION_ORDER: a constant)
    # Cases as the data stood at the end of a quarter: deleted lists published by then apply.
    """CREATE OR REPLACE MACRO surviving_keys(through, demo := 'raw_demo') AS TABLE
    SELECT * FROM ranked_keys(through, demo := demo)
    WHERE version_rank = 1 AND caseid NOT IN (
        SELECT caseid FROM raw_deleted WHERE through IS NULL OR quarter <= through)""",
    """CREATE OR REPLACE MACRO report_versions(through, demo := 'raw_demo') AS TABLE
    SELECT d.* FROM query_table(demo) d
    SEMI JOIN version_keys(through, demo := demo) k
      ON k.quarter = d.quarter AND k.source_line = d.source_line""",
    """CREATE OR REPLACE MACRO surviving_reports(through, demo := 'raw_demo') AS TABLE
    SELECT d.*, k.version_rank, k.n_versions FROM query_table(demo) d
    JOIN surviving_keys(through, demo := demo) k
      ON k.quarter = d.quarter AND k.source_line = d.source_line""",
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
    """CREATE OR REPLACE MACRO initial_receipts(through, demo := 'raw_demo') AS TABLE
    WITH versions AS (
        SELECT caseid, quarter, init_fda_dt, date_precision(init_fda_dt) AS precision
        FROM query_table(demo)
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
    """Small lookup tables used by the rebuild: countries (of the DEMO rows in scope), reporter
    types."""
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT reporter_country FROM _scope_demo WHERE reporter_country IS NOT NULL "
            "UNION SELECT DISTINCT occr_country FROM _scope_demo WHERE occr_country IS NOT NULL"
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


@dataclass(frozen=True)
class Step:
    """One table of the rebuild and the SELECT deriving its rows for what is in scope.

    `key` says how a table is scoped: 'caseid' (rows of the cases in `_affected`) and 'quarter'
    (rows of the quarters in `_changed_quarters`) are replaced for that scope only by an
    incremental rebuild; 'all' tables are derived whole every time; 'temp' are scratch tables."""

    table: str
    key: str
    select: str

    def statements(self, incremental: bool) -> tuple[str, ...]:
        """The SQL that replaces this step's rows: whole, or only those in scope."""
        if self.key == "temp":
            return (f"CREATE OR REPLACE TEMP TABLE {self.table} AS {self.select}",)
        if self.key == "all" or not incremental:
            return (f"CREATE OR REPLACE TABLE {self.table} AS {self.select}",)
        scope = "_affected" if self.key == "caseid" else "_changed_quarters"
        return (
            f"DELETE FROM {self.table} WHERE {self.key} IN (SELECT {self.key} FROM {scope})",  # noqa: S608
            f"INSERT INTO {self.table} BY NAME {self.select}",
        )


# The ordered rebuild, one definition for the full and the incremental one (only the rows of
# _scope_demo differ).
REBUILD: tuple[Step, ...] = (
    Step("reports", "caseid", "SELECT * FROM report_versions(NULL, demo := '_scope_demo')"),
    Step("_surviving", "temp", "SELECT * FROM surviving_keys(NULL, demo := '_scope_demo')"),
    Step(
        "case_outcomes",
        "caseid",
        """SELECT DISTINCT s.caseid, s.primaryid, s.source, upper(trim(o.outc_cod)) AS outc_cod
    FROM _surviving s JOIN raw_outc o
      ON o.source = s.source AND o.primaryid = s.primaryid AND o.quarter = s.quarter
    WHERE o.outc_cod IS NOT NULL""",
    ),
    # Column names and code literals come from OUTCOME_FLAGS, a constant.
    Step(
        "_outcome_flags",
        "temp",
        f"""SELECT caseid,
        {_OUTCOME_COLUMNS}
    FROM case_outcomes GROUP BY caseid""",  # noqa: S608
    ),
    # Materialised before `cases` joins it: as a subquery its aggregate (string states) and the
    # join's other build sides outgrew a 4 GiB limit at 32 quarters instead of spilling.
    Step("_initial", "temp", "SELECT * FROM initial_receipts(NULL, demo := '_scope_demo')"),
    Step(
        "cases",
        "caseid",
        """SELECT s.caseid, s.primaryid, s.source,
        try_cast(d.caseversion AS INTEGER) AS caseversion, s.quarter, s.n_versions, d.i_f_code,
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
        CAST(NULL AS VARCHAR) AS strict_duplicate_of,
        CAST(NULL AS VARCHAR) AS literature_duplicate_of
    FROM _surviving s
    JOIN reports d ON d.source = s.source AND d.primaryid = s.primaryid
    LEFT JOIN _country rc ON rc.raw = d.reporter_country
    LEFT JOIN _country oc ON oc.raw = d.occr_country
    LEFT JOIN _reporter rt ON rt.code = upper(trim(d.occp_cod))
    LEFT JOIN _outcome_flags f ON f.caseid = s.caseid
    LEFT JOIN _initial i ON i.caseid = s.caseid""",
    ),
    Step(
        "case_drugs",
        "caseid",
        """SELECT s.caseid, s.primaryid, s.source, g.drug_seq, upper(trim(g.role_cod)) AS role_cod,
        g.drugname, g.prod_ai, g.route, g.dose_vbm, g.dose_amt, g.dose_unit, g.dose_form,
        g.dose_freq, g.cum_dose_chr, g.cum_dose_unit, g.dechal, g.rechal, g.lot_num, g.exp_dt,
        g.nda_num, g.val_vbm
    FROM _surviving s JOIN raw_drug g
      ON g.source = s.source AND g.primaryid = s.primaryid AND g.quarter = s.quarter""",
    ),
    # MedDRA terms: legacy upper case and current mixed case are one term; show the spelling
    # the FAERS era uses most, else the legacy spelling with only its first letter capital.
    # Global (a new quarter's rows can change a term's spelling): derived whole every time.
    Step(
        "pt_terms",
        "all",
        """WITH spellings AS (
        SELECT upper(trim(pt)) AS pt_key, trim(pt) AS spelling, count(*) AS n_rows,
            trim(pt) <> upper(trim(pt)) AS mixed
        FROM raw_reac WHERE pt IS NOT NULL AND trim(pt) <> '' GROUP BY ALL)
    SELECT pt_key, CASE WHEN bool_or(mixed)
            THEN arg_max(spelling, (mixed, n_rows, spelling))
            ELSE upper(left(pt_key, 1)) || lower(substr(pt_key, 2)) END AS pt
    FROM spellings GROUP BY pt_key""",
    ),
    Step(
        "case_reactions",
        "caseid",
        """SELECT DISTINCT s.caseid, s.primaryid, s.source, t.pt, t.pt_key, r.drug_rec_act
    FROM _surviving s JOIN raw_reac r
      ON r.source = s.source AND r.primaryid = s.primaryid AND r.quarter = s.quarter
    JOIN pt_terms t ON t.pt_key = upper(trim(r.pt))""",
    ),
    Step(
        "case_indications",
        "caseid",
        """SELECT DISTINCT s.caseid, s.primaryid, s.source, i.indi_drug_seq AS drug_seq,
        trim(i.indi_pt) AS indi_pt
    FROM _surviving s JOIN raw_indi i
      ON i.source = s.source AND i.primaryid = s.primaryid AND i.quarter = s.quarter
    WHERE i.indi_pt IS NOT NULL""",
    ),
    Step(
        "case_therapies",
        "caseid",
        """SELECT s.caseid, s.primaryid, s.source, t.dsg_drug_seq AS drug_seq,
        t.start_dt, date_day(t.start_dt) AS start_date,
        date_precision(t.start_dt) AS start_dt_precision,
        t.end_dt, date_day(t.end_dt) AS end_date, date_precision(t.end_dt) AS end_dt_precision,
        t.dur, t.dur_cod
    FROM _surviving s JOIN raw_ther t
      ON t.source = s.source AND t.primaryid = s.primaryid AND t.quarter = s.quarter""",
    ),
    # What the clean layer was derived from, so that the next rebuild can tell what changed:
    # each quarter's zip as loaded, and the DEMO keys and deleted-list caseids of each quarter
    # (a replaced quarter's old rows are gone from raw_demo; their cases are affected too).
    Step("clean_quarters", "all", "SELECT quarter, zip_sha256, loaded_at FROM quarters"),
    Step(
        "clean_keys",
        "quarter",
        """SELECT quarter, source, primaryid, caseid, false AS deleted_list FROM raw_demo
    WHERE caseid IS NOT NULL AND quarter IN (SELECT quarter FROM _changed_quarters)
    UNION ALL
    SELECT quarter, source, NULL, caseid, true FROM raw_deleted
    WHERE quarter IN (SELECT quarter FROM _changed_quarters)""",
    ),
)

# After an incremental rebuild a term's display spelling may have changed (pt_terms is global):
# the reactions of unaffected cases take it too.
_RESPELL = """UPDATE case_reactions SET pt = t.pt FROM pt_terms t
    WHERE t.pt_key = case_reactions.pt_key AND case_reactions.pt IS DISTINCT FROM t.pt"""

# The strict passes compare all cases: a new case can be another's keeper or a flagged case's
# keeper can go. After an incremental rebuild no flag is kept; strict mode then sets them anew.
_CLEAR_FLAGS = """UPDATE cases SET strict_duplicate_of = NULL, literature_duplicate_of = NULL
    WHERE strict_duplicate_of IS NOT NULL OR literature_duplicate_of IS NOT NULL"""

# Quarters loaded, replaced or removed since the last rebuild (replaced: the clean layer had
# another load of it). A full rebuild counts every loaded quarter as changed.
_CHANGED_QUARTERS = """CREATE OR REPLACE TEMP TABLE _changed_quarters AS
    SELECT quarter, bool_or(replaced) AS replaced FROM (
        SELECT quarter, false AS replaced FROM (
            SELECT quarter, zip_sha256, loaded_at FROM quarters
            EXCEPT SELECT quarter, zip_sha256, loaded_at FROM clean_quarters)
        UNION ALL
        SELECT quarter, true FROM (
            SELECT quarter, zip_sha256, loaded_at FROM clean_quarters
            EXCEPT SELECT quarter, zip_sha256, loaded_at FROM quarters))
    GROUP BY quarter"""
_ALL_QUARTERS = """CREATE OR REPLACE TEMP TABLE _changed_quarters AS
    SELECT quarter, false AS replaced FROM quarters"""
# The affected cases: a DEMO or deleted-list row in a changed quarter, now or when last built,
# and the cases now reporting under a primaryid that a changed quarter had.
_AFFECTED = """CREATE OR REPLACE TEMP TABLE _affected AS
    SELECT caseid FROM raw_demo
    WHERE caseid IS NOT NULL AND quarter IN (SELECT quarter FROM _changed_quarters)
    UNION SELECT caseid FROM raw_deleted WHERE quarter IN (SELECT quarter FROM _changed_quarters)
    UNION SELECT caseid FROM clean_keys WHERE quarter IN (SELECT quarter FROM _changed_quarters)
    UNION SELECT d.caseid FROM raw_demo d JOIN clean_keys k
      ON k.source = d.source AND k.primaryid IS NOT DISTINCT FROM d.primaryid
    WHERE NOT k.deleted_list AND k.quarter IN (SELECT quarter FROM _changed_quarters)
      AND d.caseid IS NOT NULL"""
# Report versions are chosen per primaryid across caseids: add the cases sharing a primaryid
# with an affected one until none is left out, so that the scope holds whole partitions.
_CLOSE_AFFECTED = """INSERT INTO _affected
    SELECT DISTINCT d.caseid FROM raw_demo d
    JOIN (SELECT DISTINCT source, primaryid FROM raw_demo
          WHERE caseid IN (SELECT caseid FROM _affected)) p
      ON p.source = d.source AND p.primaryid IS NOT DISTINCT FROM d.primaryid
    WHERE d.caseid IS NOT NULL AND d.caseid NOT IN (SELECT caseid FROM _affected)"""
# The DEMO rows a rebuild reads (_scope_demo): every row of the affected cases (incremental), or
# a view of all of raw_demo (full).
_SCOPED_DEMO = """CREATE OR REPLACE TEMP TABLE _scope_demo AS
    SELECT * FROM raw_demo WHERE caseid IN (SELECT caseid FROM _affected)"""
_WHOLE_DEMO = "CREATE OR REPLACE TEMP VIEW _scope_demo AS SELECT * FROM raw_demo"

# AEOLUS-style rule-based flags: only cases with every key present can match. Candidates first,
# narrowed key by key (a group of equal cases is within one group of each part of its key):
# cases sharing event date, age, sex and country with another; of those, the ones that also
# share the order-free fingerprint of their drug set (xor and sum of the members' hashes, and
# their number); of those, the ones that also share their reaction set's. Then the exact sets,
# as sorted lists, compared among the candidates only. Fingerprints are fixed-size aggregate
# states, which DuckDB can offload to disk, and list() states cannot; equal sets always have
# equal fingerprints, so the exact comparison sees every true duplicate. The narrowing halves
# the pass on the whole archive: most cases' demographic key or drug set is their own.
_SET_FINGERPRINT = """SELECT caseid, bit_xor(hash(v)) AS fx, sum(hash(v) >> 11) AS fs,
            count(*) AS fn
        FROM (SELECT DISTINCT caseid, {value} AS v FROM {table}
              WHERE {value} IS NOT NULL AND caseid IN (SELECT caseid FROM {cases}))
        GROUP BY caseid"""
_SET_LIST = """SELECT caseid, list_sort(list_distinct(list({value}))) AS members FROM {table}
        WHERE {value} IS NOT NULL AND caseid IN (SELECT caseid FROM _candidates)
        GROUP BY caseid"""
_SETS = (("case_drugs", "upper(trim(drugname))"), ("case_reactions", "pt_key"))
# The AEOLUS rule's demographic key: the candidates are narrowed and the duplicates grouped by it.
_DEMOGRAPHIC_KEY = "event_dt, age_years, sex, country"
_DRUG_PRINTS = _SET_FINGERPRINT.format(table=_SETS[0][0], value=_SETS[0][1], cases="_complete")
_REACTION_PRINTS = _SET_FINGERPRINT.format(
    table=_SETS[1][0], value=_SETS[1][1], cases="_same_drugs"
)
STRICT = (
    f"""CREATE OR REPLACE TEMP TABLE _complete AS
    SELECT caseid, fda_dt, primaryid, event_dt, age_years, sex, country FROM cases
    WHERE event_dt IS NOT NULL AND age_years IS NOT NULL AND sex <> 'unknown'
      AND country IS NOT NULL
    QUALIFY count(*) OVER (PARTITION BY {_DEMOGRAPHIC_KEY}) > 1""",  # noqa: S608 (constant)
    f"""CREATE OR REPLACE TEMP TABLE _same_drugs AS
    WITH drugs AS ({_DRUG_PRINTS})
    SELECT c.*, g.fx AS gx, g.fs AS gs, g.fn AS gn FROM _complete c JOIN drugs g USING (caseid)
    QUALIFY count(*) OVER (PARTITION BY {_DEMOGRAPHIC_KEY}, gx, gs, gn) > 1""",  # noqa: S608
    f"""CREATE OR REPLACE TEMP TABLE _candidates AS
    WITH reactions AS ({_REACTION_PRINTS})
    SELECT c.* EXCLUDE (gx, gs, gn) FROM _same_drugs c JOIN reactions r USING (caseid)
    QUALIFY count(*) OVER (PARTITION BY {_DEMOGRAPHIC_KEY}, gx, gs, gn, r.fx, r.fs, r.fn)
        > 1""",  # noqa: S608 (constant fragments)
    f"""CREATE OR REPLACE TEMP TABLE _strict AS
    WITH drugs AS ({_SET_LIST.format(table=_SETS[0][0], value=_SETS[0][1])}),
    reactions AS ({_SET_LIST.format(table=_SETS[1][0], value=_SETS[1][1])})
    SELECT c.caseid, first_value(c.caseid) OVER (
        PARTITION BY {_DEMOGRAPHIC_KEY}, g.members, r.members
        ORDER BY c.fda_dt DESC, try_cast(c.primaryid AS BIGINT) DESC) AS keeper
    FROM _candidates c JOIN drugs g USING (caseid) JOIN reactions r USING (caseid)""",  # noqa: S608
    """UPDATE cases SET strict_duplicate_of = s.keeper
    FROM _strict s WHERE s.caseid = cases.caseid AND s.keeper <> s.caseid""",
)

_DEDUP_LOG = """
CREATE TABLE IF NOT EXISTS dedup_log (
    step_order INTEGER, step VARCHAR, n_reports BIGINT, n_cases BIGINT, dedup_mode VARCHAR,
    raw_fingerprint VARCHAR, rebuilt_at TIMESTAMP, tool_version VARCHAR, schema_version INTEGER,
    clean_definition VARCHAR)
"""


def clean_definition() -> str:
    """sha256 of what derives the clean layer: the source of this module, of the literature pass
    and of the definitions, and pycountry's version. The rows an incremental rebuild keeps were
    derived by an older definition unless this is unchanged, so a change forces a full one."""
    parts = [Path(m.__file__ or "").read_bytes() for m in (definitions, literature)]
    parts += [Path(__file__).read_bytes(), str(pycountry.__version__).encode()]
    return hashlib.sha256(b"\0".join(parts)).hexdigest()


_STEP_COUNTS = (
    ("raw DEMO rows, all quarters", "SELECT count(*), count(DISTINCT caseid) FROM raw_demo"),
    (
        "distinct report versions (republished primaryids once)",
        "SELECT count(*), count(DISTINCT caseid) FROM reports",
    ),
    (
        "latest version per caseid (FDA rule)",
        "SELECT count(DISTINCT caseid), count(DISTINCT caseid) FROM reports",
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


def full_rebuild_reason(con: duckdb.DuckDBPyConnection) -> str | None:
    """Why an incremental rebuild would re-derive every case instead (None: it would not).

    Incremental needs the last rebuild to have used this tool version, schema and
    `clean_definition`, and to have left every table it updates. Any dedup mode: the strict
    passes only flag, and run over all cases anyway."""
    if not has_table(con, "dedup_log"):
        return "the clean layer was never built"
    missing = sorted(s.table for s in REBUILD if s.key != "temp" and not has_table(con, s.table))
    if missing:
        return f"the clean layer lacks {', '.join(missing)}"
    columns = {
        r[0]
        for r in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = 'dedup_log' "
            "AND schema_name = 'main' AND database_name = current_database()"
        ).fetchall()
    }
    if not {"tool_version", "schema_version", "clean_definition"} <= columns:
        return "the clean layer was built by an earlier version of the tool"
    rows = con.execute(
        "SELECT DISTINCT tool_version, schema_version, clean_definition FROM dedup_log"
    ).fetchall()
    if len(rows) != 1:
        return "the clean layer's log names several builds"
    tool, schema, definition = rows[0]
    if tool != __version__:
        return f"the clean layer was built by version {tool} of the tool, this is {__version__}"
    if schema != SCHEMA_VERSION:
        return f"the clean layer was built on schema {schema}, the database is on {SCHEMA_VERSION}"
    if definition != clean_definition():
        return "the code that derives the clean layer changed since it was built"
    return None


def _scope_incremental(con: duckdb.DuckDBPyConnection) -> None:
    """Find the changed quarters and the affected cases; scope the DEMO rows to those cases."""
    con.execute(_CHANGED_QUARTERS)
    con.execute(_AFFECTED)
    while True:
        row = con.execute(_CLOSE_AFFECTED).fetchone()
        if not row or not row[0]:
            break
    con.execute(_SCOPED_DEMO)


def rebuild(
    con: duckdb.DuckDBPyConnection, dedup: str = "fda", incremental: bool = False
) -> pd.DataFrame:
    """Bring the clean layer up to the raw layer in one transaction; return the step counts.

    With `incremental`, unless `full_rebuild_reason`, only the cases with a DEMO or deleted-list
    row in a quarter loaded, replaced or removed (by ingest) since the last rebuild are
    re-derived, by the same statements; else everything. Leaves temp tables `_changed_quarters`
    and (incremental) `_affected` and `_rederived_since` for the extraction; the returned
    frame's `rebuild_kind` and `n_cases_rederived` say which kind ran."""
    if dedup not in DEDUP_MODES:
        raise ValueError(f"dedup must be one of {DEDUP_MODES}, not {dedup!r}")
    con.execute("BEGIN TRANSACTION")
    try:
        incremental = incremental and full_rebuild_reason(con) is None
        if incremental:
            con.execute(
                "CREATE OR REPLACE TEMP TABLE _rederived_since AS SELECT $f AS data_fingerprint",
                {"f": clean_data_fingerprint(con)},
            )
            _scope_incremental(con)
        else:
            con.execute("DROP TABLE IF EXISTS _affected")
            con.execute("DROP TABLE IF EXISTS _rederived_since")
            con.execute(_ALL_QUARTERS)
            con.execute(_WHOLE_DEMO)
        _lookups(con)
        ensure_macros(con)
        for step in REBUILD:
            for statement in step.statements(incremental):
                con.execute(statement)
        if incremental:
            con.execute(_RESPELL)
            con.execute(_CLEAR_FLAGS)
        steps = list(_STEP_COUNTS)
        if dedup == "strict":
            for statement in STRICT:
                con.execute(statement)
            literature.flag_duplicates(con)
            steps += [_STRICT_COUNT, literature.STEP]
        con.execute("DROP TABLE _scope_demo" if incremental else "DROP VIEW _scope_demo")
        rederived = con.execute(
            "SELECT count(*) FROM _affected" if incremental else "SELECT count(*) FROM cases"
        ).fetchone()
        assert rederived is not None
        _log_steps(con, steps, dedup)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    # Which kind ran is said, not stored: the database is the same whichever ran.
    frame = con.execute("SELECT * FROM dedup_log ORDER BY step_order").fetchdf()
    frame["rebuild_kind"] = "incremental" if incremental else "full"
    frame["n_cases_rederived"] = int(rederived[0])
    return frame


def rederived_since(con: duckdb.DuckDBPyConnection) -> str | None:
    """After an incremental rebuild on this connection, the data fingerprint it started from
    (hits current with it need only the `_affected` cases updated); else None."""
    if not has_temp_table(con, "_rederived_since"):
        return None
    found = con.execute("SELECT any_value(data_fingerprint) FROM _rederived_since").fetchone()
    return str(found[0]) if found and found[0] else None


def _log_steps(con: duckdb.DuckDBPyConnection, steps: list[tuple[str, str]], dedup: str) -> None:
    """Replace `dedup_log` with this rebuild's step counts and what it was built from."""
    ensure_derived_table(con, _DEDUP_LOG)
    con.execute("DELETE FROM dedup_log")
    now = datetime.now(UTC).replace(tzinfo=None)
    raw = quarters_fingerprint(con)
    definition = clean_definition()
    for order, (step, sql) in enumerate(steps, start=1):
        row = con.execute(sql).fetchone()
        assert row is not None
        con.execute(
            "INSERT INTO dedup_log VALUES ($o, $step, $reports, $cases, $mode, $raw, $now, "
            "$tool, $schema, $definition)",
            {"o": order, "step": step, "reports": row[0], "cases": row[1]}
            | {
                "mode": dedup,
                "raw": raw,
                "now": now,
                "tool": __version__,
                "schema": SCHEMA_VERSION,
                "definition": definition,
            },
        )

"""Apply a substance's term file to the clean layer: which drug rows of which cases name it.

Reads `raw_drug` and `case_drugs`; writes `substance_strings` (every distinct drugname/prod_ai
string of any report version that the rules match, with rule and term: the as-of analyses of
older versions need those too), `substance_hits` (one row per matching drug row of a surviving
case) and `substance_runs` (the term file's name, version and path behind those rows, and the data
fingerprint of the clean layer they were matched against, so every count can be traced to the
rules and the data that produced it). Matching runs once per distinct string.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import duckdb
import pandas as pd

from .clean import ensure_macros, rederived_since
from .db import ensure_derived_table
from .freshness import (
    data_fingerprint,
    extraction_is_current,
    extraction_matches,
    stale_extractions,
)
from .substances import Field, Substance, builtin_substances, discover, load_substance

_DDL = (
    """CREATE TABLE IF NOT EXISTS substance_strings (
        substance VARCHAR, field VARCHAR, string VARCHAR, rule VARCHAR, term VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS substance_hits (
        substance VARCHAR, caseid VARCHAR, primaryid VARCHAR, source VARCHAR, drug_seq VARCHAR,
        role_cod VARCHAR, field VARCHAR, matched_string VARCHAR, rule VARCHAR, term VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS substance_seen (
        substance VARCHAR, field VARCHAR, string VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS substance_runs (
        substance VARCHAR, version VARCHAR, source_path VARCHAR, description VARCHAR,
        n_distinct_strings BIGINT, n_drug_rows BIGINT, n_cases BIGINT, extracted_at TIMESTAMP,
        data_fingerprint VARCHAR)""",
)
_TABLES = ("substance_strings", "substance_seen", "substance_hits", "substance_runs")

# Similarity (0-100) at which `discover_terms` suggests an unmatched string.
DISCOVER_THRESHOLD = 80.0


def resolve(substance: str | None = None, substance_file: str | Path | None = None) -> Substance:
    """The substance a command asks for: a user's term file, else a built-in name (kratom)."""
    if substance_file is not None:
        return load_substance(Path(substance_file))
    return load_substance(substance or "kratom")


# "Case involves substance S in roles R" on the clean layer, defined once: every caseid with a
# drug row matching S whose role counts (clean's role_counts macro). signals, trends, the report
# and the named queries all select from it.
_INVOLVED_CASES = """CREATE OR REPLACE MACRO involved_cases(which, in_roles) AS TABLE
    SELECT DISTINCT caseid FROM substance_hits h
    WHERE h.substance = which AND role_counts(h.role_cod, in_roles)"""


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the extraction tables and the `involved_cases` macro (safe to repeat)."""
    ensure_macros(con)
    for ddl in _DDL:
        ensure_derived_table(con, ddl)
    con.execute(_INVOLVED_CASES)


# Distinct drug strings per field: every one (a full extraction), or those of the quarters
# changed by an incremental rebuild that the substance's rules have not seen yet.
_ALL_STRINGS: dict[Field, str] = {
    "drugname": "SELECT DISTINCT drugname FROM raw_drug WHERE drugname <> ''",
    "prod_ai": "SELECT DISTINCT prod_ai FROM raw_drug WHERE prod_ai <> ''",
}
_NEW_STRINGS: dict[Field, str] = {
    "drugname": """SELECT DISTINCT drugname FROM raw_drug
    WHERE drugname <> '' AND quarter IN (SELECT quarter FROM _changed_quarters)
    EXCEPT SELECT string FROM substance_seen WHERE substance = $s AND field = 'drugname'""",
    "prod_ai": """SELECT DISTINCT prod_ai FROM raw_drug
    WHERE prod_ai <> '' AND quarter IN (SELECT quarter FROM _changed_quarters)
    EXCEPT SELECT string FROM substance_seen WHERE substance = $s AND field = 'prod_ai'""",
}
# Strings tried that no loaded quarter has any more (after a quarter was replaced).
_GONE = """CREATE OR REPLACE TEMP TABLE _gone AS
    SELECT field, string FROM substance_seen WHERE substance = $s
    EXCEPT (
        SELECT 'drugname', drugname FROM raw_drug WHERE drugname IN (
            SELECT string FROM substance_seen WHERE substance = $s AND field = 'drugname')
        UNION
        SELECT 'prod_ai', prod_ai FROM raw_drug WHERE prod_ai IN (
            SELECT string FROM substance_seen WHERE substance = $s AND field = 'prod_ai'))"""
# The drug rows whose hits are (re)made: all of case_drugs, or the affected cases' rows.
_ALL_DRUGS = "CREATE OR REPLACE TEMP VIEW _hit_drugs AS SELECT * FROM case_drugs"
_AFFECTED_DRUGS = """CREATE OR REPLACE TEMP VIEW _hit_drugs AS
    SELECT * FROM case_drugs WHERE caseid IN (SELECT caseid FROM _affected)"""
# A drug row counts once: by its drugname when that matches, else by its prod_ai.
_HITS = """INSERT INTO substance_hits
    SELECT $s, d.caseid, d.primaryid, d.source, d.drug_seq, d.role_cod,
        coalesce(n.field, a.field), coalesce(n.string, a.string),
        coalesce(n.rule, a.rule), coalesce(n.term, a.term)
    FROM _hit_drugs d
    LEFT JOIN substance_strings n
        ON n.substance = $s AND n.field = 'drugname' AND n.string = d.drugname
    LEFT JOIN substance_strings a
        ON a.substance = $s AND a.field = 'prod_ai' AND a.string = d.prod_ai
    WHERE n.string IS NOT NULL OR a.string IS NOT NULL"""


def _strings(
    con: duckdb.DuckDBPyConnection, substance: Substance, queries: dict[Field, str]
) -> pd.DataFrame:
    """The strings each field's query selects, each with the rule and term it matches (or
    None): what a substance's rules were tried on."""
    rows: list[tuple[str, str, str | None, str | None]] = []
    for field, sql in queries.items():
        params = {"s": substance.name} if "$s" in sql else None
        found = [r[0] for r in con.execute(sql, params).fetchall()]
        hits = substance.match_many(found, field=field)
        for string in found:
            hit = hits.get(string)
            rows.append((field, string, hit.rule if hit else None, hit.term if hit else None))
    return pd.DataFrame(rows, columns=["field", "string", "rule", "term"], dtype=object)


def extract(con: duckdb.DuckDBPyConnection, substance: Substance) -> int:
    """Replace `substance_hits` for one substance from the current clean layer; return n_cases."""
    ensure_tables(con)
    return _store(con, substance, _strings(con, substance, _ALL_STRINGS), incremental=False)


def extract_changed(con: duckdb.DuckDBPyConnection, substance: Substance) -> int:
    """Update the hits of one substance, current before an incremental rebuild, for that
    rebuild's affected cases only (its temp tables `_changed_quarters` and `_affected`): only
    strings its rules have not seen are matched; return n_cases."""
    ensure_tables(con)
    return _store(con, substance, _strings(con, substance, _NEW_STRINGS), incremental=True)


def _store(
    con: duckdb.DuckDBPyConnection, substance: Substance, tried: pd.DataFrame, incremental: bool
) -> int:
    """In one transaction: record the strings tried and those matched, remake the hits of the
    drug rows in scope, and the run's row in `substance_runs`; return n_cases."""
    params = {"s": substance.name}
    con.register("_tried_frame", tried)
    try:
        con.execute("BEGIN TRANSACTION")
        if incremental:
            replaced = con.execute("SELECT bool_or(replaced) FROM _changed_quarters").fetchone()
            if replaced and replaced[0]:
                con.execute(_GONE, params)
                for table in ("substance_strings", "substance_seen"):
                    con.execute(
                        f"DELETE FROM {table} WHERE substance = $s AND EXISTS (SELECT 1 FROM "  # noqa: S608
                        f"_gone g WHERE g.field = {table}.field AND g.string = {table}.string)",
                        params,
                    )
            con.execute(
                "DELETE FROM substance_hits WHERE substance = $s "
                "AND caseid IN (SELECT caseid FROM _affected)",
                params,
            )
            con.execute("DELETE FROM substance_runs WHERE substance = $s", params)
            con.execute(_AFFECTED_DRUGS)
        else:
            for table in _TABLES:
                con.execute(f"DELETE FROM {table} WHERE substance = $s", params)  # noqa: S608
            con.execute(_ALL_DRUGS)
        con.execute("INSERT INTO substance_seen SELECT $s, field, string FROM _tried_frame", params)
        con.execute(
            "INSERT INTO substance_strings SELECT $s, field, string, rule, term "
            "FROM _tried_frame WHERE rule IS NOT NULL",
            params,
        )
        con.execute(_HITS, params)
        con.execute("DROP VIEW _hit_drugs")
        row = con.execute(
            "SELECT (SELECT count(*) FROM substance_strings WHERE substance = $s), "
            "count(*), count(DISTINCT caseid) FROM substance_hits WHERE substance = $s",
            params,
        ).fetchone()
        assert row is not None
        con.execute(
            "INSERT INTO substance_runs "
            "VALUES ($s, $v, $p, $d, $n_strings, $rows, $cases, $now, $data)",
            params
            | {
                "v": substance.version,
                "p": substance.source_path,
                "d": substance.description,
                "n_strings": row[0],
                "rows": row[1],
                "cases": row[2],
                "now": datetime.now(UTC).replace(tzinfo=None),
                "data": data_fingerprint(con),
            },
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_tried_frame")
    return int(row[2])


def has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Whether the database has a table of that name."""
    row = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE table_name = $n", {"n": name}
    ).fetchone()
    return bool(row and row[0])


def ensure_extracted(con: duckdb.DuckDBPyConnection, substance: Substance) -> None:
    """Extract the substance unless hits from this term-file version and the current clean layer
    are already stored."""
    if not extraction_is_current(con, substance.name, substance.version, substance.source_path):
        extract(con, substance)
    else:
        ensure_tables(con)


def builtin_names() -> tuple[str, ...]:
    """The built-in substances, which every rebuild extracts."""
    return tuple(builtin_substances())


def builtin_term_files() -> dict[str, tuple[str, str]]:
    """Each built-in substance's term file as (version, source_path), for `freshness.check`."""
    found = {}
    for name in builtin_names():
        s = load_substance(name)
        found[name] = (s.version, s.source_path)
    return found


def extract_builtins(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Extract every built-in substance (run after each rebuild of the clean layer); after an
    incremental rebuild on this connection, a built-in whose hits were current with the data
    before it (same term file) is updated for the affected cases only."""
    since = rederived_since(con)
    counts = {}
    for name in builtin_names():
        substance = load_substance(name)
        current = since is not None and extraction_matches(
            con, name, substance.version, substance.source_path, since
        )
        counts[name] = (extract_changed if current else extract)(con, substance)
    return counts


def refresh(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Extract the built-ins again and drop the stale hits of other term files (they are
    extracted again when next asked for); return n_cases per built-in."""
    counts = extract_builtins(con)
    for name in stale_extractions(con, {}):
        for table in _TABLES:
            con.execute(f"DELETE FROM {table} WHERE substance = $s", {"s": name})  # noqa: S608
    return counts


def unmatched_strings(con: duckdb.DuckDBPyConnection, substance: Substance) -> pd.DataFrame:
    """Drug strings of surviving cases that no rule of the substance matched, with n_cases."""
    extract(con, substance)
    return con.execute(
        """SELECT s AS string, count(DISTINCT caseid) AS n_cases FROM (
            SELECT drugname AS s, caseid FROM case_drugs d
            WHERE NOT EXISTS (SELECT 1 FROM substance_hits h WHERE h.substance = $s
                AND h.matched_string = d.drugname)
            UNION ALL
            SELECT prod_ai AS s, caseid FROM case_drugs d
            WHERE NOT EXISTS (SELECT 1 FROM substance_hits h WHERE h.substance = $s
                AND h.matched_string = d.prod_ai))
        WHERE s IS NOT NULL GROUP BY s""",
        {"s": substance.name},
    ).fetchdf()


def discover_terms(
    con: duckdb.DuckDBPyConnection, substance: Substance, limit: int = 50
) -> pd.DataFrame:
    """Unmatched drug strings that look like the substance, best first, for an analyst to review
    (with a note on collisions of ambiguous names); attrs hold how many strings were compared
    and the similarity threshold."""
    unmatched = unmatched_strings(con, substance)
    found = discover(
        zip(unmatched["string"], unmatched["n_cases"].astype(int), strict=True),
        substance,
        limit=limit,
        threshold=DISCOVER_THRESHOLD,
    )
    frame = pd.DataFrame(
        [(s.string, s.n_cases, s.score, s.nearest_term, s.note) for s in found],
        columns=["string", "n_cases", "score", "nearest_term", "note"],
    )
    frame.attrs.update(n_unmatched=len(unmatched), threshold=DISCOVER_THRESHOLD)
    return frame

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

from .clean import ensure_macros
from .db import ensure_derived_table
from .freshness import data_fingerprint, extraction_is_current, stale_extractions
from .substances import Substance, builtin_substances, discover, load_substance

_DDL = (
    """CREATE TABLE IF NOT EXISTS substance_strings (
        substance VARCHAR, field VARCHAR, string VARCHAR, rule VARCHAR, term VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS substance_hits (
        substance VARCHAR, caseid VARCHAR, primaryid VARCHAR, source VARCHAR, drug_seq VARCHAR,
        role_cod VARCHAR, field VARCHAR, matched_string VARCHAR, rule VARCHAR, term VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS substance_runs (
        substance VARCHAR, version VARCHAR, source_path VARCHAR, description VARCHAR,
        n_distinct_strings BIGINT, n_drug_rows BIGINT, n_cases BIGINT, extracted_at TIMESTAMP,
        data_fingerprint VARCHAR)""",
)


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


def extract(con: duckdb.DuckDBPyConnection, substance: Substance) -> int:
    """Replace `substance_hits` for one substance from the current clean layer; return n_cases."""
    ensure_tables(con)
    names = [r[0] for r in con.execute("SELECT DISTINCT drugname FROM raw_drug").fetchall()]
    ais = [r[0] for r in con.execute("SELECT DISTINCT prod_ai FROM raw_drug").fetchall()]
    hits = [
        *substance.match_many([n for n in names if n], field="drugname").values(),
        *substance.match_many([a for a in ais if a], field="prod_ai").values(),
    ]
    matches = pd.DataFrame(
        {
            "field": [h.field for h in hits],
            "string": [h.matched_string for h in hits],
            "rule": [h.rule for h in hits],
            "term": [h.term for h in hits],
        },
        dtype=object,
    )
    con.register("_matches_frame", matches)
    try:
        con.execute("BEGIN TRANSACTION")
        for table in ("substance_strings", "substance_hits", "substance_runs"):
            con.execute(f"DELETE FROM {table} WHERE substance = $s", {"s": substance.name})  # noqa: S608
        con.execute(
            "INSERT INTO substance_strings SELECT $s, field, string, rule, term "
            "FROM _matches_frame",
            {"s": substance.name},
        )
        # A drug row counts once: by its drugname when that matches, else by its prod_ai.
        con.execute(
            """INSERT INTO substance_hits
            SELECT $s, d.caseid, d.primaryid, d.source, d.drug_seq, d.role_cod,
                coalesce(n.field, a.field), coalesce(n.string, a.string),
                coalesce(n.rule, a.rule), coalesce(n.term, a.term)
            FROM case_drugs d
            LEFT JOIN substance_strings n
                ON n.substance = $s AND n.field = 'drugname' AND n.string = d.drugname
            LEFT JOIN substance_strings a
                ON a.substance = $s AND a.field = 'prod_ai' AND a.string = d.prod_ai
            WHERE n.string IS NOT NULL OR a.string IS NOT NULL""",
            {"s": substance.name},
        )
        row = con.execute(
            "SELECT count(*), count(DISTINCT caseid) FROM substance_hits WHERE substance = $s",
            {"s": substance.name},
        ).fetchone()
        assert row is not None
        con.execute(
            "INSERT INTO substance_runs "
            "VALUES ($s, $v, $p, $d, $n_strings, $rows, $cases, $now, $data)",
            {
                "s": substance.name,
                "v": substance.version,
                "p": substance.source_path,
                "d": substance.description,
                "n_strings": len(hits),
                "rows": row[0],
                "cases": row[1],
                "now": datetime.now(UTC).replace(tzinfo=None),
                "data": data_fingerprint(con),
            },
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_matches_frame")
    return int(row[1])


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
    """Extract every built-in substance (run after each rebuild of the clean layer)."""
    return {name: extract(con, load_substance(name)) for name in builtin_names()}


def refresh(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Extract the built-ins again and drop the stale hits of other term files (they are
    extracted again when next asked for); return n_cases per built-in."""
    counts = extract_builtins(con)
    for name in stale_extractions(con, {}):
        for table in ("substance_strings", "substance_hits", "substance_runs"):
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

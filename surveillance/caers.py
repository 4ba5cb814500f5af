"""CAERS (FDA CFSAN Adverse Event Reporting System: foods, dietary supplements, cosmetics) as a
second source beside FAERS, never pooled with it.

Reads the CSV exports FDA publishes (the 2004-2017Q2 one-file export and later exports whose
columns are renamed and reordered), mapping columns by header name. Writes `caers_raw` (every
record as text, with file and line), `caers_quarantine` (malformed records with raw text, line
and reason), `caers_load_log` (rows read = rows loaded + rows quarantined, per file), the clean
tables `caers_cases` (one row per report), `caers_products`, `caers_reactions` and
`caers_outcomes`, and the substance matches `caers_substance_hits`/`caers_substance_runs`, made
by the FAERS term files and matcher (`substances`) with the reported product name as drugname.
A load is one transaction: a bad file leaves the database as it was. The unit of counting is the
CAERS report (RA_Report #), a report repeated once per product in the file.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from . import __version__, stats
from .clean import ensure_macros
from .db import ensure_derived_table
from .definitions import parse_roles, roles_option
from .errors import DatabaseError, InputError, NoDataError, SurveillanceError, UsageError
from .extract import builtin_names, ensure_extracted, has_table
from .faers_format import quarter_option
from .signals import _DDL as _SIGNAL_DDL  # the CAERS prior is stored beside FAERS priors
from .signals import Counts, SignalRun, fitted_prior, signal_run
from .substances import Substance, load_substance

# stats.fit_prior fits five hyperparameters and needs at least five pairs; with fewer, EBGM is
# unavailable (a prior that did not converge).
MIN_PAIRS = 5

# Canonical column -> its header spelling in each export: the 2004-2017Q2 file, then the later
# exports (an assumption from FDA's CAERS product-based downloads, not verified against a file;
# see the README). Matching ignores case, runs of spaces and a BOM.
COLUMNS: dict[str, tuple[str, ...]] = {
    "report_id": ("RA_Report #", "Report ID"),
    "created_date": ("RA_CAERS Created Date", "CAERS Created Date"),
    "event_start_date": ("AEC_Event Start Date", "Date of Event"),
    "product_role": ("PRI_Product Role", "Product Type"),
    "product_name": ("PRI_Reported Brand/Product Name", "Product"),
    "industry_code": ("PRI_FDA Industry Code", "Product Code"),
    "industry_name": ("PRI_FDA Industry Name", "Description"),
    "age": ("CI_Age at Adverse Event", "Patient Age"),
    "age_unit": ("CI_Age Unit", "Age Units"),
    "sex": ("CI_Gender", "Sex"),
    "outcomes": ("AEC_One Row Outcomes", "Outcomes"),
    "symptoms": ("SYM_One Row Coded Symptoms", "MedDRA Preferred Terms"),
}
REQUIRED = ("report_id", "product_name", "symptoms")
LAYOUTS = {"2004-2017Q2": 0, "later": 1}

# CAERS age units as the FAERS age codes of `clean.age_in_years`, so ages convert by one rule.
AGE_UNITS = {
    "YEAR(S)": "YR",
    "YEARS": "YR",
    "YEAR": "YR",
    "MONTH(S)": "MON",
    "MONTHS": "MON",
    "WEEK(S)": "WK",
    "WEEKS": "WK",
    "DAY(S)": "DY",
    "DAYS": "DY",
    "DECADE(S)": "DEC",
    "DECADES": "DEC",
    "HOUR(S)": "HR",
    "HOURS": "HR",
}
# CAERS outcome text (AEC_One Row Outcomes items) -> the `cases` outcome flag it sets.
OUTCOME_FLAGS = {
    "DEATH": "death",
    "LIFE THREATENING": "life_threatening",
    "HOSPITALIZATION": "hospitalization",
    "DISABILITY": "disability",
    "CONGENITAL ANOMALY": "congenital_anomaly",
    "REQ. INTERVENTION TO PRVNT PERM. IMPRMNT.": "required_intervention",
    "OTHER SERIOUS (IMPORTANT MEDICAL EVENTS)": "other_serious",
    "SERIOUS INJURIES/ ILLNESS": "other_serious",
}
FLAGS = tuple(dict.fromkeys(OUTCOME_FLAGS.values()))
# FAERS roles -> CAERS product roles: suspects are Suspect, concomitants Concomitant; CAERS has
# no interacting role.
ROLE_MAP = {"PS": "SUSPECT", "SS": "SUSPECT", "C": "CONCOMITANT"}

CAVEATS = (
    "CAERS is a spontaneous reporting system for foods, dietary supplements and cosmetics: no "
    "denominators, reports by consumers, clinicians and (for serious supplement events, by law) "
    "industry, often incomplete and stimulated by publicity. Counts are CAERS reports, never "
    "pooled with FAERS cases. A signal is a reason to look closer, not evidence of causation."
)

SYNTHETIC_MARKERS = ("SYNTHETIC", "README_SYNTHETIC.txt")

_DDL = (
    f"""CREATE TABLE IF NOT EXISTS caers_raw (source_file VARCHAR NOT NULL,
        source_line BIGINT NOT NULL, {", ".join(f"{c} VARCHAR" for c in COLUMNS)})""",
    """CREATE TABLE IF NOT EXISTS caers_quarantine (file VARCHAR NOT NULL,
        line_number BIGINT NOT NULL, raw_text VARCHAR NOT NULL, reason VARCHAR NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS caers_load_log (file VARCHAR NOT NULL, path VARCHAR NOT NULL,
        sha256 VARCHAR NOT NULL, layout VARCHAR NOT NULL, header VARCHAR NOT NULL,
        encoding VARCHAR NOT NULL, rows_read BIGINT NOT NULL, rows_loaded BIGINT NOT NULL,
        rows_quarantined BIGINT NOT NULL, synthetic BOOLEAN NOT NULL, load_seq BIGINT NOT NULL,
        tool_version VARCHAR NOT NULL, loaded_at TIMESTAMP NOT NULL)""",
)
_DERIVED_DDL = (
    """CREATE TABLE IF NOT EXISTS caers_substance_hits (substance VARCHAR, report_id VARCHAR,
        product_seq BIGINT, product_role VARCHAR, product_name VARCHAR, rule VARCHAR,
        term VARCHAR)""",
    """CREATE TABLE IF NOT EXISTS caers_substance_runs (substance VARCHAR, version VARCHAR,
        source_path VARCHAR, n_distinct_strings BIGINT, n_products BIGINT, n_reports BIGINT,
        data_fingerprint VARCHAR, extracted_at TIMESTAMP)""",
)

# The clean layer, rebuilt whole from caers_raw inside each load's transaction. A report found
# in several files takes its rows from the file loaded last (highest load_seq).
_ROWS = """CREATE OR REPLACE TEMP TABLE _caers_rows AS
    SELECT trim(r.report_id) AS rid, r.* FROM caers_raw r
    JOIN caers_load_log l ON l.file = r.source_file
    QUALIFY l.load_seq = max(l.load_seq) OVER (PARTITION BY trim(r.report_id))"""
_PRODUCTS = """CREATE OR REPLACE TABLE caers_products AS
    SELECT rid AS report_id,
        row_number() OVER (PARTITION BY rid ORDER BY source_line) AS product_seq,
        product_role, product_name, industry_code, industry_name, source_file, source_line,
        n_rows
    FROM (SELECT rid, upper(trim(product_role)) AS product_role, product_name, industry_code,
            industry_name, any_value(source_file) AS source_file, min(source_line) AS source_line,
            count(*) AS n_rows
          FROM _caers_rows GROUP BY ALL)"""
_REACTIONS = """CREATE OR REPLACE TABLE caers_reactions AS
    SELECT rid AS report_id, min(trim(pt)) AS pt, upper(trim(pt)) AS pt_key
    FROM _caers_rows, unnest(string_split(symptoms, ',')) AS t(pt)
    WHERE trim(pt) <> '' GROUP BY rid, upper(trim(pt))"""
_OUTCOMES = """CREATE OR REPLACE TABLE caers_outcomes AS
    SELECT DISTINCT rid AS report_id, upper(trim(o)) AS outcome
    FROM _caers_rows, unnest(string_split(outcomes, ',')) AS t(o)
    WHERE trim(o) <> ''"""
# Report-level fields repeat on every product row; the first row's value is kept.
_CASES = f"""CREATE OR REPLACE TABLE caers_cases AS
    WITH first AS (
        SELECT rid, arg_min(source_file, source_line) AS source_file,
            min(source_line) AS source_line, count(*) AS n_rows,
            arg_min(created_date, source_line) AS created_date_raw,
            arg_min(event_start_date, source_line) AS event_start_date_raw,
            arg_min(age, source_line) AS age_raw,
            arg_min(age_unit, source_line) AS age_unit_raw,
            arg_min(sex, source_line) AS sex_raw
        FROM _caers_rows GROUP BY rid),
    flags AS (
        SELECT o.report_id, {", ".join(f"bool_or(f.flag = '{f}') AS {f}" for f in FLAGS)}
        FROM caers_outcomes o JOIN _caers_outcome_flags f USING (outcome)
        GROUP BY o.report_id)
    SELECT f.rid AS report_id, f.source_file, f.source_line, f.n_rows,
        (SELECT count(*) FROM caers_products p WHERE p.report_id = f.rid) AS n_products,
        f.created_date_raw,
        try_strptime(trim(f.created_date_raw), '%m/%d/%Y')::DATE AS created_date,
        year(try_strptime(trim(f.created_date_raw), '%m/%d/%Y')) AS created_year,
        f.event_start_date_raw,
        try_strptime(trim(f.event_start_date_raw), '%m/%d/%Y')::DATE AS event_start_date,
        f.age_raw, f.age_unit_raw,
        age_in_years(f.age_raw, u.code) AS age_years,
        age_group(age_in_years(f.age_raw, u.code)) AS age_group,
        CASE upper(trim(f.sex_raw)) WHEN 'FEMALE' THEN 'F' WHEN 'F' THEN 'F'
            WHEN 'MALE' THEN 'M' WHEN 'M' THEN 'M' ELSE 'unknown' END AS sex,
        {", ".join(f"coalesce(g.{f}, false) AS {f}" for f in FLAGS)},
        coalesce({" OR ".join(f"g.{f}" for f in FLAGS)}, false) AS serious
    FROM first f
    LEFT JOIN _caers_age_units u ON u.unit = upper(trim(f.age_unit_raw))
    LEFT JOIN flags g ON g.report_id = f.rid"""  # noqa: S608 - flag names are constants


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create the CAERS raw and log tables and the derived match tables (safe to repeat)."""
    for ddl in _DDL:
        con.execute(ddl)
    for ddl in _DERIVED_DDL:
        ensure_derived_table(con, ddl)


def is_loaded(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether any CAERS file is loaded."""
    if not has_table(con, "caers_cases"):
        return False
    row = con.execute("SELECT count(*) FROM caers_load_log").fetchone()
    return bool(row and row[0])


def _require(con: duckdb.DuckDBPyConnection) -> None:
    if not is_loaded(con):
        raise NoDataError("no CAERS export loaded; run 'surveillance load --source caers FILE'")


# --- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaersFile:
    """One CAERS export read and checked, not yet written: its records and quarantined ones."""

    path: Path
    sha256: str
    layout: str
    header: tuple[str, ...]  # as read
    encoding: str
    rows: pd.DataFrame  # source_line and the canonical columns present, text, '' -> None
    quarantine: pd.DataFrame  # line_number, raw_text, reason
    rows_read: int
    synthetic: bool


@dataclass(frozen=True)
class CaersLoad:
    """What loading one CAERS file did."""

    file: str
    path: Path
    sha256: str
    layout: str
    rows_read: int
    rows_loaded: int
    rows_quarantined: int


def _key(name: str) -> str:
    return " ".join(name.replace("\ufeff", "").split()).casefold()


_HEADER_INDEX = {_key(h): (c, i) for c, names in COLUMNS.items() for i, h in enumerate(names)}


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the .csv files they hold; keep files as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(x for x in p.iterdir() if x.suffix.lower() == ".csv"))
        elif p.exists():
            found.append(p)
        else:
            raise InputError(p, "no such file or folder")
    if not found:
        raise InputError(", ".join(map(str, paths)), "no .csv files found")
    return found


def _records(lines: Iterator[str]) -> Iterator[tuple[int, str, list[str] | None, str | None]]:
    """CSV records as (first physical line, raw text, fields or None, error or None)."""
    consumed: list[str] = []

    def feed() -> Iterator[str]:
        for line in lines:
            consumed.append(line)
            yield line

    reader = csv.reader(feed(), strict=True)
    start = 1
    while True:
        try:
            fields: list[str] | None = next(reader)
            error = None
        except StopIteration:
            return
        except csv.Error as e:
            fields, error = None, f"malformed CSV: {e}"
        raw = "".join(consumed)
        consumed.clear()
        yield start, raw.removesuffix("\n").removesuffix("\r"), fields, error
        start = reader.line_num + 1


def _lines(text: str) -> Iterator[str]:
    """Physical lines ending at LF only (str.splitlines would also end one at U+2028, 0x85 and
    other separators that may sit inside a product name)."""
    start = 0
    while (end := text.find("\n", start)) >= 0:
        yield text[start : end + 1]
        start = end + 1
    if start < len(text):
        yield text[start:]


def _header(path: Path, records: Iterator[Any]) -> tuple[tuple[str, ...], list[str], Any]:
    """The header's names as read, their canonical columns, and the first record after it.

    A header broken after a name (`CI_Gender`, then a line starting `,AEC_One Row Outcomes`, as
    the 2004-2017Q2 export's is) is joined back."""
    first = next(records, None)
    if first is None or first[2] is None or not any(f.strip() for f in first[2]):
        raise InputError(path, "empty file or no CSV header line", line=1)
    names = list(first[2])
    after = next(records, None)
    while (
        after is not None
        and after[2]
        and after[2][0] == ""
        and len(after[2]) > 1
        and all(_key(f) in _HEADER_INDEX for f in after[2][1:])
    ):
        names += after[2][1:]
        after = next(records, None)
    unknown = [n for n in names if _key(n) not in _HEADER_INDEX]
    if unknown:
        raise InputError(path, f"unknown CAERS header columns {unknown}", line=1)
    columns = [_HEADER_INDEX[_key(n)][0] for n in names]
    dupes = sorted({c for c in columns if columns.count(c) > 1})
    if dupes:
        raise InputError(path, f"header names these columns twice: {dupes}", line=1)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        wanted = [COLUMNS[c][0] for c in missing]
        raise InputError(path, f"not a CAERS export: no column {wanted} in the header", line=1)
    return tuple(names), columns, after


def _layout(names: tuple[str, ...]) -> str:
    spellings = {_HEADER_INDEX[_key(n)][1] for n in names}
    if len(spellings) != 1:
        return "mixed"
    (spelling,) = spellings
    return next(k for k, v in LAYOUTS.items() if v == spelling)


def read_file(path: Path) -> CaersFile:
    """Read one CAERS CSV export: every record after the header is kept or quarantined."""
    data = _read_bytes(path)
    try:
        text, encoding = data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = data.decode("latin-1"), "latin-1"  # lossless for every byte
    records = _records(_lines(text))
    names, columns, pending = _header(path, records)
    good: list[list[Any]] = []
    bad: list[tuple[int, str, str]] = []
    n_read = 0
    rid = columns.index("report_id")
    for start, raw, fields, error in itertools.chain([pending] if pending else [], records):
        n_read += 1
        if error is not None or fields is None:
            bad.append((start, raw, error or "malformed CSV"))
        elif not fields or (len(fields) == 1 and not fields[0].strip()):
            bad.append((start, raw, "blank line"))
        elif len(fields) != len(columns):
            bad.append((start, raw, f"expected {len(columns)} fields, found {len(fields)}"))
        elif not fields[rid].strip():
            bad.append((start, raw, "empty report id"))
        else:
            good.append([start, *(f if f != "" else None for f in fields)])
    rows = pd.DataFrame(good, columns=["source_line", *columns], dtype=object)
    for c in COLUMNS:
        if c not in rows:
            rows[c] = None
    rows = rows[["source_line", *COLUMNS]]
    quarantine = pd.DataFrame(bad, columns=["line_number", "raw_text", "reason"])
    synthetic = (
        SYNTHETIC_MARKERS[0] in path.name.upper() or (path.parent / SYNTHETIC_MARKERS[1]).exists()
    )
    return CaersFile(
        path,
        hashlib.sha256(data).hexdigest(),
        _layout(names),
        names,
        encoding,
        rows,
        quarantine,
        n_read,
        synthetic,
    )


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except IsADirectoryError as e:
        raise InputError(path, "a folder, not a CAERS CSV file") from e
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from e


# --- loading ---------------------------------------------------------------------------------


def load(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    progress: Callable[[str], None] | None = None,
) -> list[CaersLoad]:
    """Load CAERS CSV exports (or folders of them) in one transaction, then rebuild the CAERS
    clean tables and the built-in substances' matches in it. Every file is read and checked
    before the database is touched; loading a file of the same name again replaces it."""
    files = find_files(paths)
    names = [f.name for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(", ".join(twice), "two files of the same name in one load")
    read = []
    for f in files:
        if progress:
            progress(f"reading CAERS export {f}")
        read.append(read_file(f))
    ensure_tables(con)
    results = []
    con.execute("BEGIN TRANSACTION")
    try:
        for cf in read:
            results.append(_insert(con, cf))
        if progress:
            progress("rebuilding the CAERS clean tables")
        rebuild(con)
        for name in builtin_names():
            _extract(con, load_substance(name))
        con.execute("COMMIT")
    except BaseException as e:
        with suppress(duckdb.Error):
            con.execute("ROLLBACK")
        if isinstance(e, duckdb.Error):
            raise DatabaseError(
                f"{_first_line(e)} while loading CAERS {', '.join(names)}; nothing was loaded "
                "(the database is as it was before)"
            ) from e
        raise
    return results


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[0].strip() if lines else type(e).__name__


def _insert(con: duckdb.DuckDBPyConnection, cf: CaersFile) -> CaersLoad:
    """Replace one file's rows, quarantine and log entry; check rows read = loaded + quarantined."""
    file = cf.path.name
    for table, column in (("caers_raw", "source_file"), ("caers_quarantine", "file")):
        con.execute(f"DELETE FROM {table} WHERE {column} = $f", {"f": file})  # noqa: S608
    con.execute("DELETE FROM caers_load_log WHERE file = $f", {"f": file})
    con.register("_caers_frame", cf.rows)
    con.register("_caers_bad", cf.quarantine)
    try:
        con.execute(
            f"INSERT INTO caers_raw SELECT $f, source_line, {', '.join(COLUMNS)} "  # noqa: S608
            "FROM _caers_frame",
            {"f": file},
        )
        con.execute(
            "INSERT INTO caers_quarantine SELECT $f, line_number, raw_text, reason FROM _caers_bad",
            {"f": file},
        )
    finally:
        con.unregister("_caers_frame")
        con.unregister("_caers_bad")
    counts = con.execute(
        "SELECT (SELECT count(*) FROM caers_raw WHERE source_file = $f), "
        "(SELECT count(*) FROM caers_quarantine WHERE file = $f), "
        "(SELECT coalesce(max(load_seq), 0) + 1 FROM caers_load_log)",
        {"f": file},
    ).fetchone()
    assert counts is not None
    loaded, quarantined, seq = (int(x) for x in counts)
    if loaded + quarantined != cf.rows_read:
        raise SurveillanceError(
            f"{cf.path}: internal accounting error: read {cf.rows_read} rows, loaded {loaded}, "
            f"quarantined {quarantined}"
        )
    con.execute(
        "INSERT INTO caers_load_log VALUES ($f, $path, $sha, $layout, $header, $encoding, "
        "$read, $loaded, $quarantined, $synthetic, $seq, $version, $now)",
        {
            "f": file,
            "path": str(cf.path.resolve()),
            "sha": cf.sha256,
            "layout": cf.layout,
            "header": json.dumps(cf.header, ensure_ascii=False),
            "encoding": cf.encoding,
            "read": cf.rows_read,
            "loaded": loaded,
            "quarantined": quarantined,
            "synthetic": cf.synthetic,
            "seq": seq,
            "version": __version__,
            "now": datetime.now(UTC).replace(tzinfo=None),
        },
    )
    return CaersLoad(file, cf.path, cf.sha256, cf.layout, cf.rows_read, loaded, quarantined)


def rebuild(con: duckdb.DuckDBPyConnection) -> None:
    """Derive the CAERS clean tables from `caers_raw` (inside the caller's transaction)."""
    ensure_macros(con)
    units = pd.DataFrame(list(AGE_UNITS.items()), columns=["unit", "code"])
    flags = pd.DataFrame(list(OUTCOME_FLAGS.items()), columns=["outcome", "flag"])
    con.register("_caers_age_units", units)
    con.register("_caers_outcome_flags", flags)
    try:
        for statement in (_ROWS, _PRODUCTS, _REACTIONS, _OUTCOMES, _CASES):
            con.execute(statement)
    finally:
        con.unregister("_caers_age_units")
        con.unregister("_caers_outcome_flags")
    con.execute("DROP TABLE _caers_rows")
    con.execute("DELETE FROM caers_substance_hits")
    con.execute("DELETE FROM caers_substance_runs")


def fingerprint(con: duckdb.DuckDBPyConnection) -> str:
    """sha256 naming the loaded CAERS files (name, checksum, load order): the CAERS vintage."""
    rows = con.execute(
        "SELECT file, sha256, load_seq FROM caers_load_log ORDER BY load_seq"
    ).fetchall()
    return hashlib.sha256(json.dumps([list(map(str, r)) for r in rows]).encode()).hexdigest()


# --- substances ------------------------------------------------------------------------------

_HITS = """INSERT INTO caers_substance_hits
    SELECT $s, p.report_id, p.product_seq, p.product_role, p.product_name, m.rule, m.term
    FROM caers_products p JOIN _caers_matches m ON m.string = p.product_name"""


def _extract(con: duckdb.DuckDBPyConnection, substance: Substance) -> None:
    """Match the substance's term file on every distinct product name (as FAERS drugname);
    replace its hits and run row (inside the caller's transaction)."""
    params = {"s": substance.name}
    names = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT product_name FROM caers_products WHERE product_name IS NOT NULL"
        ).fetchall()
    ]
    hits = substance.match_many(names, field="drugname")
    frame = pd.DataFrame(
        [(s, m.rule, m.term) for s, m in hits.items()], columns=["string", "rule", "term"]
    )
    con.execute("DELETE FROM caers_substance_hits WHERE substance = $s", params)
    con.execute("DELETE FROM caers_substance_runs WHERE substance = $s", params)
    con.register("_caers_matches", frame)
    try:
        con.execute(_HITS, params)
    finally:
        con.unregister("_caers_matches")
    con.execute(
        """INSERT INTO caers_substance_runs
        SELECT $s, $v, $p, $n, count(*), count(DISTINCT report_id), $data, $now
        FROM caers_substance_hits WHERE substance = $s""",
        params
        | {
            "v": substance.version,
            "p": substance.source_path,
            "n": len(frame),
            "data": fingerprint(con),
            "now": datetime.now(UTC).replace(tzinfo=None),
        },
    )


def ensure_matched(con: duckdb.DuckDBPyConnection, substance: Substance) -> None:
    """Match the substance on the CAERS products unless hits from this term-file version and
    the loaded CAERS files are stored."""
    _require(con)
    ensure_tables(con)
    row = con.execute(
        "SELECT count(*) FROM caers_substance_runs WHERE substance = $s AND version = $v "
        "AND source_path = $p AND data_fingerprint = $d",
        {
            "s": substance.name,
            "v": substance.version,
            "p": substance.source_path,
            "d": fingerprint(con),
        },
    ).fetchone()
    if row and row[0]:
        return
    con.execute("BEGIN TRANSACTION")
    try:
        _extract(con, substance)
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def caers_roles(roles: str | None) -> list[str] | None:
    """A FAERS role filter as CAERS product roles (PS, SS -> SUSPECT; C -> CONCOMITANT); None
    means any role. Interacting (I) alone has no CAERS counterpart and is refused."""
    parsed = roles_option(roles)
    if parsed is None:
        return None
    mapped = sorted({ROLE_MAP[r] for r in parsed.split(",") if r in ROLE_MAP})
    if not mapped:
        raise UsageError("--roles: CAERS products are Suspect or Concomitant; use PS,SS or C")
    return mapped


# Reports whose products match the substance in the counted roles (NULL roles: any).
_INVOLVED = """SELECT DISTINCT report_id FROM caers_substance_hits
    WHERE substance = $s AND ($roles IS NULL OR list_contains($roles, product_role))"""
_CASE_LIST = f"""WITH involved AS ({_INVOLVED}),
    products AS (
        SELECT p.report_id,
            list(p.product_name || ' (' || coalesce(p.product_role, '?') || ')'
                 ORDER BY p.product_seq) AS products
        FROM caers_products p JOIN involved USING (report_id) GROUP BY p.report_id),
    matched AS (
        SELECT h.report_id, list(DISTINCT h.product_name ORDER BY h.product_name) AS matched
        FROM caers_substance_hits h JOIN involved USING (report_id)
        WHERE h.substance = $s AND ($roles IS NULL OR list_contains($roles, h.product_role))
        GROUP BY h.report_id),
    terms AS (
        SELECT r.report_id, list(r.pt ORDER BY r.pt) AS terms
        FROM caers_reactions r JOIN involved USING (report_id) GROUP BY r.report_id),
    outcomes AS (
        SELECT o.report_id, list(o.outcome ORDER BY o.outcome) AS outcomes
        FROM caers_outcomes o JOIN involved USING (report_id) GROUP BY o.report_id)
    SELECT c.report_id, c.created_date, c.event_start_date, c.age_years, c.age_group, c.sex,
        m.matched, p.products, t.terms, o.outcomes, c.serious, c.source_file
    FROM caers_cases c
    JOIN involved USING (report_id)
    LEFT JOIN products p USING (report_id)
    LEFT JOIN matched m USING (report_id)
    LEFT JOIN terms t USING (report_id)
    LEFT JOIN outcomes o USING (report_id)
    WHERE ($since IS NULL OR quarter_of(c.created_date) >= $since)
      AND ($until IS NULL OR quarter_of(c.created_date) <= $until)
      AND ($term IS NULL OR EXISTS (SELECT 1 FROM caers_reactions x
          WHERE x.report_id = c.report_id AND contains(x.pt_key, upper($term))))
    ORDER BY c.created_date NULLS LAST, c.report_id"""  # noqa: S608 - constant text
_QUARTER_OF = (
    "CREATE OR REPLACE MACRO quarter_of(d) AS "
    "CAST(year(d) AS VARCHAR) || 'Q' || CAST(quarter(d) AS VARCHAR)"
)


def cases(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
) -> pd.DataFrame:
    """One row per CAERS report with a product matching the substance (any role unless
    `roles`), filtered on the quarter of its CAERS created date and on a term's text."""
    in_roles = caers_roles(roles)
    ensure_matched(con, substance)
    con.execute(_QUARTER_OF)
    return con.execute(
        _CASE_LIST,
        {
            "s": substance.name,
            "roles": in_roles,
            "since": quarter_option(since, "--since"),
            "until": quarter_option(until, "--until"),
            "term": term,
        },
    ).fetchdf()


# --- signals ---------------------------------------------------------------------------------

_CELLS = f"""WITH involved AS ({_INVOLVED})
    SELECT r.pt_key, 'all' AS stratum, count(*) AS n_term, count(i.report_id) AS a
    FROM caers_reactions r LEFT JOIN involved i USING (report_id)
    GROUP BY r.pt_key HAVING count(i.report_id) > 0 ORDER BY r.pt_key"""  # noqa: S608
_STRATA = f"""SELECT 'all' AS stratum, count(*) AS n,
        count(*) FILTER (WHERE report_id IN ({_INVOLVED})) AS n_exposed
    FROM caers_cases"""  # noqa: S608
# Product-by-term pairs for the prior: each product as its reported name upper-cased, the
# substance's matching products as the substance itself; n = reports with both.
_PAIRS = """WITH products AS (
        SELECT DISTINCT p.report_id,
            CASE WHEN h.report_id IS NOT NULL THEN $label
                 ELSE upper(trim(p.product_name)) END AS product
        FROM caers_products p
        LEFT JOIN caers_substance_hits h ON h.substance = $s AND h.report_id = p.report_id
            AND h.product_seq = p.product_seq
        WHERE ($roles IS NULL OR list_contains($roles, p.product_role))
          AND p.product_name IS NOT NULL),
    pairs AS (SELECT p.product, r.pt_key, count(*) AS n
        FROM products p JOIN caers_reactions r USING (report_id) GROUP BY ALL),
    product_tot AS (SELECT product, count(*) AS n_i FROM products GROUP BY product),
    term_tot AS (SELECT pt_key, count(*) AS n_j FROM caers_reactions GROUP BY pt_key)
    SELECT x.n, i.n_i * j.n_j / (SELECT count(*) FROM caers_cases) AS e
    FROM pairs x JOIN product_tot i USING (product) JOIN term_tot j USING (pt_key)"""


def counts(con: duckdb.DuckDBPyConnection, substance: Substance, roles: list[str] | None) -> Counts:
    """The 2x2 counts of every CAERS symptom term against the substance, in the form the FAERS
    statistics take (`signals.Counts`), with the product-by-term pairs for the prior."""
    params = {"s": substance.name, "roles": roles}
    exposed = frozenset(r[0] for r in con.execute(_INVOLVED, params).fetchall())
    names = dict(
        con.execute("SELECT pt_key, min(pt) FROM caers_reactions GROUP BY pt_key").fetchall()
    )

    def pairs() -> tuple[Any, Any]:
        found = con.execute(_PAIRS, params | {"label": f"[{substance.name}]"}).fetchnumpy()
        return np.asarray(found["n"], dtype=float), np.asarray(found["e"], dtype=float)

    return Counts(
        con.execute(_STRATA, params).fetchdf(),
        con.execute(_CELLS, params).fetchdf(),
        exposed,
        names,
        pairs,
    )


def signals(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None = None,
    min_cases: int = 3,
    sort: str | None = None,
) -> SignalRun:
    """Product-level disproportionality within CAERS: a = reports with the substance's product
    and the term, b = with it without the term, c = without it with the term, d = neither;
    statistics by `stats` as for FAERS, EBGM under a prior fitted on CAERS product-by-term
    pairs (unavailable when that fit does not converge). Never pooled with FAERS."""
    if min_cases < 1:
        raise UsageError("--min-cases must be at least 1")
    in_roles = caers_roles(roles)
    ensure_matched(con, substance)
    found = counts(con, substance, in_roles)
    if not found.exposed:
        in_r = f" in roles {','.join(in_roles)}" if in_roles else ""
        raise NoDataError(f"no CAERS reports with a {substance.name} product{in_r}")
    through = latest_quarter(con)
    data = fingerprint(con)
    parsed = parse_roles(roles)
    key = ["caers", data, substance.name, substance.version, in_roles, __version__]
    for ddl in _SIGNAL_DDL[:1]:
        ensure_derived_table(con, ddl)
    n, e = found.pairs()
    if int((n >= 1).sum()) < MIN_PAIRS:
        nan = float("nan")
        why = f"not converged: {int((n >= 1).sum())} product-term pairs, fewer than {MIN_PAIRS}"
        prior = stats.Prior(nan, nan, nan, nan, nan, nan, False, len(n), 0, why)
    else:
        key_hash = hashlib.sha256(json.dumps(key).encode()).hexdigest()
        prior = fitted_prior(con, key_hash, lambda: (n, e))
    return signal_run(found, prior, substance, through, parsed, (), min_cases, sort, data)


def latest_quarter(con: duckdb.DuckDBPyConnection) -> str:
    """The quarter of the latest CAERS created date loaded ('CAERS' when no date parses)."""
    row = con.execute("SELECT max(created_date) FROM caers_cases").fetchone()
    if not row or row[0] is None:
        return "CAERS"
    d = row[0]
    return f"{d.year}Q{(d.month - 1) // 3 + 1}"


# --- FAERS and CAERS side by side ------------------------------------------------------------

_FAERS_BY_YEAR = """SELECT CAST(left(c.initial_quarter, 4) AS INTEGER) AS year,
        count(*) AS n_cases
    FROM cases c WHERE c.caseid IN (SELECT caseid FROM involved_cases($s, $roles))
    GROUP BY ALL"""
_FAERS_QUARTERS = """SELECT CAST(left(quarter, 4) AS INTEGER) AS year, count(*) AS n_quarters
    FROM quarters GROUP BY ALL"""
_FAERS_TERMS = """SELECT r.pt AS term, count(DISTINCT r.caseid) AS n
    FROM case_reactions r WHERE r.caseid IN (SELECT caseid FROM involved_cases($s, $roles))
    GROUP BY r.pt ORDER BY n DESC, term LIMIT $k"""
_CAERS_BY_YEAR = f"""SELECT created_year AS year, count(*) AS n_reports FROM caers_cases
    WHERE report_id IN ({_INVOLVED}) AND created_year IS NOT NULL GROUP BY ALL"""  # noqa: S608
_CAERS_TERMS = f"""SELECT min(r.pt) AS term, count(*) AS n FROM caers_reactions r
    WHERE r.report_id IN ({_INVOLVED})
    GROUP BY r.pt_key ORDER BY n DESC, term LIMIT $k"""  # noqa: S608


@dataclass(frozen=True)
class SideBySide:
    """A substance's FAERS cases and CAERS reports, by year and top terms, side by side.

    by_year: year, faers_cases (NULL: no FAERS quarter of that year loaded and no case),
    faers_quarters_loaded, caers_reports (NULL: outside the years the CAERS exports cover);
    top_terms: rank, faers_term, faers_cases, faers_share, caers_term, caers_reports,
    caers_share (shares of the substance's cases / reports in each source)."""

    substance: str
    by_year: pd.DataFrame
    top_terms: pd.DataFrame
    n_faers_cases: int | None  # None: no FAERS quarter loaded
    n_caers_reports: int
    caveat: str = (
        "FAERS counts deduplicated cases by year of initial FDA receipt; CAERS counts reports by "
        "CAERS created date. Two systems, never pooled: a report may be in both."
    )


def caers_side_by_side(
    con: duckdb.DuckDBPyConnection,
    substance: Substance | str,
    roles: str | None = None,
    top: int = 10,
) -> SideBySide:
    """FAERS case counts and CAERS report counts of a substance by year, and the top terms of
    each, side by side (for the report's CAERS panel). FAERS is read from the clean layer,
    which must be current (the caller's freshness check); CAERS must be loaded."""
    chosen = load_substance(substance) if isinstance(substance, str) else substance
    in_roles = caers_roles(roles)
    ensure_matched(con, chosen)
    faers_params = {"s": chosen.name, "roles": parse_roles(roles)}
    caers_params = {"s": chosen.name, "roles": in_roles}
    caers_years = con.execute(_CAERS_BY_YEAR, caers_params).fetchdf()
    span = con.execute("SELECT min(created_year), max(created_year) FROM caers_cases").fetchone()
    faers_loaded = has_table(con, "cases") and has_table(con, "quarters")
    if faers_loaded:
        ensure_extracted(con, chosen)
        faers_years = con.execute(_FAERS_BY_YEAR, faers_params).fetchdf()
        quarters = con.execute(_FAERS_QUARTERS).fetchdf()
        faers_terms = con.execute(_FAERS_TERMS, faers_params | {"k": top}).fetchdf()
        n_faers: int | None = int(
            con.execute("SELECT count(*) FROM involved_cases($s, $roles)", faers_params).fetchone()[
                0
            ]  # type: ignore[index]
        )
    else:
        faers_years = pd.DataFrame({"year": [], "n_cases": []})
        quarters = pd.DataFrame({"year": [], "n_quarters": []})
        faers_terms = pd.DataFrame({"term": [], "n": []})
        n_faers = None
    n_caers = len(con.execute(_INVOLVED, caers_params).fetchall())
    years = set(faers_years["year"]) | set(quarters["year"]) | set(caers_years["year"])
    if span and span[0] is not None:
        years |= set(range(int(span[0]), int(span[1]) + 1))
    rows = []
    f_cases = dict(zip(faers_years["year"], faers_years["n_cases"], strict=True))
    f_quarters = dict(zip(quarters["year"], quarters["n_quarters"], strict=True))
    c_reports = dict(zip(caers_years["year"], caers_years["n_reports"], strict=True))
    for year in sorted(int(y) for y in years):
        n_q = int(f_quarters.get(year, 0))
        f = f_cases.get(year)
        covered = bool(span and span[0] is not None and span[0] <= year <= span[1])
        rows.append(
            (
                year,
                int(f) if f is not None else (0 if n_q else None),
                n_q,
                int(c_reports.get(year, 0)) if covered else None,
            )
        )
    by_year = pd.DataFrame(
        rows, columns=["year", "faers_cases", "faers_quarters_loaded", "caers_reports"]
    ).astype({"faers_cases": "Int64", "caers_reports": "Int64"})
    caers_terms = con.execute(_CAERS_TERMS, caers_params | {"k": top}).fetchdf()
    n_rows = max(len(faers_terms), len(caers_terms))
    top_terms = pd.DataFrame({"rank": range(1, n_rows + 1)})
    for prefix, terms, total in (
        ("faers", faers_terms, n_faers),
        ("caers", caers_terms, n_caers),
    ):
        unit = "cases" if prefix == "faers" else "reports"
        padded = terms.reindex(range(n_rows))
        top_terms[f"{prefix}_term"] = padded["term"].astype(object).to_numpy()
        top_terms[f"{prefix}_{unit}"] = padded["n"].astype("Int64").to_numpy()
        top_terms[f"{prefix}_share"] = (
            padded["n"].astype(float) / total if total else padded["n"].astype(float) * np.nan
        ).to_numpy()
    return SideBySide(chosen.name, by_year, top_terms, n_faers, n_caers)

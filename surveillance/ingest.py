"""Load FAERS/LAERS quarterly ASCII zips into the raw layer, losing nothing.

Reads each table straight out of the zip (through an fsspec zip filesystem registered with
DuckDB), maps each era's header onto the canonical columns of `faers_format.CANONICAL`, and
writes `raw_*`, `raw_deleted`, `quarantine`, `load_log` and `quarters`. Every physical line after
the header is either loaded or quarantined with its raw text and reason; nothing is repaired.
One transaction per quarter: a failure rolls back to the database as it was, and loading a
quarter again replaces it.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import fsspec

from . import __version__
from .db import raw_table
from .errors import InputError, SurveillanceError
from .faers_format import (
    CANONICAL,
    DELETED_MEMBER,
    TABLE_MEMBER,
    TABLES,
    Quarter,
    canonical_name,
    has_trailing_dollar,
)
from .freshness import quarters_fingerprint as quarters_fingerprint  # clean imports it here

SYNTHETIC_MARKER = "README_SYNTHETIC.txt"

# Read every physical line as one VARCHAR: no quoting, no escapes, no type sniffing, latin-1
# (lossless for any byte). CRLF and bare LF both end a line; blank lines come through as NULL.
# Staged outside the quarter's transaction, so that rowid counts lines from 0 (rows written inside
# an open transaction get provisional rowids).
_STAGE = "_surveillance_stage"
_READ_LINES = """
CREATE OR REPLACE TABLE STAGE_TABLE AS
SELECT line, length(line) - length(replace(line, '$', '')) + 1 AS n_fields
FROM read_csv($path, columns = {'line': 'VARCHAR'}, delim = chr(1), header = false,
    quote = '', escape = '', auto_detect = false, strict_mode = false, encoding = 'latin-1')
"""


@dataclass(frozen=True)
class QuarterZip:
    """One quarterly zip, inspected but not yet loaded."""

    path: Path
    quarter: Quarter
    members: dict[str, str]  # FAERS table -> member name
    deleted_member: str | None
    synthetic: bool
    sizes: dict[str, int]  # table -> uncompressed bytes, to read the largest first


@dataclass
class QuarterLoad:
    """What loading one quarter did, per file."""

    quarter: str
    zip_path: Path
    sha256: str
    files: list[dict[str, object]] = field(default_factory=list)

    @property
    def rows_loaded(self) -> int:
        return sum(int(f["rows_loaded"]) for f in self.files)  # type: ignore[call-overload]

    @property
    def rows_quarantined(self) -> int:
        return sum(int(f["rows_quarantined"]) for f in self.files)  # type: ignore[call-overload]


def find_zips(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into the .zip files they hold; keep files as given."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found.extend(sorted(x for x in p.iterdir() if x.suffix.lower() == ".zip"))
        elif p.exists():
            found.append(p)
        else:
            raise InputError(p, "no such file or folder")
    if not found:
        raise InputError(", ".join(map(str, paths)), "no .zip files found")
    return found


def inspect_zip(path: Path) -> QuarterZip:
    """Open a zip, find its FAERS members and quarter; raise InputError if it is not one."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            byte_sizes = {i.filename: i.file_size for i in zf.infolist()}
    except zipfile.BadZipFile as e:
        raise InputError(path, f"not a valid zip file ({e})") from e
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from e
    members: dict[str, str] = {}
    quarters: set[Quarter] = set()
    deleted = None
    for name in names:
        if m := TABLE_MEMBER.search(name):
            table = m.group(1).lower()
            if table in members:
                raise InputError(path, f"two members for table {table}: {members[table]}, {name}")
            members[table] = name
            quarters.add(Quarter(2000 + int(m.group(2)), int(m.group(3))))
        elif m := DELETED_MEMBER.search(name):
            deleted = name
            quarters.add(Quarter(2000 + int(m.group(1)), int(m.group(2))))
    if not members:
        raise InputError(path, "no FAERS tables (DEMO/DRUG/REAC/OUTC/RPSR/THER/INDI) in this zip")
    if len(quarters) != 1:
        raise InputError(path, f"members from several quarters: {sorted(map(str, quarters))}")
    missing = [t for t in TABLES if t not in members]
    if missing:
        raise InputError(path, f"missing FAERS tables: {', '.join(missing)}")
    synthetic = any(n.rsplit("/", 1)[-1] == SYNTHETIC_MARKER for n in names)
    sizes = {t: byte_sizes[m] for t, m in members.items()}
    return QuarterZip(path, quarters.pop(), members, deleted, synthetic, sizes)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, streamed."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load(
    con: duckdb.DuckDBPyConnection,
    paths: Iterable[str | Path],
    progress: Callable[[str], None] | None = None,
) -> list[QuarterLoad]:
    """Load zips (or folders of zips), one transaction per quarter, oldest quarter first."""
    zips = [inspect_zip(p) for p in find_zips(paths)]
    by_quarter: dict[Quarter, QuarterZip] = {}
    for z in zips:
        if z.quarter in by_quarter:
            raise InputError(z.path, f"quarter {z.quarter} also in {by_quarter[z.quarter].path}")
        by_quarter[z.quarter] = z
    results = []
    for q in sorted(by_quarter):
        if progress:
            progress(f"loading {q} from {by_quarter[q].path}")
        results.append(load_quarter(con, by_quarter[q]))
    return results


def load_quarter(con: duckdb.DuckDBPyConnection, qz: QuarterZip) -> QuarterLoad:
    """Replace one quarter in the raw layer inside a single transaction."""
    result = QuarterLoad(str(qz.quarter), qz.path, sha256_file(qz.path))
    con.execute(f"ATTACH ':memory:' AS {_STAGE}")
    try:
        staged = _stage(con, qz)
        con.execute("BEGIN TRANSACTION")
        try:
            _delete_quarter(con, str(qz.quarter))
            for s in staged:
                if s.table == "deleted":
                    _insert_deleted(con, qz, s)
                else:
                    _insert_table(con, qz, s)
                result.files.append(_count(con, qz, s))
            _record(con, qz, result)
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    finally:
        con.execute(f"DETACH {_STAGE}")
    return result


@dataclass(frozen=True)
class _Staged:
    """One member read into a staging table of lines, header checked."""

    table: str  # a FAERS table, or 'deleted'
    member: str
    lines: str  # name of the staging table holding its physical lines
    rows_read: int  # physical lines after the header
    columns: tuple[str, ...]  # canonical names, in header order


def _stage(con: duckdb.DuckDBPyConnection, qz: QuarterZip) -> list[_Staged]:
    """Read every member of the zip before touching the database; fail on any bad member.

    Members are read two at a time (one cursor each) into an in-memory staging database:
    decompression and parsing then overlap on the two cores."""
    members = dict(qz.members)
    if qz.deleted_member:
        members["deleted"] = qz.deleted_member
    fs = fsspec.filesystem("zip", fo=str(qz.path))
    con.register_filesystem(fs)
    try:
        largest_first = sorted(members, key=lambda t: -qz.sizes.get(t, 0))
        with ThreadPoolExecutor(max_workers=2) as pool:
            counts = dict(
                zip(
                    largest_first,
                    pool.map(lambda t: _read_lines(con.cursor(), qz, t, members[t]), largest_first),
                    strict=True,
                )
            )
    finally:
        con.unregister_filesystem("zip")
    staged: list[_Staged] = []
    for table, member in members.items():
        lines = f"{_STAGE}.lines_{table}"
        if table == "deleted":
            staged.append(_Staged(table, member, lines, counts[table], ()))
            continue
        if counts[table] == 0:
            raise InputError(f"{qz.path}:{member}", "empty file (no header)")
        columns = _header(con, qz, table, member, lines)
        staged.append(_Staged(table, member, lines, counts[table] - 1, columns))
    return staged


def _delete_quarter(con: duckdb.DuckDBPyConnection, quarter: str) -> None:
    tables = [raw_table(t) for t in TABLES] + ["raw_deleted", "quarantine", "load_log", "quarters"]
    for t in tables:
        con.execute(f"DELETE FROM {t} WHERE quarter = $q", {"q": quarter})  # noqa: S608 - fixed names


def _read_lines(cursor: duckdb.DuckDBPyConnection, qz: QuarterZip, name: str, member: str) -> int:
    """Read one member into the staging table lines_<name>; return its number of lines."""
    table = f"{_STAGE}.lines_{name}"
    try:
        with cursor:
            cursor.execute(_READ_LINES.replace("STAGE_TABLE", table), {"path": f"zip://{member}"})
            row = cursor.execute(f"SELECT count(*) FROM {table}").fetchone()  # noqa: S608
    except duckdb.Error as e:
        raise InputError(
            f"{qz.path}:{member}", f"cannot read (corrupt or truncated zip?): {_first_line(e)}"
        ) from e
    return int(row[0]) if row else 0


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _header(
    con: duckdb.DuckDBPyConnection, qz: QuarterZip, table: str, member: str, lines: str
) -> tuple[str, ...]:
    """Canonical column names of a member's header, or InputError naming unexpected columns."""
    row = con.execute(f"SELECT line FROM {lines} WHERE rowid = 0").fetchone()  # noqa: S608
    if not row or not row[0] or "$" not in row[0]:
        raise InputError(f"{qz.path}:{member}", "no '$'-delimited header line", line=1)
    names = [canonical_name(table, h) for h in row[0].split("$")]
    unknown = [n for n in names if n not in CANONICAL[table]]
    if unknown:
        raise InputError(
            f"{qz.path}:{member}", f"unknown header layout: unexpected columns {unknown}", line=1
        )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise InputError(f"{qz.path}:{member}", f"duplicate header columns {dupes}", line=1)
    if names[0] != "primaryid":
        raise InputError(f"{qz.path}:{member}", "header does not start with primaryid/ISR", line=1)
    return tuple(names)


def _insert_table(con: duckdb.DuckDBPyConnection, qz: QuarterZip, s: _Staged) -> None:
    """Insert the well-formed lines of one member; quarantine the others with a reason."""
    n = len(s.columns)
    # n_fields was counted while staging (count of '$' + 1).
    if has_trailing_dollar(qz.quarter.source, s.table):
        ok = f"(n_fields = {n + 1} AND ends_with(line, '$'))"
        expect = f"{n + 1} fields (with the trailing $)"
    elif qz.quarter.source == "LAERS":  # LAERS INDI: trailing '$' seen absent; accept either
        ok = f"(n_fields = {n} OR (n_fields = {n + 1} AND ends_with(line, '$')))"
        expect = f"{n} fields"
    else:
        ok = f"n_fields = {n}"
        expect = f"{n} fields"
    good = f"line IS NOT NULL AND {ok}"  # a blank line never has the right field count
    has_key = "NOT starts_with(line, '$')"  # primaryid/ISR is the first column of every layout
    params = {"source": qz.quarter.source, "quarter": str(qz.quarter), "file": s.member}
    target = ", ".join(s.columns)
    values = ", ".join(f"nullif(f[{i + 1}], '')" for i in range(n))
    # Identifiers come from CANONICAL via _header's check, never from the data.
    con.execute(
        f"""INSERT INTO {raw_table(s.table)} (source, quarter, source_file, source_line, {target})
        SELECT $source, $quarter, $file, source_line, {values}
        FROM (SELECT rowid + 1 AS source_line, string_split(line, '$') AS f
              FROM {s.lines} WHERE rowid > 0 AND {good} AND {has_key})""",  # noqa: S608
        params,
    )
    con.execute(
        f"""INSERT INTO quarantine
            (quarter, source, file, table_name, line_number, raw_text, reason)
        SELECT $quarter, $source, $file, $table, rowid + 1, coalesce(line, ''),
            CASE WHEN line IS NULL OR trim(line) = '' THEN 'blank line'
                 WHEN NOT ({ok}) THEN 'expected {expect}, found ' || n_fields
                 ELSE 'empty primaryid' END
        FROM {s.lines}
        WHERE rowid > 0 AND NOT ({good} AND {has_key})""",  # noqa: S608
        {**params, "table": s.table},
    )


def _insert_deleted(con: duckdb.DuckDBPyConnection, qz: QuarterZip, s: _Staged) -> None:
    """Caseids of the deleted list; blank and non-numeric lines go to quarantine."""
    params = {"source": "FAERS", "quarter": str(qz.quarter), "file": s.member}
    is_caseid = "regexp_full_match(trim(coalesce(line, '')), '[0-9]+')"
    con.execute(
        f"""INSERT INTO raw_deleted (source, quarter, source_file, source_line, caseid)
        SELECT $source, $quarter, $file, rowid + 1, trim(line) FROM {s.lines}
        WHERE {is_caseid}""",  # noqa: S608
        params,
    )
    con.execute(
        f"""INSERT INTO quarantine
            (quarter, source, file, table_name, line_number, raw_text, reason)
        SELECT $quarter, $source, $file, 'deleted', rowid + 1, coalesce(line, ''),
            CASE WHEN trim(coalesce(line, '')) = '' THEN 'blank line' ELSE 'not a caseid' END
        FROM {s.lines} WHERE NOT {is_caseid}""",  # noqa: S608
        params,
    )


def _count(con: duckdb.DuckDBPyConnection, qz: QuarterZip, s: _Staged) -> dict[str, object]:
    """Count what one member produced and check that rows read = loaded + quarantined."""
    target = "raw_deleted" if s.table == "deleted" else raw_table(s.table)
    params = {"q": str(qz.quarter), "file": s.member}
    loaded_row = con.execute(
        f"SELECT count(*) FROM {target} WHERE quarter = $q AND source_file = $file",  # noqa: S608
        params,
    ).fetchone()
    quarantined_row = con.execute(
        "SELECT count(*) FROM quarantine WHERE quarter = $q AND file = $file", params
    ).fetchone()
    loaded = int(loaded_row[0]) if loaded_row else 0
    quarantined = int(quarantined_row[0]) if quarantined_row else 0
    if loaded + quarantined != s.rows_read:
        raise SurveillanceError(
            f"{qz.path}:{s.member}: internal accounting error: read {s.rows_read} rows, "
            f"loaded {loaded}, quarantined {quarantined}"
        )
    return {
        "file": s.member,
        "table_name": s.table,
        "rows_read": s.rows_read,
        "rows_loaded": loaded,
        "rows_quarantined": quarantined,
    }


def _record(con: duckdb.DuckDBPyConnection, qz: QuarterZip, result: QuarterLoad) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for f in result.files:
        con.execute(
            """INSERT INTO load_log VALUES ($quarter, $file, $table_name, $sha, $rows_read,
                $rows_loaded, $rows_quarantined, $version, $now)""",
            {**f, "quarter": result.quarter, "sha": result.sha256}
            | {"version": __version__, "now": now},
        )
    con.execute(
        """INSERT INTO quarters VALUES ($quarter, $era, $source, $zip_path, $zip_name, $sha,
            $bytes, $synthetic, $version, $now)""",
        {
            "quarter": result.quarter,
            "era": qz.quarter.era,
            "source": qz.quarter.source,
            "zip_path": str(qz.path.resolve()),
            "zip_name": qz.path.name,
            "sha": result.sha256,
            "bytes": qz.path.stat().st_size,
            "synthetic": qz.synthetic,
            "version": __version__,
            "now": now,
        },
    )

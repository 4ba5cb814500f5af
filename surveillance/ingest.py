"""Load FAERS/LAERS quarterly ASCII zips into the raw layer, losing nothing.

Reads each table member of the zip as a stream of bytes (Python's zipfile, so the inflated size
can be capped), splits lines at LF only, drops one CR before an LF, decodes latin-1 (lossless for
every byte), maps each era's header onto the canonical columns of `faers_format.CANONICAL`, and
writes `raw_*`, `raw_deleted`, `quarantine`, `load_log` and `quarters`. Every physical line after
the header is either loaded or quarantined with its raw text and reason; nothing is repaired.
One transaction per quarter: a failure rolls back to the database as it was, and loading a
quarter again replaces it. Each quarter is staged (read, split, checked) in memory before its
transaction; the next quarter is staged while one is written.
"""

from __future__ import annotations

import errno
import hashlib
import re
import threading
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import duckdb
import numpy as np
import pandas as pd

from . import __version__
from .db import raw_table
from .errors import DatabaseError, InputError, SurveillanceError
from .faers_format import (
    CANONICAL,
    DELETED_MEMBER,
    TABLE_MEMBER,
    TABLES,
    Quarter,
    ZipLimits,
    canonical_name,
    has_trailing_dollar,
)
from .freshness import quarters_fingerprint as quarters_fingerprint  # clean imports it here

SYNTHETIC_MARKER = "README_SYNTHETIC.txt"

# A line longer than this is never a FAERS record (the longest real ones, lit_ref, are a few KB);
# it goes to quarantine with only its first MAX_LINE_BYTES kept, so memory stays bounded.
MAX_LINE_BYTES = 2 << 20
_CHUNK_BYTES = 8 << 20

# Staged outside the quarter's transaction: every member is read and checked before the database
# is touched. line_no is the 1-based physical line; n_bytes the line's full length (a line over
# MAX_LINE_BYTES is stored cut to that length).
_STAGE = "_surveillance_stage"
_STAGE_DDL = """CREATE OR REPLACE TABLE STAGE_TABLE
    (line_no BIGINT, line VARCHAR, n_bytes BIGINT)"""
_STAGE_BATCH = """INSERT INTO STAGE_TABLE SELECT line_no, line, length(line) FROM BATCH_VIEW"""
_STAGE_LONG = """INSERT INTO STAGE_TABLE SELECT $line_no, $line, $n_bytes"""
# What quarantine keeps of a line, and why an overlong line is there.
_RAW_TEXT = f"left(coalesce(line, ''), {MAX_LINE_BYTES})"
_OVERLONG = (
    f"n_bytes > {MAX_LINE_BYTES}",
    f"'line of ' || n_bytes || ' bytes is over the {MAX_LINE_BYTES}-byte limit; "
    f"raw_text keeps its first {MAX_LINE_BYTES} bytes'",
)


@dataclass(frozen=True)
class QuarterZip:
    """One quarterly zip, inspected but not yet loaded."""

    path: Path
    quarter: Quarter
    members: dict[str, str]  # FAERS table -> member name
    deleted_member: str | None
    synthetic: bool
    sizes: dict[str, int]  # table -> uncompressed bytes, to read the largest first
    compressed: dict[str, int] = field(default_factory=dict)  # member -> compressed bytes


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

    @property
    def warnings(self) -> list[str]:
        """One line per file that loaded with a warning (e.g. a header-only table)."""
        return [f"{f['file']}: {f['warning']}" for f in self.files if f.get("warning")]


class PartialLoadError(SurveillanceError):
    """A multi-quarter load stopped at a failed quarter; the quarters before it stay committed."""

    def __init__(self, cause: SurveillanceError, loaded: list[QuarterLoad], failed: list[str]):
        done = ", ".join(r.quarter for r in loaded) or "none"
        super().__init__(f"{cause}; quarters loaded: {done}; not loaded: {', '.join(failed)}")
        self.cause = cause
        self.loaded = loaded
        self.failed = failed  # the quarter that failed, then those not attempted


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


def inspect_zip(path: Path, limits: ZipLimits | None = None) -> QuarterZip:
    """Open a zip, find its FAERS members and quarter; raise InputError if it is not one.

    Members that would inflate past `limits` (a zip bomb) are refused from the zip directory."""
    limits = limits or ZipLimits.from_env()
    try:
        with zipfile.ZipFile(path) as zf:
            infos = {i.filename: i for i in zf.infolist()}
    except zipfile.BadZipFile as e:
        raise InputError(path, f"not a valid zip file ({e})") from e
    except OSError as e:
        raise InputError(path, f"cannot read: {e.strerror or e}") from e
    members: dict[str, str] = {}
    quarters: set[Quarter] = set()
    deleted = None
    for name in infos:
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
    # A member cannot hold more compressed bytes than the whole zip: bounds a lying header.
    compressed = {n: min(i.compress_size, path.stat().st_size) for n, i in infos.items()}
    for name in [*members.values(), *([deleted] if deleted else [])]:
        problem = limits.problem(infos[name].file_size, compressed[name])
        if problem:
            raise InputError(f"{path}:{name}", f"refused: the zip directory says it {problem}")
    synthetic = any(n.rsplit("/", 1)[-1] == SYNTHETIC_MARKER for n in infos)
    sizes = {t: infos[m].file_size for t, m in members.items()}
    return QuarterZip(path, quarters.pop(), members, deleted, synthetic, sizes, compressed)


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
    limits: ZipLimits | None = None,
) -> list[QuarterLoad]:
    """Load zips (or folders of zips), one transaction per quarter, oldest quarter first.

    A quarter that fails after others were committed (or before others) raises
    PartialLoadError, which lists the quarters loaded and those not loaded."""
    limits = limits or ZipLimits.from_env()
    zips = [inspect_zip(p, limits) for p in find_zips(paths)]
    by_quarter: dict[Quarter, QuarterZip] = {}
    for z in zips:
        if z.quarter in by_quarter:
            raise InputError(z.path, f"quarter {z.quarter} also in {by_quarter[z.quarter].path}")
        by_quarter[z.quarter] = z
    order = sorted(by_quarter)
    results: list[QuarterLoad] = []
    # One quarter ahead: the next quarter is read and staged (inflating and splitting, mostly
    # outside DuckDB) while this one is written, so both cores stay busy; at most two quarters
    # are staged at once.
    stop = threading.Event()  # set when the quarter staged ahead will not be written
    with ThreadPoolExecutor(max_workers=1) as ahead:

        def prepare(i: int) -> Future[_Prepared]:
            return ahead.submit(_prepare, con.cursor(), by_quarter[order[i]], limits, i, stop)

        pending: Future[_Prepared] | None = prepare(0)
        for i, q in enumerate(order):
            if progress:
                progress(f"loading {q} from {by_quarter[q].path}")
            current, pending = pending, (prepare(i + 1) if i + 1 < len(order) else None)
            assert current is not None
            try:
                results.append(_commit(con, current.result()))
            except BaseException as e:
                stop.set()
                _discard(con, current)
                _discard(con, pending)
                if not isinstance(e, SurveillanceError) or len(order) == 1:
                    raise
                raise PartialLoadError(e, results, [str(x) for x in order[i:]]) from e
    return results


def load_quarter(
    con: duckdb.DuckDBPyConnection, qz: QuarterZip, limits: ZipLimits | None = None
) -> QuarterLoad:
    """Replace one quarter in the raw layer inside a single transaction."""
    prepared = _prepare(con.cursor(), qz, limits or ZipLimits.from_env(), 0, threading.Event())
    return _commit(con, prepared)


@dataclass(frozen=True)
class _Prepared:
    """One quarter hashed and staged (in its own in-memory database), not yet written."""

    qz: QuarterZip
    sha256: str
    stage: str  # the attached in-memory database holding its staged lines
    staged: list[_Staged]


def _prepare(
    cursor: duckdb.DuckDBPyConnection,
    qz: QuarterZip,
    limits: ZipLimits,
    n: int,
    stop: threading.Event,
) -> _Prepared:
    """Hash a quarter's zip and stage every member, before the database is touched: any bad
    member fails here. The stage is detached again on failure, or once `stop` is set."""
    sha = sha256_file(qz.path)
    stage = f"{_STAGE}_{n}"
    with cursor:
        db_file = _database_file(cursor)
        try:
            cursor.execute(f"ATTACH ':memory:' AS {stage}")
            try:
                return _Prepared(qz, sha, stage, _stage(cursor, qz, limits, stage, stop))
            except BaseException:
                _detach(cursor, stage)
                raise
        except (duckdb.Error, OSError) as e:
            raise _write_failure(e, db_file, qz) from e


def _commit(con: duckdb.DuckDBPyConnection, prepared: _Prepared) -> QuarterLoad:
    """Replace the prepared quarter in the raw layer in one transaction; detach its stage."""
    qz = prepared.qz
    result = QuarterLoad(str(qz.quarter), qz.path, prepared.sha256)
    db_file = _database_file(con)  # asked first: a fatal write error kills the connection
    try:
        try:
            con.execute("BEGIN TRANSACTION")
            try:
                _delete_quarter(con, str(qz.quarter))
                for s in prepared.staged:
                    if s.table == "deleted":
                        _insert_deleted(con, qz, s)
                    else:
                        _insert_table(con, qz, s)
                    result.files.append(_count(con, qz, s))
                _record(con, qz, result)
                con.execute("COMMIT")
            except BaseException:
                # A rollback that fails too (the connection died with the disk) must not hide
                # the first error.
                with suppress(duckdb.Error):
                    con.execute("ROLLBACK")
                raise
        finally:
            _detach(con, prepared.stage)
    except (duckdb.Error, OSError) as e:
        raise _write_failure(e, db_file, qz) from e
    return result


def _detach(con: duckdb.DuckDBPyConnection, stage: str) -> None:
    with suppress(duckdb.Error):
        con.execute(f"DETACH {stage}")


def _discard(con: duckdb.DuckDBPyConnection, future: Future[_Prepared] | None) -> None:
    """Drop a staged quarter that will not be written: the one staged ahead, or the current one
    when its write failed or was interrupted (waits if it is being staged; a stage already
    detached is left as it is)."""
    if future is None or future.cancel():
        return
    with suppress(BaseException):
        _detach(con, future.result().stage)


def _database_file(con: duckdb.DuckDBPyConnection) -> str:
    row = con.execute(
        "SELECT path FROM duckdb_databases() WHERE database_name = current_database()"
    ).fetchone()
    return str(row[0]) if row and row[0] else "(in-memory database)"


def _write_failure(e: BaseException, db_file: str, qz: QuarterZip) -> SurveillanceError:
    """One line for a failure to write the database or its staging area, naming cause and file."""
    text = _first_line(e)
    full = f"{e.filename}: {e.strerror}" if isinstance(e, OSError) and e.filename else str(e)
    no_space = (isinstance(e, OSError) and e.errno == errno.ENOSPC) or (
        "no space left on device" in str(e).lower()
    )
    quoted = re.search(r'"([^"]+)"', full)
    where = e.filename if isinstance(e, OSError) and e.filename else None
    where = where or (quoted.group(1) if quoted else db_file)
    cause = "No space left on device" if no_space else text
    return DatabaseError(
        f"{where}: {cause} while loading {qz.quarter} from {qz.path}; "
        "that quarter was not loaded (the database is as it was before it)"
    )


@dataclass(frozen=True)
class _Staged:
    """One member read into a staging table of lines, header checked."""

    table: str  # a FAERS table, or 'deleted'
    member: str
    lines: str  # name of the staging table holding its physical lines
    rows_read: int  # physical lines after the header
    columns: tuple[str, ...]  # canonical names, in header order


def _stage(
    con: duckdb.DuckDBPyConnection,
    qz: QuarterZip,
    limits: ZipLimits,
    stage: str,
    stop: threading.Event,
) -> list[_Staged]:
    """Read every member of the zip before touching the database; fail on any bad member.

    Members are read two at a time (one cursor each) into an in-memory staging database:
    decompression and inserts release the GIL, so they overlap on two cores."""
    members = dict(qz.members)
    if qz.deleted_member:
        members["deleted"] = qz.deleted_member
    largest_first = sorted(members, key=lambda t: -qz.sizes.get(t, 0))
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = dict(
            zip(
                largest_first,
                pool.map(
                    lambda t: _read_lines(con.cursor(), qz, t, members[t], limits, stage, stop),
                    largest_first,
                ),
                strict=True,
            )
        )
    staged: list[_Staged] = []
    for table, member in members.items():
        lines = f"{stage}.lines_{table}"
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


def _read_lines(
    cursor: duckdb.DuckDBPyConnection,
    qz: QuarterZip,
    name: str,
    member: str,
    limits: ZipLimits,
    stage: str,
    stop: threading.Event,
) -> int:
    """Stream one member into the staging table lines_<name>; return its number of lines."""
    table = f"{stage}.lines_{name}"
    view = f"_batch_{name}"
    n_lines = 0
    with cursor:
        cursor.execute(_STAGE_DDL.replace("STAGE_TABLE", table))
        try:
            with zipfile.ZipFile(qz.path) as zf, zf.open(member) as stream:
                capped = _Capped(stream, qz.compressed.get(member, 0), limits, stop)
                for batch in _split_lines(capped):
                    if isinstance(batch, _LongLine):
                        n_lines += 1
                        cursor.execute(
                            _STAGE_LONG.replace("STAGE_TABLE", table),
                            {"line_no": n_lines, "line": batch.head, "n_bytes": batch.n_bytes},
                        )
                        continue
                    numbers = np.arange(n_lines + 1, n_lines + len(batch) + 1, dtype=np.int64)
                    frame = pd.DataFrame({"line_no": numbers, "line": batch})
                    cursor.register(view, frame)
                    cursor.execute(
                        _STAGE_BATCH.replace("STAGE_TABLE", table).replace("BATCH_VIEW", view)
                    )
                    cursor.unregister(view)
                    n_lines += len(batch)
        except _TooBig as e:
            raise InputError(f"{qz.path}:{member}", f"refused: {e}") from e
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as e:
            raise InputError(
                f"{qz.path}:{member}", f"cannot read (corrupt or truncated zip?): {_first_line(e)}"
            ) from e
    return n_lines


class _TooBig(Exception):
    """A member inflated past the limits while being read (its zip header lied)."""


class _Stopped(Exception):
    """Staging stopped: the quarter will not be written (one before it failed, or Ctrl-C)."""


class _Capped:
    """A zip member's stream that raises _TooBig once it inflates past the limits, and
    _Stopped once `stop` is set."""

    def __init__(
        self, stream: IO[bytes], compressed: int, limits: ZipLimits, stop: threading.Event
    ) -> None:
        self._stream = stream
        self._compressed = compressed
        self._limits = limits
        self._stop = stop
        self._inflated = 0

    def read(self, n: int) -> bytes:
        if self._stop.is_set():
            raise _Stopped
        data = self._stream.read(n)
        self._inflated += len(data)
        problem = self._limits.problem(self._inflated, self._compressed)
        if problem:
            raise _TooBig(f"it {problem}")
        return data


@dataclass(frozen=True)
class _LongLine:
    """A line over MAX_LINE_BYTES: its first MAX_LINE_BYTES, decoded, and its full length."""

    head: str
    n_bytes: int


def _split_lines(stream: _Capped) -> Iterator[list[str] | _LongLine]:
    """Physical lines of a stream, in order, in batches: split at LF only, one CR before an LF
    dropped, decoded latin-1. A line over MAX_LINE_BYTES comes alone, cut, as a _LongLine."""
    rest = b""
    long_head: bytes | None = None  # set while skipping through an overlong line
    long_bytes, long_last = 0, b""  # its length so far and last byte (a CR before its LF?)
    while chunk := stream.read(_CHUNK_BYTES):
        if long_head is not None:
            end = chunk.find(b"\n")
            if end < 0:
                long_bytes, long_last = long_bytes + len(chunk), chunk[-1:]
                continue
            # The CR before the LF may end the previous read.
            cr = (chunk[end - 1 : end] if end else long_last) == b"\r"
            yield _LongLine(long_head.decode("latin-1"), long_bytes + end - cr)
            long_head, chunk = None, chunk[end + 1 :]
        data = rest + chunk
        last = data.rfind(b"\n")
        if last < 0:
            rest = data
            if len(rest) > MAX_LINE_BYTES:
                long_head, long_bytes, long_last = rest[:MAX_LINE_BYTES], len(rest), rest[-1:]
                rest = b""
            continue
        rest = data[last + 1 :]
        lines = data[: last + 1].replace(b"\r\n", b"\n").decode("latin-1").split("\n")
        lines.pop()  # the empty string after the last LF
        yield lines
    if long_head is None and len(rest) > MAX_LINE_BYTES:
        long_head, long_bytes = rest[:MAX_LINE_BYTES], len(rest)
    if long_head is not None:
        yield _LongLine(long_head.decode("latin-1"), long_bytes)
    elif rest:
        yield [rest.decode("latin-1")]


def _first_line(e: BaseException) -> str:
    lines = [x for x in str(e).splitlines() if x.strip()]
    return lines[-1].strip() if lines else type(e).__name__


def _header(
    con: duckdb.DuckDBPyConnection, qz: QuarterZip, table: str, member: str, lines: str
) -> tuple[str, ...]:
    """Canonical column names of a member's header, or InputError naming unexpected columns."""
    row = con.execute(f"SELECT line FROM {lines} WHERE line_no = 1").fetchone()  # noqa: S608
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
    # Each line is split once; its field count is the length of its list f.
    if has_trailing_dollar(qz.quarter.source, s.table):
        ok = f"(len(f) = {n + 1} AND ends_with(line, '$'))"
        expect = f"{n + 1} fields (with the trailing $)"
    elif qz.quarter.source == "LAERS":  # LAERS INDI: trailing '$' seen absent; accept either
        ok = f"(len(f) = {n} OR (len(f) = {n + 1} AND ends_with(line, '$')))"
        expect = f"{n} fields"
    else:
        ok = f"len(f) = {n}"
        expect = f"{n} fields"
    overlong, overlong_reason = _OVERLONG
    has_key = "NOT starts_with(line, '$')"  # primaryid/ISR is the first column of every layout
    params = {"source": qz.quarter.source, "quarter": str(qz.quarter), "file": s.member}
    target = ", ".join(s.columns)
    values = ", ".join(f"nullif(f[{i + 1}], '')" for i in range(n))
    raw = raw_table(s.table)
    # Identifiers come from CANONICAL via _header's check, never from the data. A blank line
    # never has the right field count.
    con.execute(
        f"""INSERT INTO {raw} (source, quarter, source_file, source_line, {target})
        SELECT $source, $quarter, $file, line_no, {values}
        FROM (SELECT line_no, line, string_split(line, '$') AS f
              FROM {s.lines} WHERE line_no > 1 AND NOT {overlong} AND {has_key})
        WHERE {ok}""",  # noqa: S608
        params,
    )
    # Quarantined: every other line, found by its number (no second split of the good ones).
    con.execute(
        f"""INSERT INTO quarantine
            (quarter, source, file, table_name, line_number, raw_text, reason)
        SELECT $quarter, $source, $file, $table, line_no, {_RAW_TEXT},
            CASE WHEN {overlong} THEN {overlong_reason}
                 WHEN trim(line) = '' THEN 'blank line'
                 WHEN NOT ({ok}) THEN 'expected {expect}, found ' || len(f)
                 ELSE 'empty primaryid' END
        FROM (SELECT line_no, line, n_bytes, string_split(line, '$') AS f FROM {s.lines}
              WHERE line_no > 1 AND line_no NOT IN (SELECT source_line FROM {raw}
                  WHERE quarter = $quarter AND source_file = $file))""",  # noqa: S608
        {**params, "table": s.table},
    )


def _insert_deleted(con: duckdb.DuckDBPyConnection, qz: QuarterZip, s: _Staged) -> None:
    """Caseids of the deleted list; blank and non-numeric lines go to quarantine."""
    params = {"source": "FAERS", "quarter": str(qz.quarter), "file": s.member}
    overlong, overlong_reason = _OVERLONG
    is_caseid = f"(NOT {overlong} AND regexp_full_match(trim(line), '[0-9]+'))"
    con.execute(
        f"""INSERT INTO raw_deleted (source, quarter, source_file, source_line, caseid)
        SELECT $source, $quarter, $file, line_no, trim(line) FROM {s.lines}
        WHERE {is_caseid}""",  # noqa: S608
        params,
    )
    con.execute(
        f"""INSERT INTO quarantine
            (quarter, source, file, table_name, line_number, raw_text, reason)
        SELECT $quarter, $source, $file, 'deleted', line_no, {_RAW_TEXT},
            CASE WHEN {overlong} THEN {overlong_reason}
                 WHEN trim(line) = '' THEN 'blank line' ELSE 'not a caseid' END
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
    header_only = s.table != "deleted" and s.rows_read == 0
    return {
        "file": s.member,
        "table_name": s.table,
        "rows_read": s.rows_read,
        "rows_loaded": loaded,
        "rows_quarantined": quarantined,
        "warning": "header only: no data rows" if header_only else None,
    }


def _record(con: duckdb.DuckDBPyConnection, qz: QuarterZip, result: QuarterLoad) -> None:
    now = datetime.now(UTC).replace(tzinfo=None)
    for f in result.files:
        con.execute(
            """INSERT INTO load_log (quarter, file, table_name, zip_sha256, rows_read,
                rows_loaded, rows_quarantined, tool_version, loaded_at, warning)
            VALUES ($quarter, $file, $table_name, $sha, $rows_read, $rows_loaded,
                $rows_quarantined, $version, $now, $warning)""",
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

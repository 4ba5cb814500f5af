"""No byte lost: every byte of every line reaches raw_* or quarantine; LF alone ends a line;
overlong lines, zip bombs, a full disk and header-only tables are handled member by member."""

from __future__ import annotations

import errno
import io
import threading
import zipfile
from pathlib import Path
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner
from test_ingest_errors import FB, assert_one_line_error, run_load, snapshot, write_zip

from surveillance import ingest
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.errors import InputError
from surveillance.faers_format import MAX_MEMBER_BYTES_ENV, ZipLimits
from surveillance.synthetic import write_full_size_quarter

DRUG = "ASCII/DRUG24Q1.txt"
REAC = "ASCII/REAC24Q1.txt"
DRUG_HEADER = FB[DRUG].split("\r\n")[0].encode()


def drug_line(primaryid: int, drugname: bytes) -> bytes:
    return b"%d$1$1$PS$" % primaryid + drugname + b"$X$1$Oral$$$$$$$$$$$$"


def load_members(tmp_path: Path, members: dict[str, str | bytes]) -> duckdb.DuckDBPyConnection:
    con = connect(tmp_path / "db.duckdb")
    ingest.load(con, [write_zip(tmp_path / "faers_ascii_2024q1.zip", {**FB, **members})])
    return con


def test_every_byte_value_reaches_raw_or_quarantine(tmp_path: Path) -> None:
    """Each byte 0x00-0xFF but LF, planted inside a field, is stored exactly (latin-1)."""
    planted = [v for v in range(256) if v != 0x0A]
    names = {v: b"AB" + bytes([v]) + b"CD" for v in planted}
    body = b"".join(drug_line(v, names[v]) + b"\r\n" for v in planted)
    con = load_members(tmp_path, {DRUG: DRUG_HEADER + b"\r\n" + body})
    stored = dict(con.execute("SELECT primaryid, drugname FROM raw_drug").fetchall())
    lines = {v: i + 2 for i, v in enumerate(planted)}  # physical line numbers
    assert stored == {str(v): names[v].decode("latin-1") for v in planted if v != ord("$")}
    where = dict(con.execute("SELECT primaryid, source_line FROM raw_drug").fetchall())
    assert where == {str(v): lines[v] for v in planted if v != ord("$")}
    quarantined = con.execute(
        "SELECT line_number, raw_text FROM quarantine WHERE table_name = 'drug'"
    ).fetchall()
    dollar = ord("$")
    assert quarantined == [(lines[dollar], drug_line(dollar, names[dollar]).decode("latin-1"))]
    log = con.execute("SELECT rows_read, rows_loaded, rows_quarantined FROM load_log").fetchall()
    assert (len(planted), len(planted) - 1, 1) in log


def test_lone_cr_is_data_and_line_numbers_stay_right(tmp_path: Path) -> None:
    reac = (
        b"primaryid$caseid$pt$drug_rec_act\r\n"
        b"1$1$Sei\rzure$\r\n"  # line 2: a lone CR inside a field
        b"2$2$Nausea\r$\r\r\n"  # line 3: a CR ending a field, and two CRs before LF (one kept)
        b"3$3$Vomiting$\n"  # line 4: bare LF
        b"4$4$Rash$"  # line 5: no line end at all
    )
    con = load_members(tmp_path, {REAC: reac})
    rows = con.execute(
        "SELECT source_line, primaryid, pt, drug_rec_act FROM raw_reac ORDER BY source_line"
    ).fetchall()
    assert rows == [
        (2, "1", "Sei\rzure", None),
        (3, "2", "Nausea\r", "\r"),
        (4, "3", "Vomiting", None),
        (5, "4", "Rash", None),
    ]


def _lines(data: bytes, chunk: int, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Each line `_split_lines` finds in data read `chunk` bytes at a time, as the stage keeps
    it: its first MAX_LINE_BYTES and its length."""
    monkeypatch.setattr(ingest, "_CHUNK_BYTES", chunk)
    stream = ingest._Capped(io.BytesIO(data), 0, ZipLimits(), threading.Event())
    found: list[tuple[str, int]] = []
    for batch in ingest._split_lines(stream):
        if isinstance(batch, ingest._LongLine):
            found.append((batch.head, batch.n_bytes))
        else:
            found += [(x[: ingest.MAX_LINE_BYTES], len(x)) for x in batch]
    return found


def test_lines_are_the_same_at_every_chunk_boundary(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the read size, a stream splits into the same lines: at LF only, one CR before
    it dropped (also when the CR ends one read and the LF starts the next), latin-1, a line
    over MAX_LINE_BYTES cut with its full length."""
    monkeypatch.setattr(ingest, "MAX_LINE_BYTES", 12)
    data = b"a$b\r\n\r\n\xe9$\rc\n\n" + b"x" * 30 + b"\r\nmid\r\r\n" + b"y" * 13 + b"\nend\r"
    expected = []
    for line in data.decode("latin-1").split("\n")[:-1]:
        line = line.removesuffix("\r")
        expected.append((line[:12], len(line)))
    expected.append(("end\r", 4))  # the last line has no LF: its CR is data
    for chunk in range(1, len(data) + 2):
        assert _lines(data, chunk, monkeypatch) == expected, chunk


def test_overlong_line_is_quarantined_not_the_quarter(tmp_path: Path) -> None:
    """A 3 MB line (inside one read chunk) and a 9 MB line (across chunks) go to quarantine,
    cut to MAX_LINE_BYTES with their length in the reason; the lines around them load."""
    short, huge = 3_000_000, 9_000_000
    body = b"\r\n".join(
        [
            DRUG_HEADER,
            drug_line(1, b"ONE"),
            drug_line(2, b"X" * short),
            drug_line(3, b"THREE"),
            drug_line(4, b"Y" * huge),
            drug_line(5, b"FIVE"),
            b"",
        ]
    )
    con = load_members(tmp_path, {DRUG: body})
    loaded = con.execute("SELECT source_line, drugname FROM raw_drug ORDER BY 1").fetchall()
    assert loaded == [(2, "ONE"), (4, "THREE"), (6, "FIVE")]
    rows = con.execute(
        "SELECT line_number, raw_text, reason FROM quarantine ORDER BY line_number"
    ).fetchall()
    assert [r[0] for r in rows] == [3, 5]
    for (_, raw_text, reason), (pid, name) in zip(
        rows, [(2, b"X" * short), (4, b"Y" * huge)], strict=True
    ):
        full = drug_line(pid, name).decode("latin-1")
        assert raw_text == full[: ingest.MAX_LINE_BYTES]
        assert f"line of {len(full)} bytes" in reason
        assert f"keeps its first {ingest.MAX_LINE_BYTES} bytes" in reason


def test_header_only_table_loads_with_a_warning(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    members = {**FB, "ASCII/OUTC24Q1.txt": "primaryid$caseid$outc_cod\r\n"}
    result = CliRunner().invoke(
        cli, ["load", str(write_zip(tmp_path / "faers_ascii_2024q1.zip", members)), "--db", str(db)]
    )
    assert result.exit_code == 0, result.output
    assert "warning: 2024Q1 ASCII/OUTC24Q1.txt: header only: no data rows" in result.output
    with duckdb.connect(str(db), read_only=True) as con:
        warnings = con.execute(
            "SELECT table_name, rows_read, warning FROM load_log WHERE warning IS NOT NULL"
        ).fetchall()
    assert warnings == [("outc", 0, "header only: no data rows")]


def _zeros_member(tmp_path: Path, n_bytes: int) -> Path:
    """A valid quarter whose DRUG member is followed by n_bytes of zeros (ratio ~1000)."""
    zeros = FB[DRUG].encode() + b"0" * n_bytes
    return write_zip(tmp_path / "faers_ascii_2024q2.zip", {**_q2(FB), _q2_name(DRUG): zeros})


def _q2_name(name: str) -> str:
    return name.replace("24Q1", "24Q2")


def _q2(members: dict[str, str]) -> dict[str, str | bytes]:
    return {_q2_name(k): v for k, v in members.items()}


SMALL = ZipLimits(max_member_bytes=64 << 20, ratio_floor_bytes=1 << 20)


def test_zip_bomb_refused_from_the_directory(loaded_db: Path, tmp_path: Path) -> None:
    bomb = _zeros_member(tmp_path, 4 << 20)
    before = snapshot(loaded_db)
    with connect(loaded_db) as con, pytest.raises(InputError) as e:
        ingest.load(con, [bomb], limits=SMALL)
    assert str(e.value).startswith(f"{bomb}:ASCII/DRUG24Q2.txt: refused")
    assert "zip bomb" in str(e.value)
    assert snapshot(loaded_db) == before
    with connect(loaded_db) as con, pytest.raises(InputError, match="inflates to more than"):
        ingest.load(con, [bomb], limits=ZipLimits(max_member_bytes=1 << 20))


def test_zip_bomb_ceiling_from_the_environment(
    loaded_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = snapshot(loaded_db)
    monkeypatch.setenv(MAX_MEMBER_BYTES_ENV, str(1 << 20))
    code, output = run_load(loaded_db, _zeros_member(tmp_path, 2 << 20))
    assert_one_line_error(code, output, "ASCII/DRUG24Q2.txt", "inflates to more than 1,048,576")
    assert snapshot(loaded_db) == before


def test_zip_bomb_stopped_while_streaming(loaded_db: Path, tmp_path: Path) -> None:
    """The cap holds while inflating too, whatever the directory said."""
    bomb = _zeros_member(tmp_path, 4 << 20)
    qz = ingest.inspect_zip(bomb)  # the default limits let it through
    before = snapshot(loaded_db)
    with connect(loaded_db) as con, pytest.raises(InputError, match="refused: it inflates"):
        ingest.load_quarter(con, qz, SMALL)
    assert snapshot(loaded_db) == before


def test_lying_size_in_the_directory(loaded_db: Path, tmp_path: Path) -> None:
    """A directory that understates a member's size fails as a damaged zip, database unchanged."""
    bomb = _zeros_member(tmp_path, 4 << 20)
    data = bytearray(bomb.read_bytes())
    with zipfile.ZipFile(bomb) as zf:
        info = zf.getinfo("ASCII/DRUG24Q2.txt")
    # The uncompressed size sits at offset 24 of a central directory entry, 22 of a local header.
    for sig, offset in ((b"PK\x01\x02", 24), (b"PK\x03\x04", 22)):
        pos = 0
        while (pos := data.find(sig, pos)) >= 0:
            name_at = pos + (46 if sig == b"PK\x01\x02" else 30)
            if data[name_at : name_at + len(info.filename)] == info.filename.encode():
                data[pos + offset : pos + offset + 4] = (1000).to_bytes(4, "little")
            pos += 4
    bomb.write_bytes(bytes(data))
    before = snapshot(loaded_db)
    code, output = run_load(loaded_db, bomb)
    assert_one_line_error(code, output, "ASCII/DRUG24Q2.txt")
    assert snapshot(loaded_db) == before


@pytest.fixture
def loaded_db(tmp_path: Path) -> Path:
    db = tmp_path / "s.duckdb"
    code, output = run_load(db, write_zip(tmp_path / "faers_ascii_2024q1.zip", FB))
    assert code == 0, output
    return db


@pytest.mark.parametrize(
    "error",
    [
        duckdb.IOException(
            'IO Error: Could not write file "/srv/db.duckdb.wal": No space left on device'
        ),
        OSError(errno.ENOSPC, "No space left on device", "/srv/tmp/stage.tmp"),
    ],
    ids=["duckdb", "oserror"],
)
def test_full_disk_is_one_line_naming_cause_and_file(
    loaded_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The write fails half-way through a quarter's transaction; the rollback must not hide it."""
    real = ingest._insert_table
    calls = []

    def fail_on_second(con: duckdb.DuckDBPyConnection, qz: object, s: object) -> None:
        calls.append(s)
        if len(calls) == 2:
            raise error
        real(con, qz, s)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "_insert_table", fail_on_second)
    before = snapshot(loaded_db)
    path = write_zip(tmp_path / "faers_ascii_2024q2.zip", _q2(FB))
    code, output = run_load(loaded_db, path)
    where = "/srv/db.duckdb.wal" if isinstance(error, duckdb.Error) else "/srv/tmp/stage.tmp"
    assert_one_line_error(code, output, where, "No space left on device", "2024Q2")
    assert "rollback" not in output.lower()
    assert snapshot(loaded_db) == before


def test_failed_quarter_keeps_earlier_ones_and_says_which(tmp_path: Path) -> None:
    folder = tmp_path / "zips"
    folder.mkdir()
    write_zip(folder / "faers_ascii_2024q1.zip", FB)
    bad = {**_q2(FB), _q2_name(REAC): "primaryid$caseid$pt$severity\r\n1$1$X$Y\r\n"}
    write_zip(folder / "faers_ascii_2024q2.zip", bad)
    write_zip(
        folder / "faers_ascii_2024q3.zip", {k.replace("24Q1", "24Q3"): v for k, v in FB.items()}
    )
    with connect(tmp_path / "db.duckdb") as con:
        with pytest.raises(ingest.PartialLoadError) as e:
            ingest.load(con, [folder])
        assert [r.quarter for r in e.value.loaded] == ["2024Q1"]
        assert e.value.failed == ["2024Q2", "2024Q3"]
        assert "unexpected columns ['severity']" in str(e.value)
        assert str(e.value).endswith("quarters loaded: 2024Q1; not loaded: 2024Q2, 2024Q3")
        assert con.execute("SELECT quarter FROM quarters").fetchall() == [("2024Q1",)]
        assert _stages(con) == []  # 2024Q3, staged ahead, was dropped


def _stages(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Staging databases still attached."""
    rows = con.execute("SELECT database_name FROM duckdb_databases()").fetchall()
    return [r[0] for r in rows if r[0].startswith("_surveillance_stage")]


def test_quarter_staged_ahead_is_dropped_when_the_one_before_fails_to_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next quarter is staged while one is written: a write failure loads neither."""
    folder = tmp_path / "zips"
    folder.mkdir()
    for q in ("24Q1", "24Q2", "24Q3"):
        write_zip(
            folder / f"faers_ascii_20{q.lower()}.zip",
            {k.replace("24Q1", q): v for k, v in FB.items()},
        )
    real, real_prepare = ingest._insert_table, ingest._prepare
    q3_staged = threading.Event()

    def prepare(cursor: duckdb.DuckDBPyConnection, qz: ingest.QuarterZip, *rest: Any) -> Any:
        prepared = real_prepare(cursor, qz, *rest)
        if str(qz.quarter) == "2024Q3":
            q3_staged.set()
        return prepared

    def fail_in_q2(con: duckdb.DuckDBPyConnection, qz: ingest.QuarterZip, s: object) -> None:
        if str(qz.quarter) == "2024Q2":
            # 2024Q3 is staged whole by now: only dropping it detaches its stage.
            assert q3_staged.wait(30)
            raise OSError(errno.EIO, "Input/output error", "/srv/db.duckdb")
        real(con, qz, s)  # type: ignore[arg-type]

    monkeypatch.setattr(ingest, "_prepare", prepare)
    monkeypatch.setattr(ingest, "_insert_table", fail_in_q2)
    with connect(tmp_path / "db.duckdb") as con:
        with pytest.raises(ingest.PartialLoadError) as e:
            ingest.load(con, [folder])
        assert e.value.failed == ["2024Q2", "2024Q3"]
        assert "Input/output error" in str(e.value) and "while loading 2024Q2" in str(e.value)
        assert con.execute("SELECT quarter FROM quarters").fetchall() == [("2024Q1",)]
        assert con.execute("SELECT DISTINCT quarter FROM raw_drug").fetchall() == [("2024Q1",)]
        assert _stages(con) == []
        monkeypatch.setattr(ingest, "_insert_table", real)
        loaded = ingest.load(con, [folder])  # the same connection loads them all afterwards
        assert [r.quarter for r in loaded] == ["2024Q1", "2024Q2", "2024Q3"]
        assert _stages(con) == []


def test_interrupt_stops_the_quarter_staged_ahead(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a quarter is written stops the staging of the next one and loads neither."""
    folder = tmp_path / "zips"
    folder.mkdir()
    for q in ("24Q1", "24Q2"):
        members = {k.replace("24Q1", q): v for k, v in FB.items()}
        write_zip(folder / f"faers_ascii_20{q.lower()}.zip", members)
    real_stage = ingest._stage
    seen: dict[str, bool] = {}

    def stage_when_stopped(
        con: duckdb.DuckDBPyConnection, qz: ingest.QuarterZip, *rest: Any
    ) -> list[Any]:
        if str(qz.quarter) == "2024Q2":
            seen["stopped"] = rest[-1].wait(30)  # the stop event, set by the interrupt
        return real_stage(con, qz, *rest)

    def interrupt(con: duckdb.DuckDBPyConnection, qz: object, s: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ingest, "_stage", stage_when_stopped)
    monkeypatch.setattr(ingest, "_insert_table", interrupt)
    with connect(tmp_path / "db.duckdb") as con:
        with pytest.raises(KeyboardInterrupt):
            ingest.load(con, [folder])
        assert seen == {"stopped": True}
        assert _stages(con) == []
        assert con.execute("SELECT count(*) FROM quarters").fetchone() == (0,)


@pytest.fixture
def tiny_disk(tmpfs) -> Path:
    """A 2 MB tmpfs (needs root; skipped elsewhere)."""
    return tmpfs("2m")


def test_really_full_disk(tiny_disk: Path, tmp_path: Path) -> None:
    db = tiny_disk / "db.duckdb"
    assert run_load(db, write_zip(tmp_path / "faers_ascii_2024q1.zip", FB))[0] == 0
    before = snapshot(db)
    big = write_full_size_quarter("2024Q2", tmp_path / "big", n_reports=6_000, seed=3)
    code, output = run_load(db, big)
    assert_one_line_error(code, output, str(db), "No space left on device", "2024Q2")
    assert snapshot(db) == before

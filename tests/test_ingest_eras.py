"""Generated quarter -> load -> every ground-truth record present exactly once, every damaged
line in quarantine with its exact raw text, and rows read = loaded + quarantined, per era."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path

import duckdb
import pytest

from surveillance.db import connect
from surveillance.faers_format import CANONICAL, TABLES
from surveillance.ingest import load
from surveillance.synthetic import QuarterFiles, generate_quarter

# One quarter of each layout and of each naming quirk (faers-format.md §1.2, §3).
ERA_QUARTERS = ["2004Q1", "2010Q1", "2012Q4", "2013Q2", "2018Q1", "2019Q1", "2025Q1"]
PROVENANCE = ("quarter", "source", "source_file", "source_line")


@pytest.fixture(scope="module", params=ERA_QUARTERS)
def loaded(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp(request.param)
    generated = generate_quarter(request.param, tmp, n_cases=120, seed=11)
    con = connect(tmp / "db.duckdb")
    load(con, [generated.zip_path])
    yield generated, con
    con.close()


def _db_rows(con: duckdb.DuckDBPyConnection, table: str) -> Counter[tuple[object, ...]]:
    cols = ", ".join((*PROVENANCE, *CANONICAL[table]))
    return Counter(con.execute(f"SELECT {cols} FROM raw_{table}").fetchall())


def _truth_rows(generated: QuarterFiles, table: str) -> Counter[tuple[object, ...]]:
    return Counter(
        tuple(row[c] for c in (*PROVENANCE, *CANONICAL[table])) for row in generated.truth[table]
    )


@pytest.mark.parametrize("table", TABLES)
def test_every_truth_record_loaded_exactly_once(loaded, table: str) -> None:
    generated, con = loaded
    truth = _truth_rows(generated, table)
    assert truth, f"generator wrote no {table} rows"
    assert _db_rows(con, table) == truth


def test_deleted_list(loaded) -> None:
    generated, con = loaded
    got = sorted(con.execute("SELECT caseid, source_file, source_line FROM raw_deleted").fetchall())
    want = sorted((d["caseid"], d["source_file"], d["source_line"]) for d in generated.deleted)
    assert got == want


def test_damaged_lines_quarantined_with_exact_raw_text(loaded) -> None:
    generated, con = loaded
    got = sorted(con.execute("SELECT file, line_number, raw_text FROM quarantine").fetchall())
    want = sorted((d["source_file"], d["source_line"], d["raw_text"]) for d in generated.quarantine)
    assert got == want
    kinds = {d["kind"] for d in generated.quarantine}
    assert {"glued", "split", "extra_dollar"} <= kinds


def test_rows_read_equals_loaded_plus_quarantined(loaded) -> None:
    """Independently of the loader: rows read = physical lines after the header."""
    generated, con = loaded
    log = con.execute(
        "SELECT file, table_name, rows_read, rows_loaded, rows_quarantined FROM load_log"
    ).fetchall()
    assert len(log) == len(TABLES) + (1 if generated.deleted else 0)
    with zipfile.ZipFile(generated.zip_path) as zf:
        for file, table, read, loaded_n, quarantined in log:
            data = zf.read(file)
            lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            header = 0 if table == "deleted" else 1
            assert read == lines - header, file
            assert read == loaded_n + quarantined, file


def test_latin1_text_survives(loaded) -> None:
    generated, con = loaded
    non_ascii = {
        v
        for rows in generated.truth.values()
        for row in rows
        for v in row.values()
        if isinstance(v, str) and not v.isascii()
    }
    assert non_ascii, "generator planted no latin-1 text"
    stored = {
        v
        for t in TABLES
        for row in con.execute(f"SELECT * FROM raw_{t}").fetchall()
        for v in row
        if isinstance(v, str) and not v.isascii()
    }
    assert non_ascii <= stored


def test_reload_is_idempotent(loaded) -> None:
    generated, con = loaded
    before = {t: _db_rows(con, t) for t in TABLES}
    n_quarantine = con.execute("SELECT count(*) FROM quarantine").fetchone()
    load(con, [generated.zip_path])
    assert {t: _db_rows(con, t) for t in TABLES} == before
    assert con.execute("SELECT count(*) FROM quarantine").fetchone() == n_quarantine
    assert con.execute("SELECT count(*) FROM quarters").fetchone() == (1,)


def test_newer_copy_of_a_quarter_replaces_the_older(tmp_path: Path) -> None:
    old = generate_quarter("2024Q1", tmp_path / "old", n_cases=60, seed=1)
    new = generate_quarter("2024Q1", tmp_path / "new", n_cases=80, seed=2)
    with connect(tmp_path / "db.duckdb") as con:
        load(con, [old.zip_path])
        load(con, [new.zip_path])
        assert _db_rows(con, "demo") == _truth_rows(new, "demo")
        sha = con.execute("SELECT zip_sha256 FROM quarters").fetchall()
        assert len(sha) == 1 and sha[0][0] != ""
        assert con.execute("SELECT count(DISTINCT zip_sha256) FROM load_log").fetchone() == (1,)

"""The notebook API: `Database` methods return what the library functions they wrap return, on
the generated series; connections are closed after each test so other tests can open the file."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

import surveillance
from surveillance.api import Database
from surveillance.cases import cases
from surveillance.errors import DatabaseError, UsageError
from surveillance.extract import resolve
from surveillance.query import named_queries, run_query, run_sql
from surveillance.synthetic import generate_series


@pytest.fixture
def db(series_db):
    with Database(series_db[1]) as database:
        yield database


def test_import_is_light_and_exports_database() -> None:
    code = "import sys, surveillance; print('duckdb' in sys.modules, 'pandas' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
    assert surveillance.Database is Database
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = surveillance.nope  # type: ignore[attr-defined]


def test_cases_are_the_library_cases(series_db, db) -> None:
    frame = db.cases(substance="kratom")
    truth = series_db[0].cases.query("surviving and is_kratom")
    assert sorted(frame["caseid"]) == sorted(truth["caseid"].astype(str))
    pd.testing.assert_frame_equal(frame, cases(db.connection, resolve("kratom")))
    assert len(db.cases(roles="PS,SS")) <= len(frame)


def test_case_detail(db) -> None:
    caseid = db.cases()["caseid"].iloc[0]
    detail = db.case(caseid)
    assert detail["caseid"] == caseid and len(detail["case"]) == 1


@pytest.mark.slow
def test_signals_table_is_the_run_table(db) -> None:
    run = db.signals_run(min_cases=1)
    table = db.signals(min_cases=1)
    pd.testing.assert_frame_equal(table, run.table)
    assert run.substance == "kratom" and (table["a"] >= 1).all()
    assert len(db.signals(through="2013Q1", min_cases=1)) <= len(table)


def test_query_and_queries(db) -> None:
    assert [q.name for q in db.queries()] == list(named_queries())
    pd.testing.assert_frame_equal(
        db.query("top_reactions", limit_rows="5"),
        run_query(db.connection, "top_reactions", limit_rows=5),
    )
    with pytest.raises(UsageError, match="missing parameter caseid"):
        db.query("case_detail")


def test_sql_closes_the_connection_and_the_next_call_reopens_it(series_db, db) -> None:
    n_cases = len(db.query("substance_cases"))
    assert "open" in repr(db)
    # An open read-write connection in this process and the sandbox cannot share the file.
    with pytest.raises(DatabaseError, match="this process already has the database open"):
        run_sql(series_db[1], "SELECT 1")
    frame = db.sql(
        "SELECT count(DISTINCT caseid) AS n FROM substance_hits WHERE substance = 'kratom'"
    )
    assert frame["n"][0] == n_cases
    assert "closed" in repr(db)
    assert len(db.query("substance_cases")) == n_cases
    with pytest.raises(UsageError, match="read-only mode"):
        db.sql("DELETE FROM cases")
    assert len(db.sql("SELECT * FROM cases", limit=3)) == 3


def test_schema_tables_status(series_db, db) -> None:
    frame = db.schema()
    assert list(frame.columns) == ["table", "column", "type", "description"]
    assert set(db.schema("cases", "pt_terms")["table"]) == {"cases", "pt_terms"}
    assert "cases" in set(db.tables()["table"])
    info = db.status()
    assert info["n_quarters"] == len(series_db[0].quarters)


def test_read_only_refuses_writes(series_db) -> None:
    with Database(series_db[1], read_only=True) as db:
        assert len(db.query("cases_by_quarter")) == len(series_db[0].quarters)
        for call in (lambda: db.load(series_db[1]), db.rebuild, db.signals):
            with pytest.raises(UsageError, match="open it with read_only=False"):
                call()


def test_load_and_rebuild_a_new_database(tmp_path) -> None:
    generate_series(["2019Q1"], tmp_path / "zips", n_cases=40, seed=3)
    with Database(tmp_path / "new.duckdb") as db:
        with pytest.raises(UsageError, match="at least one zip"):
            db.load()
        loaded = db.load(tmp_path / "zips", dedup="fda")
        assert [r.quarter for r in loaded] == ["2019Q1"]
        steps = db.rebuild(dedup="strict")
        assert steps["dedup_mode"].eq("strict").all()
        assert db.status()["n_quarters"] == 1

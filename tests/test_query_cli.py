"""`query`, `sql` and `schema` as the CLI runs them: golden output in every format, the read-only
sandbox of ad hoc SQL against each way of writing, and the schema's documentation.

The golden files hold exactly what the commands print. Regenerate them, deliberately, with:

    UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_query_cli.py
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import schema_docs
from surveillance.asof import ensure_tables as ensure_asof_tables
from surveillance.cli import cli
from surveillance.db import connect, temp_directory
from surveillance.errors import DatabaseError, LimitError, UsageError
from surveillance.export import output_format, write_output
from surveillance.extract import resolve
from surveillance.query import describe_queries, params_from_pairs, run_query, run_sql, schema
from surveillance.sensitivity import ensure_tables as ensure_sensitivity_tables
from surveillance.sequential import ensure_tables as ensure_sequential_tables
from surveillance.signals import signals
from surveillance.stratified import signal_mh

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
SQL = "SELECT sex, count(*) AS n_cases, min(fda_date) AS first_fda_date FROM cases GROUP BY sex"
SQL_ORDERED = SQL + " ORDER BY sex"


def _check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8", newline="")
    assert path.exists(), f"{path} missing; run with UPDATE_GOLDEN=1 to create it"
    assert text == path.read_text(encoding="utf-8"), f"{name} differs from its golden file"


def _printed(capsys: pytest.CaptureFixture[str], frame: pd.DataFrame, fmt: str) -> str:
    capsys.readouterr()
    write_output(frame, fmt, None)
    return capsys.readouterr().out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _cli(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args))
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(("fmt", "suffix"), [("table", "txt"), ("csv", "csv"), ("json", "json")])
def test_query_output_matches_golden(series_db, fmt: str, suffix: str) -> None:
    text = _cli("query", "cases_by_quarter", "--db", str(series_db[1]), "--format", fmt)
    _check_golden(f"query_cases_by_quarter.{suffix}", text)
    if fmt == "table":
        assert max(map(len, text.splitlines())) <= 80


@pytest.mark.parametrize(("fmt", "suffix"), [("table", "txt"), ("csv", "csv")])
def test_sql_output_matches_golden(series_db, fmt: str, suffix: str) -> None:
    text = _cli("sql", SQL_ORDERED, "--db", str(series_db[1]), "--format", fmt)
    _check_golden(f"sql_cases_by_sex.{suffix}", text)


def test_csv_has_header_and_iso_dates_json_is_records(series_db, capsys) -> None:
    frame = run_sql(series_db[1], SQL_ORDERED)
    csv = _printed(capsys, frame, "csv").splitlines()
    assert csv[0] == "sex,n_cases,first_fda_date"
    assert all(len(line.split(",")[2]) == 10 for line in csv[1:])  # YYYY-MM-DD, no time
    records = json.loads(_printed(capsys, frame, "json"))
    assert records[0] == {"sex": "F", "n_cases": 876, "first_fda_date": "2012-04-02"}


def test_parquet_needs_a_file_and_round_trips(series_db, tmp_path) -> None:
    frame = run_sql(series_db[1], SQL_ORDERED)
    with pytest.raises(UsageError, match="give --output FILE"):
        write_output(frame, "parquet", None)
    out = tmp_path / "by_sex.parquet"
    write_output(frame, None, out)  # the suffix chooses parquet
    with duckdb.connect() as con:
        back = con.execute("SELECT * FROM read_parquet($p)", {"p": str(out)}).fetchdf()
    assert back["n_cases"].tolist() == frame["n_cases"].tolist()
    assert not list(tmp_path.glob("*.partial"))


def test_output_format_choice(tmp_path) -> None:
    assert output_format("json", tmp_path / "x.csv") == "json"
    assert output_format(None, tmp_path / "x.JSON") == "json"
    assert output_format(None, tmp_path / "x.txt") == "table"
    with pytest.raises(UsageError, match="unknown format 'xml'"):
        output_format("xml", None)


def test_query_list_names_every_query_and_fits_80_columns() -> None:
    text = describe_queries()
    assert "cases_by_quarter: " in text and "-p caseid VARCHAR (required)" in text
    assert max(map(len, text.splitlines())) <= 80


def test_params_from_pairs_refuses_a_name_twice() -> None:
    assert params_from_pairs([("substance", "7-oh")]) == {"substance": "7-oh"}
    with pytest.raises(UsageError, match="parameter substance given twice"):
        params_from_pairs([("substance", "a"), ("substance", "b")])


# Each way of changing the database or reaching outside it, and the error it meets.
ATTACKS = [
    ("INSERT INTO cases (caseid) VALUES ('x')", "read-only mode"),
    ("UPDATE cases SET sex = 'F'", "read-only mode"),
    ("DELETE FROM cases", "read-only mode"),
    ("TRUNCATE cases", "read-only mode"),
    ("DROP TABLE cases", "read-only mode"),
    ("CREATE TABLE t AS SELECT 1", "read-only mode"),
    ("CREATE VIEW v AS SELECT 1", "read-only mode"),
    ("ALTER TABLE cases ADD COLUMN z INTEGER", "read-only mode"),
    ("COMMENT ON TABLE cases IS 'x'", "read-only mode"),
    ("ATTACH ':memory:' AS m", "read-only mode"),
    ("ATTACH '{tmp}/other.duckdb' AS o", "file system operations are disabled"),
    ("ATTACH '{db}' AS w (READ_WRITE)", "Unique file handle conflict"),
    ("COPY cases TO '{tmp}/out.csv'", "file system operations are disabled"),
    ("COPY (SELECT 1) TO '{tmp}/out.parquet' (FORMAT parquet)", "file system operations"),
    ("COPY cases FROM '{tmp}/in.csv'", "file system operations are disabled"),
    ("EXPORT DATABASE '{tmp}/export'", "file system operations are disabled"),
    ("SELECT * FROM read_csv('/etc/passwd')", "file system operations are disabled"),
    ("SELECT * FROM glob('/etc/*')", "file system operations are disabled"),
    ("SET enable_external_access = true", "configuration has been locked"),
    ("RESET enable_external_access", "configuration has been locked"),
    ("SET lock_configuration = false", "configuration has been locked"),
    ("PRAGMA enable_checkpoint_on_shutdown", "configuration has been locked"),
    ("INSTALL httpfs", "file system operations are disabled"),
    ("LOAD httpfs", "Loading external extensions is disabled"),
    ("SELECT 1; DROP TABLE cases", "one statement at a time, got 2"),
]


@pytest.mark.parametrize(("statement", "expected"), ATTACKS)
def test_sql_cannot_write_or_reach_outside(series_db, tmp_path, statement, expected) -> None:
    db_path = series_db[1]
    before = _sha256(db_path)
    text = statement.format(tmp=tmp_path, db=db_path)
    with pytest.raises(UsageError, match=r"^sql: ") as caught:
        run_sql(db_path, text)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)
    assert _sha256(db_path) == before
    assert not list(tmp_path.iterdir())
    assert run_sql(db_path, "SELECT count(*) AS n FROM cases")["n"][0] > 0


@pytest.mark.parametrize("statement", ["CHECKPOINT", "FORCE CHECKPOINT", "VACUUM", "ANALYZE"])
def test_maintenance_statements_are_no_ops_on_a_read_only_file(series_db, statement) -> None:
    before = _sha256(series_db[1])
    run_sql(series_db[1], statement)
    assert _sha256(series_db[1]) == before


def test_a_parameter_value_is_only_a_value(series_db, series_con) -> None:
    hostile = "x'; DROP TABLE cases; --"
    n_cases = series_con.execute("SELECT count(*) FROM cases").fetchone()[0]
    frame = run_query(series_con, "cases_by_quarter", substance=hostile)
    assert (frame["n_cases"] == 0).all()
    assert run_query(series_con, "substance_cases", substance=hostile).empty
    assert series_con.execute("SELECT count(*) FROM cases").fetchone()[0] == n_cases


def test_sql_errors_are_one_line(series_db) -> None:
    for text, message in [
        ("", "sql: no SQL statement given"),
        ("-- only a comment", "sql: no SQL statement given"),
        ("SELEC 1", 'sql: Parser Error: syntax error at or near "SELEC"'),
        ("SELECT nope FROM cases", "sql: Binder Error: Referenced column"),
    ]:
        with pytest.raises(UsageError) as caught:
            run_sql(series_db[1], text)
        assert str(caught.value).startswith(message)
        assert "\n" not in str(caught.value)


def test_sql_limit_fetches_only_what_it_shows(series_db) -> None:
    frame = run_sql(series_db[1], "SELECT * FROM range(5000)", limit=2048)
    assert len(frame) == 2048 and frame.attrs["truncated"]
    whole = run_sql(series_db[1], "SELECT * FROM range(5)", limit=5)
    assert len(whole) == 5 and not whole.attrs["truncated"]
    with pytest.raises(UsageError, match="at least 1"):
        run_sql(series_db[1], "SELECT 1", limit=0)


def test_sql_while_another_process_writes(tmp_path) -> None:
    db_path = tmp_path / "busy.duckdb"
    connect(db_path).close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('ready', flush=True); "
            "sys.stdin.read()",
            str(db_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(DatabaseError, match=r"database is locked by another process \(PID"):
            run_sql(db_path, "SELECT 1")
    finally:
        holder.communicate("", timeout=30)
    assert run_sql(db_path, "SELECT 1 AS one")["one"][0] == 1


def test_sql_on_a_missing_database(tmp_path) -> None:
    missing = tmp_path / "none.duckdb"
    with pytest.raises(DatabaseError) as error:
        run_sql(missing, "SELECT 1")
    assert str(error.value) == f"no database at {missing}; load quarters first or pass --db"
    assert not missing.exists()


SLOW = "SELECT count(*) FROM range(100000000) a, range(100000) b WHERE a.range + b.range = 7"


def test_sql_statement_timeout(series_db) -> None:
    with pytest.raises(LimitError, match=r"^sql: statement cancelled after 0.2 s"):
        run_sql(series_db[1], SLOW, timeout=0.2)
    result = CliRunner().invoke(cli, ["sql", "--timeout", "0.2", SLOW, "--db", str(series_db[1])])
    assert result.exit_code == 1
    assert (
        result.stderr == "Error: sql: statement cancelled after 0.2 s (--timeout to allow more)\n"
    )
    # The connection was not left interrupted: the next statement runs.
    assert run_sql(series_db[1], "SELECT 1 AS one", timeout=5)["one"][0] == 1


def test_sql_memory_cap(series_db) -> None:
    big = (
        "SELECT count(*) FROM "
        "(SELECT range % 999983 AS k, list(range) FROM range(3000000) GROUP BY 1)"
    )
    result = CliRunner().invoke(
        cli, ["--memory-limit", "20MB", "sql", big, "--db", str(series_db[1])]
    )
    assert result.exit_code == 1
    assert result.stderr.startswith(
        "Error: sql: the statement needs more than its memory cap (20MB"
    )
    assert len(result.stderr.splitlines()) == 1


def test_sql_cannot_reach_the_temp_folder(series_db, tmp_path) -> None:
    db = tmp_path / "db.duckdb"
    db.write_bytes(series_db[1].read_bytes())
    temp = temp_directory(db)
    temp.mkdir()
    (temp / "spill.tmp").write_text("someone's spilled rows")
    before = sorted(temp.iterdir())
    for statement in (
        f"SELECT * FROM glob('{temp}/*')",
        f"SELECT * FROM read_text('{temp}/spill.tmp')",
        f"COPY (SELECT 1) TO '{temp}/out.csv'",
        f"SELECT * FROM read_csv('{temp}/spill.tmp')",
        "SELECT * FROM glob('*')",
    ):
        with pytest.raises(UsageError):
            run_sql(db, statement)
    assert sorted(temp.iterdir()) == before
    assert run_sql(db, "SELECT current_setting('temp_directory') AS t")["t"][0] == ""


def test_every_table_and_column_is_documented(series_con) -> None:
    run = signals(series_con, resolve("kratom"))  # creates the signal tables of a database
    signal_mh(series_con, run, resolve("kratom"), "sex")  # and signal_mh
    ensure_sequential_tables(series_con)  # and the sequential alerts' tables
    ensure_asof_tables(series_con)  # and the stored as-of counts
    ensure_sensitivity_tables(series_con)  # and the stored sensitivity analyses
    frame = schema(series_con)
    undocumented = frame[frame["description"] == ""]
    assert undocumented.empty, f"add to schema_docs.py: {undocumented[['table', 'column']]}"
    tables = set(frame["table"])
    faers_tables = {t for t in schema_docs.TABLES if not t.startswith("caers_")}  # test_caers
    assert tables == faers_tables, "schema_docs.TABLES differs from the database"
    for table, columns in frame.groupby("table")["column"]:
        stale = set(schema_docs.COLUMNS[table]) - set(columns)
        assert not stale or table.startswith("raw_") or table == "reports", (table, stale)


def test_schema_filters_tables(series_con) -> None:
    frame = schema(series_con, ["cases"])
    assert set(frame["table"]) == {"cases"} and "caseid" in set(frame["column"])
    with pytest.raises(UsageError, match="no table nope"):
        schema(series_con, ["nope"])


def test_null_dates_print_as_empty(series_db, capsys) -> None:
    frame = run_sql(series_db[1], "SELECT caseid, event_date FROM cases WHERE event_date IS NULL")
    assert not frame.empty
    assert _printed(capsys, frame.head(1), "csv").splitlines()[1].endswith(",")

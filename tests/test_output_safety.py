"""Hostile strings in the data: CSV neutralises spreadsheet formulas (OWASP) unless raw CSV is
asked for, tables show control characters and bidi overrides visibly, JSON and Parquet keep
every value; `sql`/`query -o` never write over a database or an existing file."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.errors import UsageError
from surveillance.export import write_output
from surveillance.output import formula_safe, raw_csv, render, terminal_safe
from surveillance.pipeline import load, rebuild
from surveillance.synthetic import generate_series

FORMULA = '=HYPERLINK("http://evil.example","KRATOM")'
ESCAPES = "\x1b[2J\x07Evil\rterm\u202ereversed"
# What a terminal must never receive from the data: C0/C1 controls and bidi overrides.
RAW_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def _cli(*args: str, ok: bool = True) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    if ok:
        assert result.exit_code == 0, result.output
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def hostile_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A small database with one case whose only kratom drug is a formula and whose reaction
    term carries escape sequences, a bell, a CR and a bidi override."""
    tmp = tmp_path_factory.mktemp("hostile")
    generate_series(["2024Q1"], tmp / "zips", n_cases=60, seed=11, damage=False)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        row = con.execute(
            "SELECT caseid FROM cases WHERE caseid NOT IN (SELECT caseid FROM substance_hits) "
            "ORDER BY caseid LIMIT 1"
        ).fetchone()
        assert row is not None
        caseid = row[0]
        insert = (
            "INSERT INTO raw_{table} (source, quarter, source_file, source_line, primaryid, "
            "caseid, {columns}) SELECT source, quarter, 'test', 0, primaryid, caseid, {values} "
            "FROM raw_demo WHERE caseid = $caseid"
        )
        con.execute(
            insert.format(
                table="drug", columns="drug_seq, role_cod, drugname", values="'99', 'PS', $name"
            ),
            {"name": FORMULA, "caseid": caseid},
        )
        con.execute(
            insert.format(table="reac", columns="pt", values="$pt"),
            {"pt": ESCAPES, "caseid": caseid},
        )
        rebuild(con)
    return db, caseid


def test_formula_safe_prefixes_text_only() -> None:
    for text in ("=1+2", "+cmd", "-1", "@SUM(A1)", "\tx", "\rx"):
        assert formula_safe(text) == "'" + text
    for value in ("ok", "a=b", "", -1.5, 3, None):
        assert formula_safe(value) == value


def test_csv_neutralises_formulas_in_text_keeps_numbers(monkeypatch) -> None:
    monkeypatch.delenv("SURVEILLANCE_CSV_RAW", raising=False)
    frame = pd.DataFrame(
        {
            "text": ["=1+2", "+cmd", "-1", "@SUM(A1)", "\tTAB", "\rCR", "plain"],
            "number": [-1.5, -2.0, 0.0, 1.0, 2.0, 3.0, 4.0],
            "listed": [["=A", "b"], [], ["c"], ["-x"], [], [], []],
        }
    )
    rows = list(csv.DictReader(io.StringIO(render(frame, "csv"))))
    assert [r["text"] for r in rows] == [
        "'=1+2",
        "'+cmd",
        "'-1",
        "'@SUM(A1)",
        "'\tTAB",
        "'\rCR",
        "plain",
    ]
    assert [r["number"] for r in rows] == ["-1.5", "-2.0", "0.0", "1.0", "2.0", "3.0", "4.0"]
    assert [r["listed"] for r in rows][:4] == ["'=A;b", "", "c", "'-x"]
    with raw_csv():
        assert next(csv.DictReader(io.StringIO(render(frame, "csv"))))["text"] == "=1+2"
    monkeypatch.setenv("SURVEILLANCE_CSV_RAW", "1")
    assert next(csv.DictReader(io.StringIO(render(frame, "csv"))))["text"] == "=1+2"
    records = json.loads(render(frame, "json"))
    assert records[0]["text"] == "=1+2" and records[0]["listed"] == ["=A", "b"]


def test_terminal_safe_shows_controls_visibly() -> None:
    assert terminal_safe(ESCAPES) == "^[[2J^GEvil^Mterm<U+202E>reversed"
    assert terminal_safe("tab\there\nnew\x7f\x9b") == "tab^Ihere^Jnew^?<U+009B>"
    assert terminal_safe("Müller ok") == "Müller ok"


def test_table_output_neutralises_escapes_csv_and_json_keep_them() -> None:
    frame = pd.DataFrame({"term": [ESCAPES, "Nausea"], ESCAPES: [1, 2]})
    table = render(frame, "table")
    assert not RAW_CONTROL.search(table)
    assert "^[[2J^GEvil^Mterm<U+202E>reversed" in table
    assert json.loads(render(frame, "json"))[0]["term"] == ESCAPES
    assert ESCAPES in render(frame, "csv")


def test_cases_csv_safe_by_default_raw_on_request(hostile_db) -> None:
    db, caseid = hostile_db
    _, out = _cli("cases", "--db", str(db), "--format", "csv")
    rows = {r["caseid"]: r for r in csv.DictReader(io.StringIO(out))}
    assert rows[caseid]["matched_strings"] == "'" + FORMULA
    _, raw = _cli("cases", "--db", str(db), "--format", "csv", "--csv-raw")
    rows = {r["caseid"]: r for r in csv.DictReader(io.StringIO(raw))}
    assert rows[caseid]["matched_strings"] == FORMULA


def test_sql_and_query_output_files_are_csv_safe(hostile_db, tmp_path) -> None:
    db, caseid = hostile_db
    out = tmp_path / "x.csv"
    _cli(
        "sql",
        "SELECT drugname, -1.5 AS n FROM case_drugs WHERE drug_seq = '99'",
        "--db",
        str(db),
        "-o",
        str(out),
    )
    assert list(csv.reader(out.open(encoding="utf-8")))[1] == ["'" + FORMULA, "-1.5"]
    out2 = tmp_path / "y.csv"
    _cli("query", "case_detail", "-p", "caseid", caseid, "--db", str(db), "-o", str(out2))
    assert "'" + FORMULA.replace('"', '""') in out2.read_text(encoding="utf-8")
    parquet = tmp_path / "z.parquet"
    _cli(
        "sql",
        "SELECT drugname FROM case_drugs WHERE drug_seq = '99'",
        "--db",
        str(db),
        "-o",
        str(parquet),
    )
    with duckdb.connect() as con:
        back = con.execute("SELECT * FROM read_parquet($p)", {"p": str(parquet)}).fetchall()
    assert back == [(FORMULA,)]


def test_table_commands_show_no_raw_control_characters(hostile_db) -> None:
    db, caseid = hostile_db
    for args in (
        ["cases", "--db", str(db), "--format", "table"],
        ["case", caseid, "--db", str(db)],
        ["sql", "SELECT pt FROM case_reactions", "--db", str(db), "--format", "table"],
        ["query", "top_reactions", "--db", str(db), "--format", "table"],
    ):
        _, out = _cli(*args)
        assert not RAW_CONTROL.search(out), args
    _, out = _cli("case", caseid, "--db", str(db))
    assert "^[[2J^GEvil^Mterm<U+202E>reversed" in out
    _, out = _cli("case", caseid, "--db", str(db), "--format", "json")
    assert ESCAPES in {r["pt"] for r in json.loads(out)["reactions"]}


@pytest.mark.parametrize("command", ["sql", "query"])
def test_output_never_replaces_the_database(hostile_db, tmp_path, monkeypatch, command) -> None:
    db, _ = hostile_db
    before = db.read_bytes()
    run = ["sql", "SELECT 1 AS x"] if command == "sql" else ["query", "load_history"]
    monkeypatch.chdir(db.parent)
    other = tmp_path / "other.duckdb"
    link = tmp_path / "link.csv"
    link.symlink_to(db)
    for target, message in (
        (str(db), "is the database in use"),
        (db.name, "is the database in use"),  # relative path, same file
        (str(db) + ".wal", "is the database in use"),
        (str(link), "is the database in use"),
        (str(other), "will not write over a DuckDB file"),
        (str(tmp_path / "x.WAL"), "will not write over a DuckDB file"),
    ):
        for force in ([], ["--force"]):
            code, out = _cli(*run, "--db", str(db), "-o", target, *force, ok=False)
            assert code == 2 and message in out, (target, out)
            assert len(out.strip().splitlines()) <= 3  # click's one-line usage error
    assert db.read_bytes() == before
    assert not other.exists()


def test_output_refuses_an_existing_file_without_force(hostile_db, tmp_path) -> None:
    db, _ = hostile_db
    out = tmp_path / "out.csv"
    out.write_text("keep me\n", encoding="utf-8")
    code, text = _cli("sql", "SELECT 1 AS x", "--db", str(db), "-o", str(out), ok=False)
    assert code == 2 and "exists; use --force to replace it" in text
    assert out.read_text(encoding="utf-8") == "keep me\n"
    _cli("sql", "SELECT 1 AS x", "--db", str(db), "-o", str(out), "--force")
    assert out.read_text(encoding="utf-8") == "x\n1\n"
    with pytest.raises(UsageError, match="is a folder"):
        write_output(pd.DataFrame({"x": [1]}), "csv", tmp_path, force=True)

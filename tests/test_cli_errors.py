"""The CLI's one error seam: every command, against a missing, an empty, a zero-byte, a truncated
and a foreign (SQLite, random bytes) database file, fails with one line on stderr and exit status
1 or 2, never a traceback, and no read command creates a database."""

from __future__ import annotations

import random
import shutil
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.update import update_lock

# Minimal arguments of every command that takes --db (a test below checks this covers them all).
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, connections are refused
ARGS: dict[str, list[str]] = {
    "load": ["{tmp}/no-such.zip"],
    "status": [],
    "rebuild": [],
    "cases": [],
    "case": ["1"],
    "signals": [],
    "query": ["substance_cases"],
    "sql": ["SELECT 1"],
    "export": ["{tmp}/parquet"],
    "schema": [],
    "trends": [],
    "alerts": [],
    "report": ["--quarter", "2019Q1", "--out", "{tmp}/report"],
    "update": ["--index-url", REFUSED, "--base-url", REFUSED, "--dest", "{tmp}/raw", "--quiet"],
    "terms": [],
    "terms discover": [],
}
NO_DATABASE = {"fetch", "demo"}
# Commands that may succeed on a valid database with nothing loaded, or never open one.
MAY_SUCCEED = {("empty", "status"), ("empty", "schema"), ("empty", "sql")}
CREATES = {"update"}


def _commands() -> list[tuple[str, click.Command]]:
    found = []
    for name, command in cli.commands.items():
        found.append((name, command))
        if isinstance(command, click.Group):
            found += [(f"{name} {sub}", c) for sub, c in command.commands.items()]
    return found


def test_the_walk_covers_every_command() -> None:
    names = {name for name, _ in _commands()}
    assert names == set(ARGS) | NO_DATABASE
    for name, command in _commands():
        takes_db = any(p.name == "db_path" for p in command.params)
        assert takes_db == (name not in NO_DATABASE), name


def _database(kind: str, tmp: Path, loaded: Path) -> Path:
    path = tmp / f"{kind}.duckdb"
    if kind == "empty":
        connect(path).close()
    elif kind == "zero-byte":
        path.touch()
    elif kind == "truncated":
        data = loaded.read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif kind == "sqlite":
        with sqlite3.connect(path) as lite:
            lite.execute("CREATE TABLE cases (caseid TEXT)")
    elif kind == "random":
        path.write_bytes(random.Random(7).randbytes(64 * 1024))
    return path


def _assert_one_line_error(result: Result, what: str) -> None:
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        what,
        repr(result.exception),
    )
    assert "Traceback" not in result.output + result.stderr, what
    assert result.exit_code in (1, 2), (what, result.exit_code, result.output)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), (what, result.stderr)


# "missing" and "empty" run every command to its end on a fresh database (about 8 s each): slow.
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("missing", marks=pytest.mark.slow),
        pytest.param("empty", marks=pytest.mark.slow),
        "zero-byte",
        "truncated",
        "sqlite",
        "random",
    ],
)
def test_every_command_fails_in_one_line_on_a_bad_database(kind, tmp_path, series_db) -> None:
    runner = CliRunner()
    for name, _ in _commands():
        if name in NO_DATABASE:
            continue
        tmp = tmp_path / name.replace(" ", "-")
        tmp.mkdir()
        db = _database(kind, tmp, series_db[1])
        before = db.read_bytes() if db.exists() else None
        args = [a.format(tmp=tmp) for a in ARGS[name]]
        result = runner.invoke(cli, [*name.split(), *args, "--db", str(db)])
        what = f"{name} on a {kind} database"
        if name == "terms" or (kind, name) in MAY_SUCCEED:
            assert result.exit_code == 0, (what, result.output, result.stderr)
        else:
            _assert_one_line_error(result, what)
        if kind == "missing" and name not in CREATES:
            assert not db.exists(), f"{what} created it"
        if kind not in ("missing", "empty"):
            assert db.read_bytes() == before, f"{what} changed it"
        if kind == "sqlite" and name != "terms":
            assert "a SQLite file, not a DuckDB database" in result.stderr, what


def test_named_bad_inputs_are_one_line(tmp_path, series_db) -> None:
    runner = CliRunner()
    db = tmp_path / "db.duckdb"
    shutil.copyfile(series_db[1], db)
    cases = [
        (["report", "--quarter", "bogus", "--out", str(tmp_path / "r")], 2),
        (["signals", "--through", "bogus"], 2),
        (["update", "--since", "bogus", "--index-url", REFUSED, "--dest", str(tmp_path)], 2),
        (["--memory-limit", "lots", "status"], 2),
        (["sql", "SELECT * FROM nope"], 2),
        (["sql", "--timeout", "0", "SELECT 1"], 2),
        (["update", "--index-url", REFUSED, "--base-url", REFUSED, "--dest", str(tmp_path)], 1),
    ]
    for args, status in cases:
        result = runner.invoke(cli, [*args, "--db", str(db)])
        _assert_one_line_error(result, " ".join(args))
        assert result.exit_code == status, (args, result.stderr)
    # The update lock is released after the failures above.
    with update_lock(db):
        pass


def test_tracebacks_can_be_asked_for(monkeypatch, tmp_path) -> None:
    def broken(*_args: object, **_kwargs: object) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "db.duckdb"))

    monkeypatch.setattr("surveillance.api.Database.status", broken)
    db = tmp_path / "db.duckdb"
    connect(db).close()
    result = CliRunner().invoke(cli, ["status", "--db", str(db)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {db}: No space left on device\n"
    monkeypatch.setenv("SURVEILLANCE_TRACEBACK", "1")
    result = CliRunner().invoke(cli, ["status", "--db", str(db)])
    assert isinstance(result.exception, OSError)

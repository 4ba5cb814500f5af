"""The freshness chain raw -> clean -> extraction: runs killed between the steps of a load are
detected, read-write commands rebuild and say so, read-only ones refuse with one line; schema
migrations from every older version; a newer schema refused; memory limit and spilling."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from surveillance import freshness
from surveillance.api import Database
from surveillance.cli import cli
from surveillance.db import (
    SCHEMA_VERSION,
    connect,
    memory_limit_override,
    temp_directory,
)
from surveillance.errors import DatabaseError, LimitError, StaleDataError
from surveillance.extract import builtin_term_files
from surveillance.ingest import load as ingest_load
from surveillance.migrations import LATEST, MIGRATIONS
from surveillance.pipeline import load
from surveillance.query import run_sql
from surveillance.synthetic import generate_series


@pytest.fixture(scope="module")
def two_quarters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """Two generated quarters and a reference database loaded with both, uninterrupted."""
    tmp = tmp_path_factory.mktemp("fresh")
    series = generate_series(["2019Q1", "2019Q2"], tmp / "zips", n_cases=120, seed=11)
    q1, q2 = (q.zip_path for q in series.quarters)
    reference = tmp / "reference.duckdb"
    with connect(reference) as con:
        load(con, [q1, q2])
    return q1, q2, reference


def _only_first(tmp_path: Path, q1: Path) -> Path:
    db = tmp_path / "db.duckdb"
    with connect(db) as con:
        load(con, [q1])
    return db


def _killed_load(db: Path, zip_path: Path, target: str) -> None:
    """Load a zip in a subprocess that dies (os._exit, no clean-up) when `target` is called."""
    module, name = target.rsplit(".", 1)
    code = (
        "import os, sys, importlib; from pathlib import Path;"
        f"m = importlib.import_module({module!r});"
        f"setattr(m, {name!r}, lambda *a, **k: os._exit(9));"
        "from surveillance.db import connect; from surveillance.pipeline import load;"
        "load(connect(Path(sys.argv[1])), [Path(sys.argv[2])])"
    )
    done = subprocess.run([sys.executable, "-c", code, str(db), str(zip_path)], check=False)
    assert done.returncode == 9


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def _kratom_cases(db: Path) -> list[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT DISTINCT caseid FROM substance_hits WHERE substance = 'kratom' ORDER BY 1"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.mark.slow
def test_kill_between_clean_commit_and_extraction_is_caught(tmp_path, two_quarters) -> None:
    q1, q2, reference = two_quarters
    db = _only_first(tmp_path, q1)
    _killed_load(db, q2, "surveillance.extract.extract_builtins")
    with connect(db, read_only=True) as con:
        assert freshness.clean_is_current(con)  # the clean layer committed ...
        stale = freshness.check(con, builtin_term_files())  # ... the matches did not
    assert stale is not None and stale.layer == "extraction"
    assert _kratom_cases(db) != _kratom_cases(reference)
    # Read-only: refused in one line.
    code, out, err = _invoke("query", "substance_cases", "--db", str(db), "--format", "csv")
    assert code == 1 and out == ""
    assert err.splitlines() == [
        f"Error: {db}: the substance matches (7-oh, kratom) are older than the clean layer or "
        "their term file; run 'surveillance rebuild'"
    ]
    with Database(db, read_only=True) as ro, pytest.raises(StaleDataError):
        ro.cases()
    # Read-write: extracted again, said on stderr, and the same rows as an uninterrupted load.
    code, out, err = _invoke("cases", "--db", str(db), "--format", "csv")
    assert code == 0, err
    assert (
        "substance matches (7-oh, kratom) were older than the clean layer or their term file; "
        "extracted again"
    ) in err
    _, reference_out, _ = _invoke("cases", "--db", str(reference), "--format", "csv")
    assert out == reference_out
    assert _kratom_cases(db) == _kratom_cases(reference)


@pytest.mark.slow
def test_killed_multi_quarter_load_refuses_or_rebuilds(tmp_path, two_quarters) -> None:
    q1, q2, reference = two_quarters
    db = _only_first(tmp_path, q1)
    _killed_load(db, q2, "surveillance.clean.rebuild")
    code, out, _ = _invoke("status", "--db", str(db))
    assert code == 0 and "2019Q2" in out
    assert "derived tables: the clean layer is older than the loaded quarters" in out
    refusal = (
        f"Error: {db}: the clean layer is older than the loaded quarters (2019Q2 loaded since); "
        "run 'surveillance rebuild'"
    )
    for args in (["case", "1"], ["query", "substance_cases"], ["sql", "SELECT 1"]):
        code, out, err = _invoke(*args, "--db", str(db))
        assert (code, out, err.splitlines()) == (1, "", [refusal]), args
    code, out, err = _invoke("signals", "--db", str(db), "--format", "csv")
    assert code == 0, err
    assert "clean layer was older than the loaded quarters; rebuilt" in err.splitlines()
    _, reference_out, _ = _invoke("signals", "--db", str(reference), "--format", "csv")
    assert out == reference_out
    with connect(db, read_only=True) as con:
        assert freshness.check(con, builtin_term_files()) is None


def test_library_reads_rebuild_after_a_raw_only_load(tmp_path, two_quarters) -> None:
    q1, q2, reference = two_quarters
    db = _only_first(tmp_path, q1)
    with connect(db) as con:
        ingest_load(con, [q2])
    lines: list[str] = []
    with Database(db, log=lines.append) as rw:
        n_cases = len(rw.cases())
    assert lines == ["clean layer was older than the loaded quarters; rebuilt"]
    with Database(reference) as ref:
        assert n_cases == len(ref.cases())


def test_a_new_term_file_version_makes_the_matches_stale(two_quarters) -> None:
    with connect(two_quarters[2], read_only=True) as con:
        term_files = builtin_term_files()
        assert freshness.check(con, term_files) is None
        version, path = term_files["kratom"]
        stale = freshness.check(con, {**term_files, "kratom": (version + ".1", path)})
    assert stale is not None and stale.layer == "extraction"
    assert "(kratom)" in stale.refusal and "7-oh" not in stale.refusal


def test_rebuild_and_read_commands_never_create_a_database(tmp_path) -> None:
    missing = tmp_path / "nowhere" / "db.duckdb"
    for args in (["rebuild"], ["status"], ["cases"], ["case", "1"], ["sql", "SELECT 1"]):
        code, _, err = _invoke(*args, "--db", str(missing))
        assert code == 1
        assert err == f"Error: no database at {missing}; load quarters first or pass --db\n"
    assert not missing.exists() and not missing.parent.exists()
    with Database(missing) as db, pytest.raises(DatabaseError, match="no database at"):
        db.cases()
    assert not missing.exists()


def _downgrade_to_1(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE substance_runs DROP COLUMN data_fingerprint")


# How a database of each older schema version differs from the current one; a new migration
# needs its entry here (the test below checks that every older version is covered).
def _downgrade_to_2(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("ALTER TABLE load_log DROP COLUMN warning")


DOWNGRADES = {1: _downgrade_to_1, 2: _downgrade_to_2}


@pytest.mark.parametrize("version", range(1, LATEST))
def test_migrates_from_every_older_version(tmp_path, two_quarters, version) -> None:
    assert set(DOWNGRADES) == set(range(1, LATEST)) and LATEST == SCHEMA_VERSION
    assert [m.version for m in MIGRATIONS] == list(range(2, LATEST + 1))
    _, _, reference = two_quarters
    db = tmp_path / "old.duckdb"
    shutil.copyfile(reference, db)
    with duckdb.connect(str(db)) as con:
        for older in range(LATEST - 1, version - 1, -1):
            DOWNGRADES[older](con)
        con.execute("DELETE FROM schema_version")
        con.execute("INSERT INTO schema_version VALUES ($v)", {"v": version})
    with pytest.raises(DatabaseError, match=f"schema version {version} is older than this tool"):
        connect(db, read_only=True)
    with Database(db) as migrated:
        cases = migrated.cases()
        row = migrated.connection.execute("SELECT max(version) FROM schema_version").fetchone()
    assert row == (LATEST,)
    with Database(reference) as ref:
        assert cases.equals(ref.cases())


def test_newer_schema_is_refused(tmp_path, two_quarters) -> None:
    db = tmp_path / "new.duckdb"
    shutil.copyfile(two_quarters[2], db)
    with duckdb.connect(str(db)) as con:
        con.execute("INSERT INTO schema_version VALUES ($v)", {"v": LATEST + 1})
    expected = (
        f"Error: {db}: database schema version {LATEST + 1} is newer than this tool "
        f"({LATEST}); upgrade kratom-surveillance\n"
    )
    for args in (["status"], ["load", str(two_quarters[0])], ["cases"], ["sql", "SELECT 1"]):
        code, _, err = _invoke(*args, "--db", str(db))
        assert (code, err) == (1, expected), args


# A window over 1.5 million rows needs more than 30 MB: it completes only by spilling.
BIG_SORT = (
    "SELECT sum(x * rank) AS total FROM (SELECT x, row_number() OVER (ORDER BY hash(x)) AS rank "
    "FROM range(1500000) t(x))"
)


def test_every_connection_has_a_memory_limit_and_spills(tmp_path) -> None:
    db = tmp_path / "db.duckdb"
    with memory_limit_override("30MB"), connect(db) as con:
        settings = con.execute(
            "SELECT current_setting('memory_limit'), current_setting('temp_directory'), "
            "current_setting('autoload_known_extensions'), "
            "current_setting('autoinstall_known_extensions')"
        ).fetchone()
        assert settings == ("28.6 MiB", str(temp_directory(db)), False, False)
        row = con.execute(BIG_SORT).fetchone()
    with duckdb.connect() as plain:
        assert row == plain.execute(BIG_SORT).fetchone()
    # The same statement does not fit without a temp folder (as in the sql sandbox): the limit
    # binds, and spilling is what saved it above.
    with memory_limit_override("30MB"), pytest.raises(LimitError, match="memory cap"):
        run_sql(db, BIG_SORT)


def test_memory_limit_option_is_checked() -> None:
    code, _, err = _invoke("--memory-limit", "lots", "status")
    assert code == 2 and len(err.splitlines()) == 1 and "give a size such as 4GB" in err

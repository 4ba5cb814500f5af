"""A memory limit below a step's working set: the step spills to the temp folder beside the
database and completes with the same results; without a temp folder the same limit fails, so
spilling is what saved it. The limit comes from --memory-limit or SURVEILLANCE_MEMORY_LIMIT."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import stats
from surveillance.cli import cli
from surveillance.db import connect, memory_limit_override, temp_directory
from surveillance.extract import resolve
from surveillance.pipeline import load, rebuild
from surveillance.signals import signals
from surveillance.synthetic import write_full_size_quarter

pytestmark = pytest.mark.slow  # a strict rebuild at a 24 MB limit spills: seconds, not ms

# Below the working set of a strict rebuild of 8,000 reports (~100k rows), above DuckDB's floor
# (48 MB stopped being below it once the rebuild ranked narrow keys and fingerprinted sets).
LIMIT = "24MB"
# A fixed prior (openEBGM's CAERS estimates): the test is about memory, not the fit.
PRIOR = stats.Prior(3.254, 0.400, 2.026, 1.908, 0.0653, float("nan"), True, 0, 0, "fixed")


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("spill")
    zip_path = write_full_size_quarter("2025Q1", folder, n_reports=8000, seed=3)
    db = folder / "loaded.duckdb"
    with connect(db) as con:
        load(con, [zip_path])
    return db


def _copy(db: Path, name: str) -> Path:
    target = db.with_name(name)
    shutil.copyfile(db, target)
    return target


def _steps(con: duckdb.DuckDBPyConnection) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A strict rebuild (the widest window and join of the pipeline) and a signals run."""
    rebuild(con, dedup="strict")
    cases = con.execute("SELECT * FROM cases ORDER BY caseid").fetchdf()
    return cases, signals(con, resolve("kratom"), prior=PRIOR).table


def test_a_step_above_the_limit_spills_and_gives_the_same_results(loaded: Path) -> None:
    with connect(_copy(loaded, "free.duckdb")) as con:
        free_cases, free_signals = _steps(con)
    with memory_limit_override(LIMIT), connect(_copy(loaded, "capped.duckdb")) as con:
        plain = duckdb.connect()
        plain.execute(f"SET memory_limit = '{LIMIT}'")
        expected = plain.execute("SELECT current_setting('memory_limit')").fetchone()
        assert con.execute("SELECT current_setting('memory_limit')").fetchone() == expected
        capped_cases, capped_signals = _steps(con)
    pd.testing.assert_frame_equal(capped_cases, free_cases)
    pd.testing.assert_frame_equal(capped_signals, free_signals)
    assert len(free_cases) > 6000 and len(free_signals) > 0


def test_without_a_temp_folder_the_same_limit_fails(loaded: Path) -> None:
    with memory_limit_override(LIMIT), connect(_copy(loaded, "nospill.duckdb")) as con:
        con.execute("SET temp_directory = ''")
        with pytest.raises(duckdb.OutOfMemoryException):
            _steps(con)


def test_the_environment_limit_reaches_the_cli_and_spills(loaded: Path) -> None:
    db = _copy(loaded, "cli.duckdb")
    result = CliRunner().invoke(
        cli,
        ["rebuild", "--db", str(db), "--dedup", "strict"],
        env={"SURVEILLANCE_MEMORY_LIMIT": LIMIT},
    )
    assert result.exit_code == 0, result.stderr
    assert not list(temp_directory(db).glob("*")), "spill files are removed when work ends"


def test_a_limit_too_small_even_to_spill_is_one_line_naming_the_limit(loaded: Path) -> None:
    db = _copy(loaded, "tiny.duckdb")
    with duckdb.connect(str(db)) as con:
        before = con.execute("SELECT count(*) FROM cases").fetchone()
    result = CliRunner().invoke(
        cli,
        ["rebuild", "--db", str(db), "--dedup", "strict"],
        env={"SURVEILLANCE_MEMORY_LIMIT": "4MB"},
    )
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "out of memory" in result.stderr and "memory limit (4MB)" in result.stderr
    with duckdb.connect(str(db)) as con:
        assert con.execute("SELECT count(*) FROM cases").fetchone() == before

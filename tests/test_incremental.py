"""The incremental rebuild equals a full one: load some quarters, rebuild, load (or replace) more,
rebuild incrementally, then compare every clean table and the substance matches, as sorted sets
of rows, with a full rebuild of a copy of the same database."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from surveillance import clean, freshness
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.extract import builtin_term_files
from surveillance.ingest import load as ingest_load
from surveillance.pipeline import rebuild
from surveillance.synthetic import Series, generate_series

# LAERS -> FAERS between 2012Q3 and 2012Q4; deleted lists from 2019Q1.
QUARTERS = ["2012Q3", "2012Q4", "2018Q4", "2019Q1", "2019Q2"]
DERIVED = (
    "reports",
    "cases",
    "case_drugs",
    "case_reactions",
    "case_outcomes",
    "case_indications",
    "case_therapies",
    "pt_terms",
    "clean_keys",
    "clean_quarters",
    "substance_hits",
    "substance_strings",
    "substance_seen",
)


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> Series:
    return generate_series(QUARTERS, tmp_path_factory.mktemp("incr") / "zips", n_cases=150, seed=3)


@pytest.fixture(scope="module")
def other(tmp_path_factory: pytest.TempPathFactory) -> Series:
    """The same quarters with other content: replacements for a reloaded quarter."""
    return generate_series(QUARTERS, tmp_path_factory.mktemp("other") / "zips", n_cases=150, seed=4)


def _zip(series: Series, quarter: str) -> Path:
    return next(q.zip_path for q in series.quarters if q.quarter == quarter)


def _load(db: Path, zips: list[Path], **kwargs: object) -> dict[str, object]:
    """Load zips into the raw layer and rebuild; return the first step row of the rebuild."""
    with connect(db) as con:
        if zips:
            ingest_load(con, zips)
        steps = rebuild(con, incremental=True, **kwargs)  # type: ignore[arg-type]
        assert freshness.check(con, builtin_term_files()) is None
    return dict(steps.iloc[0])


def _rows(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {
            t: sorted(con.execute(f"SELECT * FROM {t}").fetchall(), key=repr) for t in DERIVED
        } | {"dedup_log": con.execute("SELECT step, n_reports, n_cases FROM dedup_log").fetchall()}


def _assert_equals_full(db: Path, tmp_path: Path) -> None:
    """Every derived table of `db` equals a full rebuild of a copy of it."""
    copy = tmp_path / f"full-{db.stem}.duckdb"
    shutil.copy(db, copy)
    with connect(copy) as con:
        assert rebuild(con)["rebuild_kind"].iloc[0] == "full"
    got, want = _rows(db), _rows(copy)
    for table in want:
        assert got[table] == want[table], table
    assert want["cases"] and want["substance_hits"]


@pytest.mark.slow
def test_new_quarters_across_eras_and_deleted_lists(series: Series, tmp_path: Path) -> None:
    """LAERS -> FAERS, then two quarters at once with the first deleted lists, then one more."""
    db = tmp_path / "db.duckdb"
    assert _load(db, [_zip(series, "2012Q3")])["rebuild_kind"] == "full"
    for quarters in (["2012Q4"], ["2018Q4", "2019Q1"], ["2019Q2"]):
        before = _caseids(db, "SELECT caseid FROM cases")
        step = _load(db, [_zip(series, q) for q in quarters])
        assert step["rebuild_kind"] == "incremental", quarters
        assert 0 < step["n_cases_rederived"] < len(_caseids(db, "SELECT caseid FROM cases"))
        if "2019Q1" in quarters:  # a deleted list removes cases of earlier quarters
            deleted = _caseids(db, "SELECT caseid FROM raw_deleted")
            assert deleted & before and not deleted & _caseids(db, "SELECT caseid FROM cases")
        _assert_equals_full(db, tmp_path)


def _caseids(db: Path, sql: str) -> set[str]:
    with duckdb.connect(str(db), read_only=True) as con:
        return {r[0] for r in con.execute(sql).fetchall()}


@pytest.mark.slow
def test_a_replaced_quarter(series: Series, other: Series, tmp_path: Path) -> None:
    """The cases of the rows a reloaded quarter no longer has are re-derived too."""
    db = tmp_path / "db.duckdb"
    _load(db, [_zip(series, q) for q in QUARTERS])
    for replacement in (_zip(other, "2018Q4"), _zip(series, "2018Q4")):
        assert _load(db, [replacement])["rebuild_kind"] == "incremental"
        _assert_equals_full(db, tmp_path)


@pytest.mark.slow
def test_a_changed_tool_version_or_definition_rebuilds_everything_a_dedup_mode_does_not(
    series: Series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.duckdb"
    _load(db, [_zip(series, q) for q in QUARTERS[:2]])
    assert _load(db, [_zip(series, QUARTERS[2])], dedup="strict")["rebuild_kind"] == "incremental"
    assert _load(db, [])["rebuild_kind"] == "incremental"  # strict stays strict
    assert _load(db, [], dedup="fda")["rebuild_kind"] == "incremental"
    monkeypatch.setattr(clean, "__version__", "0.0.0+other")
    assert _load(db, [])["rebuild_kind"] == "full"
    assert _load(db, [])["rebuild_kind"] == "incremental"
    # Code deriving the clean layer changed without a new version (a new column, a new rule).
    monkeypatch.setattr(clean, "clean_definition", lambda: "another definition")
    assert _load(db, [])["rebuild_kind"] == "full"
    assert _load(db, [])["rebuild_kind"] == "incremental"
    _assert_equals_full(db, tmp_path)


@pytest.mark.slow
def test_strict_mode_new_quarters_and_mode_switches_equal_a_full_rebuild(tmp_path: Path) -> None:
    """The strict passes compare all cases: after new quarters whose planted literature
    duplicates join groups of earlier quarters, and after switching to fda and back, every flag
    equals a full rebuild's in that mode."""
    quarters = ["2018Q4", "2019Q1", "2019Q2"]
    lit = generate_series(quarters, tmp_path / "zips", n_cases=40, seed=3, literature=True)
    db = tmp_path / "db.duckdb"
    assert _load(db, [_zip(lit, quarters[0])], dedup="strict")["rebuild_kind"] == "full"
    for quarter in quarters[1:]:
        assert _load(db, [_zip(lit, quarter)])["rebuild_kind"] == "incremental"
        _assert_equals_full(db, tmp_path)
    flagged = "SELECT caseid FROM cases WHERE literature_duplicate_of IS NOT NULL"
    assert _caseids(db, flagged)
    assert _load(db, [], dedup="fda")["rebuild_kind"] == "incremental"
    assert not _caseids(db, flagged)
    _assert_equals_full(db, tmp_path)
    assert _load(db, [], dedup="strict")["rebuild_kind"] == "incremental"
    assert _caseids(db, flagged)
    _assert_equals_full(db, tmp_path)


def test_a_killed_incremental_rebuild_leaves_the_database_as_it_was(
    series: Series, tmp_path: Path
) -> None:
    db = tmp_path / "db.duckdb"
    _load(db, [_zip(series, q) for q in QUARTERS[:3]])
    before = _rows(db)
    code = (
        "import os, sys; from pathlib import Path; import surveillance.clean as c;"
        "c._log_steps = lambda *a, **k: os._exit(9);"
        "from surveillance.db import connect; from surveillance.pipeline import load;"
        "load(connect(Path(sys.argv[1])), [Path(sys.argv[2])])"
    )
    zip_path = _zip(series, QUARTERS[3])
    done = subprocess.run([sys.executable, "-c", code, str(db), str(zip_path)], check=False)
    assert done.returncode == 9
    assert _rows(db) == before
    with connect(db) as con:
        stale = freshness.check(con, builtin_term_files())
        assert stale is not None and stale.layer == "clean"
        assert rebuild(con, incremental=True)["rebuild_kind"].iloc[0] == "incremental"
    _assert_equals_full(db, tmp_path)


def test_cli_rebuild_incremental_switches_the_mode_without_rederiving(
    series: Series, tmp_path: Path
) -> None:
    """`rebuild --dedup strict --incremental` re-derives nothing (an edit of the raw layer made
    other than by a load stays unseen) and records strict mode; a plain `rebuild` is full."""
    db = tmp_path / "db.duckdb"
    _load(db, [_zip(series, q) for q in QUARTERS[:2]])
    with connect(db) as con:
        caseid = con.execute("SELECT min(caseid) FROM cases").fetchone()[0]
        con.execute(
            "UPDATE raw_demo SET age = '33', age_cod = 'YR' WHERE caseid = $c", {"c": caseid}
        )
    age = "SELECT caseid FROM cases WHERE age_years = 33"
    runner = CliRunner()
    args = ["rebuild", "--db", str(db), "--dedup", "strict", "--incremental"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    with connect(db, read_only=True) as con:
        assert freshness.current_dedup(con) == "strict"
    assert caseid not in _caseids(db, age)
    result = runner.invoke(cli, ["rebuild", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert caseid in _caseids(db, age)


def test_status_says_whether_the_next_load_rebuilds_incrementally(
    series: Series, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.duckdb"
    _load(db, [_zip(series, q) for q in QUARTERS[:2]])
    runner = CliRunner()
    shown = runner.invoke(cli, ["status", "--db", str(db), "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["next_load_rebuild"] == "incremental"
    monkeypatch.setattr(clean, "clean_definition", lambda: "another definition")
    shown = runner.invoke(cli, ["status", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert (
        "next load's rebuild: full (the code that derives the clean layer changed since it was "
        "built)" in shown.output
    )

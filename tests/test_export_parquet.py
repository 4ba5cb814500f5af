"""`surveillance export DIR`: the clean layer and substance matches as Parquet partitioned by
quarter, read back by `open_export` with the same named-query results as the database, the
manifest checked (raw inputs, every file's sha256), and the command's refusals and failures."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import api, parquet
from surveillance.cli import cli
from surveillance.db import SCHEMA_VERSION, connect
from surveillance.errors import DatabaseError, InputError, StaleDataError, UsageError
from surveillance.freshness import data_fingerprint
from surveillance.parquet import CASE_TABLES, LOOKUP_TABLES, export_parquet, open_export
from surveillance.query import named_queries, run_query
from surveillance.synthetic import Series

EXPORTED = (*CASE_TABLES, *LOOKUP_TABLES)


@pytest.fixture(scope="module")
def db_copy(series_db: tuple[Series, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's series database, so that no other test's writes reach it."""
    path = tmp_path_factory.mktemp("export-db") / "db.duckdb"
    shutil.copy(series_db[1], path)
    return path


@pytest.fixture(scope="module")
def exported(db_copy: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """The copy exported once: the folder and the manifest returned."""
    dest = tmp_path_factory.mktemp("export") / "parquet"
    with connect(db_copy, read_only=True) as con:
        manifest = export_parquet(con, dest)
    return dest, manifest


@pytest.fixture
def db_con(db_copy: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(db_copy, read_only=True) as con:
        yield con


@pytest.fixture
def export_con(exported: tuple[Path, dict]) -> Iterator[duckdb.DuckDBPyConnection]:
    con = open_export(exported[0])
    yield con
    con.close()


def _tables_read(con: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    names = {r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    return {n for n in names if re.search(rf"\b{n}\b", sql)}


def _parameter_sets(con: duckdb.DuckDBPyConnection, query: Any) -> list[dict[str, Any]]:
    """Values for each named query: the defaults, and each substance and a kratom case."""
    caseid = con.execute(
        "SELECT min(caseid) FROM substance_hits WHERE substance = 'kratom'"
    ).fetchall()[0][0]
    given = {p.name for p in query.params}
    sets: list[dict[str, Any]] = [{"caseid": caseid} if "caseid" in given else {}]
    if "substance" in given:
        sets.append({"substance": "7-oh", "roles": "PS,SS"} if "roles" in given else {})
        sets[-1]["substance"] = "7-oh"
    required = {p.name for p in query.params if p.required}
    assert required <= set(sets[0]), f"{query.name}: give a value for {required - set(sets[0])}"
    return sets


def test_named_queries_give_the_database_results(
    db_con: duckdb.DuckDBPyConnection, export_con: duckdb.DuckDBPyConnection
) -> None:
    ran = []
    for query in named_queries().values():
        if not _tables_read(db_con, query.sql) <= set(EXPORTED):
            continue
        for params in _parameter_sets(db_con, query):
            expected = run_query(db_con, query.name, **params)
            found = run_query(export_con, query.name, **params)
            assert len(expected), f"{query.name} {params}: no rows to compare"
            pd.testing.assert_frame_equal(found, expected, obj=f"{query.name} {params}")
            ran.append(query.name)
    reads = {t for name in set(ran) for t in _tables_read(db_con, named_queries()[name].sql)}
    assert {"cases", "case_drugs", "case_reactions", "case_outcomes", "substance_hits"} <= reads


def test_rows_per_table_and_partition_equal_the_database(
    db_con: duckdb.DuckDBPyConnection,
    export_con: duckdb.DuckDBPyConnection,
    exported: tuple[Path, dict],
) -> None:
    manifest = exported[1]
    assert set(manifest["tables"]) == set(EXPORTED)
    for table in EXPORTED:
        entry = manifest["tables"][table]
        columns = [r[0] for r in db_con.execute(f"DESCRIBE {table}").fetchall()]
        n_rows = db_con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0]
        found = [r[0] for r in export_con.execute(f"DESCRIBE {table}").fetchall()]
        assert found == (columns if "quarter" in columns else [*columns, "quarter"])[: len(found)]
        assert found == [c["name"] for c in entry["columns"]]
        assert export_con.execute(f"SELECT count(*) FROM {table}").fetchall()[0][0] == n_rows
        assert entry["n_rows"] == n_rows
        if table in LOOKUP_TABLES:
            assert entry["files"] == [f"{table}.parquet"]
            continue
        assert n_rows > 0
        by_quarter = dict(
            db_con.execute(
                f"SELECT c.quarter, count(*) FROM {table} t JOIN cases c USING (caseid) GROUP BY 1"
            ).fetchall()
        )
        parts = {p["quarter"]: p["n_rows"] for p in entry["partitions"]}
        assert parts == by_quarter
        assert sum(parts.values()) == n_rows
        read_back = dict(
            export_con.execute(f"SELECT quarter, count(*) FROM {table} GROUP BY 1").fetchall()
        )
        assert read_back == by_quarter
        for p in entry["partitions"]:
            assert p["files"] == [f"{table}/quarter={p['quarter']}/data_0.parquet"]


def test_the_signal_strata_need_only_the_exported_cases(
    db_con: duckdb.DuckDBPyConnection, export_con: duckdb.DuckDBPyConnection
) -> None:
    """signals stratifies by the surviving report's sex, age and year (signals._STRATUM_SQL over
    `reports`); the exported `cases` gives the same strata, so `reports` need not be exported."""
    from surveillance.signals import _STRATUM_SQL

    strata = ", ".join(_STRATUM_SQL[s] for s in ("sex", "age", "year"))
    from_reports = db_con.execute(
        f"SELECT caseid, {strata} FROM (SELECT c.caseid, c.quarter, r.sex, r.age, r.age_cod "
        "FROM cases c JOIN reports r USING (source, primaryid)) ORDER BY caseid"
    ).fetchall()
    from_export = export_con.execute(
        "SELECT caseid, sex, age_group(age_years), left(quarter, 4) FROM cases ORDER BY caseid"
    ).fetchall()
    assert from_export == from_reports
    assert len({row[1:] for row in from_export}) > 10


def test_manifest_names_the_raw_inputs_and_the_data(
    db_con: duckdb.DuckDBPyConnection, exported: tuple[Path, dict]
) -> None:
    dest, manifest = exported
    assert json.loads((dest / "manifest.json").read_text()) == manifest
    assert manifest["schema_version"] == SCHEMA_VERSION
    assert manifest["data_fingerprint"] == data_fingerprint(db_con)
    assert manifest["synthetic"] is True
    assert manifest["dedup_mode"] == "fda"
    logged = db_con.execute("SELECT DISTINCT quarter, zip_sha256 FROM load_log").fetchall()
    by_quarter = {q["quarter"]: q for q in manifest["quarters"]}
    assert sorted(by_quarter) == sorted({q for q, _ in logged})
    for quarter, digest in logged:
        assert by_quarter[quarter]["zip_sha256"] == digest
    names = dict(db_con.execute("SELECT quarter, zip_name FROM quarters").fetchall())
    assert {q: e["zip_name"] for q, e in by_quarter.items()} == names
    runs = db_con.execute("SELECT substance, data_fingerprint FROM substance_runs").fetchall()
    assert {
        (s["substance"], s["data_fingerprint"]) for s in manifest["freshness"]["substances"]
    } == set(runs)
    files = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.parquet"))
    assert sorted(manifest["files"]) == files
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == parquet._sha256(dest / name)


def _damage(folder: Path, how: str) -> Path:
    victim = folder / "case_reactions" / "quarter=2019Q1" / "data_0.parquet"
    data = victim.read_bytes()
    if how == "modified":
        middle = len(data) // 2
        victim.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif how == "truncated":
        victim.write_bytes(data[: len(data) - 100])
    elif how == "missing":
        victim.unlink()
    else:
        victim = folder / "case_reactions" / "quarter=2019Q1" / "data_1.parquet"
        victim.write_bytes(data)
    return victim


@pytest.mark.parametrize("how", ["modified", "truncated", "missing", "added"])
def test_a_damaged_export_is_refused_naming_the_file(
    exported: tuple[Path, dict], tmp_path: Path, how: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported[0], copy)
    victim = _damage(copy, how)
    with pytest.raises(InputError) as caught:
        open_export(copy)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(str(victim.resolve()))


def _hostile_type(manifest: dict) -> dict:
    tables = json.loads(json.dumps(manifest["tables"]))
    tables["case_therapies"]["files"] = []
    tables["case_therapies"]["columns"][0]["type"] = "VARCHAR); DROP TABLE x; --"
    return dict(manifest, tables=tables)


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (lambda m: dict(m, schema_version=SCHEMA_VERSION + 1), "schema version"),
        (lambda m: dict(m, format="something else"), "not a manifest"),
        (lambda m: dict(m, files=["cases"]), "malformed manifest"),
        (lambda m: dict(m, files={"../db.duckdb": {}}), "outside the export"),
        (_hostile_type, "malformed manifest"),
    ],
)
def test_a_bad_manifest_is_refused(
    exported: tuple[Path, dict], tmp_path: Path, edit: Any, reason: str
) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(exported[0], copy)
    (copy / "manifest.json").write_text(json.dumps(edit(exported[1])))
    with pytest.raises(InputError, match=reason) as caught:
        open_export(copy)
    assert "\n" not in str(caught.value)


def test_an_empty_table_reads_back_with_its_columns(db_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    shutil.copy(db_copy, db)
    with connect(db) as con:
        con.execute("DELETE FROM case_therapies")
        columns = con.execute("DESCRIBE case_therapies").fetchall()
        steps: list[str] = []
        manifest = export_parquet(con, tmp_path / "out", progress=steps.append)
    assert steps == [*(f"exporting {t}" for t in EXPORTED), "checksums"]
    assert manifest["tables"]["case_therapies"]["files"] == []
    with open_export(tmp_path / "out") as con:
        found = con.execute("DESCRIBE case_therapies").fetchall()
        assert con.execute("SELECT count(*) FROM case_therapies").fetchall() == [(0,)]
    assert [r[:2] for r in found] == [*(r[:2] for r in columns), ("quarter", "VARCHAR")]


def test_a_stale_clean_layer_is_refused(db_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    shutil.copy(db_copy, db)
    with connect(db) as con:
        con.execute("UPDATE dedup_log SET raw_fingerprint = 'older'")
        with pytest.raises(StaleDataError, match="surveillance rebuild"):
            export_parquet(con, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [db]


def test_a_child_row_without_its_case_stops_the_export(db_copy: Path, tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    shutil.copy(db_copy, db)
    with connect(db) as con:
        n_rows = con.execute("SELECT count(*) FROM case_reactions").fetchall()[0][0]
        con.execute(
            "INSERT INTO case_reactions (caseid, primaryid, source, pt, pt_key) "
            "VALUES ('no-such-case', '1', 'FAERS', 'Nausea', 'NAUSEA')"
        )
        with pytest.raises(DatabaseError, match=f"case_reactions: wrote {n_rows:,} rows of "):
            export_parquet(con, tmp_path / "out")
    assert list(tmp_path.iterdir()) == [db]


def test_refused_destinations(
    db_con: duckdb.DuckDBPyConnection, db_copy: Path, tmp_path: Path
) -> None:
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    not_export = tmp_path / "mine"
    not_export.mkdir()
    (not_export / "notes.txt").write_text("keep")
    for dest, force, reason in (
        (db_copy, True, "is or holds the database"),
        (db_copy.parent, True, "is or holds the database"),
        (a_file, True, "is a file"),
        (a_file / "sub", True, "is inside"),
        (not_export, False, "use --force"),
        (not_export, True, "is not a Parquet export"),
    ):
        with pytest.raises(UsageError, match=reason):
            export_parquet(db_con, dest, force=force)
    assert (not_export / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "mine"]


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_cli_exports_and_replaces_only_with_force(db_copy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    first = _run("export", "--db", str(db_copy), str(dest), "--quiet")
    assert first.exit_code == 0, first.output
    assert first.stdout.splitlines() == [first.stdout.strip()]
    assert first.stdout.startswith(f"exported {len(EXPORTED)} tables, ")
    assert first.stdout.strip().endswith(f"-> {dest}")
    again = _run("export", "--db", str(db_copy), str(dest))
    assert again.exit_code == 2
    assert again.stderr == f"Error: {dest}: exists and is not empty; use --force to replace it\n"
    (dest / "stray.parquet").write_bytes(b"left from before")
    forced = _run("export", "--db", str(db_copy), str(dest), "--force")
    assert forced.exit_code == 0, forced.output
    assert not (dest / "stray.parquet").exists()
    api.open_export(dest).close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_cli_failure_leaves_nothing(
    db_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_table = parquet._write_table

    def failing(con: duckdb.DuckDBPyConnection, table: str, root: Path) -> Any:
        if table == "substance_hits":
            raise duckdb.IOException("IO Error: No space left on device\nmore detail")
        return write_table(con, table, root)

    monkeypatch.setattr(parquet, "_write_table", failing)
    dest = tmp_path / "out"
    result = _run("export", "--db", str(db_copy), str(dest))
    assert result.exit_code == 1
    assert result.stderr == (
        f"Error: {dest}: cannot write the export: IO Error: No space left on device\n"
    )
    assert list(tmp_path.iterdir()) == []


def test_cli_errors_are_one_line(db_copy: Path, tmp_path: Path) -> None:
    missing = _run("export", "--db", str(tmp_path / "none.duckdb"), str(tmp_path / "out"))
    assert missing.exit_code == 1
    assert missing.stderr.count("\n") == 1 and "no database at" in missing.stderr
    usage = _run("export", "--db", str(db_copy))
    assert usage.exit_code == 2
    assert usage.stderr.count("\n") == 1 and "Missing argument 'DEST'" in usage.stderr
    stale = tmp_path / "stale.duckdb"
    shutil.copy(db_copy, stale)
    with connect(stale) as con:
        con.execute("UPDATE dedup_log SET raw_fingerprint = 'older'")
    refused = _run("export", "--db", str(stale), str(tmp_path / "out"))
    assert refused.exit_code == 1
    assert refused.stderr.count("\n") == 1 and "run 'surveillance rebuild'" in refused.stderr
    assert not (tmp_path / "out").exists()


def test_cli_final_line_is_terminal_safe(db_copy: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out\x1b[2J\x07"
    result = _run("export", "--db", str(db_copy), str(dest), "--quiet")
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout
    assert result.stdout.strip().endswith("out^[[2J^G")
    assert dest.is_dir()

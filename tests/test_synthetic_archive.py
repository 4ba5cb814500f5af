"""Tests of the SYNTHETIC whole-archive generator (`write_archive`) at a tiny scale.

Two short runs across the LAERS -> FAERS switch (2012Q2-2013Q1) and the start of deleted lists
(2018Q4-2019Q2), each loaded with the pipeline as a user would; the eras and growth figures
are written out here from shared/faers-format.md and the issue, not read from the generator.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import duckdb
import pytest

from surveillance.db import connect
from surveillance.pipeline import load
from surveillance.synthetic import (
    KRATOM_DRUGNAMES,
    SEVEN_OH_DRUGNAMES,
    ArchiveQuarter,
    _archive_mix,
    archive_quarters,
    archive_reports,
    write_archive,
)

# The archive generator serves the benchmark; building its 50,000-string vocabulary and two
# loaded runs take tens of seconds, so the module is in the slow tier (CI runs both tiers).
pytestmark = pytest.mark.slow

SCALE = 0.005
SEED = 11
SWITCH = ("2012Q2", "2013Q1")
DELETIONS = ("2018Q4", "2019Q2")
# quarter -> (zip name, era, source), as the FDA publishes them
ERAS = {
    "2012Q2": ("aers_ascii_2012q2.zip", "L1", "LAERS"),
    "2012Q3": ("aers_ascii_2012q3.zip", "L1", "LAERS"),
    "2012Q4": ("faers_ascii_2012q4.zip", "FA", "FAERS"),
    "2013Q1": ("faers_ascii_2013q1.zip", "FA", "FAERS"),
    "2018Q4": ("faers_ascii_2018q4.zip", "FB", "FAERS"),
    "2019Q1": ("faers_ascii_2019Q1.zip", "FB", "FAERS"),
    "2019Q2": ("faers_ascii_2019Q2.zip", "FB", "FAERS"),
}


def _loaded(tmp: Path, span: tuple[str, str]) -> tuple[list[ArchiveQuarter], Path]:
    results = write_archive(tmp / "zips", first=span[0], last=span[1], scale=SCALE, seed=SEED)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
    return results, db


@pytest.fixture(scope="module")
def switch(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ArchiveQuarter], Path]:
    return _loaded(tmp_path_factory.mktemp("switch"), SWITCH)


@pytest.fixture(scope="module")
def deletions(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[ArchiveQuarter], Path]:
    return _loaded(tmp_path_factory.mktemp("deletions"), DELETIONS)


def _query(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


@pytest.mark.parametrize("fixture", ["switch", "deletions"])
def test_every_zip_loads_in_its_era_without_quarantine(fixture, request):
    results, db = request.getfixturevalue(fixture)
    # nothing but the deleted lists' first line, a single space (as the FDA writes them)
    quarantined = _query(db, "SELECT file, line_number, raw_text FROM quarantine ORDER BY 1")
    lists = [f"Deleted/DELETE{r.quarter[2:]}.txt" for r in results if r.quarter >= "2019Q1"]
    assert quarantined == [(name, 1, " ") for name in lists]
    loaded = _query(db, "SELECT quarter, zip_name, era, source, synthetic FROM quarters ORDER BY 1")
    assert loaded == [(r.quarter, *ERAS[r.quarter], True) for r in results]
    for r in results:
        with zipfile.ZipFile(r.zip_path) as zf:
            assert "SYNTHETIC DATA" in zf.read("README_SYNTHETIC.txt").decode()


@pytest.mark.parametrize("fixture", ["switch", "deletions"])
def test_reported_row_counts_are_the_rows_loaded(fixture, request):
    results, db = request.getfixturevalue(fixture)
    for table in ("demo", "drug", "reac"):
        stored = dict(_query(db, f"SELECT quarter, count(*) FROM raw_{table} GROUP BY 1"))
        assert stored == {r.quarter: r.rows[table] for r in results}, table


def test_volumes_follow_the_growth_curve(switch):
    results, _ = switch
    # 100,000 reports in 2004Q1 growing 4-fold to 2024Q1 (exponential), flat after
    for r in results:
        k = (int(r.quarter[:4]) - 2004) * 4 + int(r.quarter[-1]) - 1
        assert r.rows["demo"] == round(SCALE * 100_000 * 4 ** (k / 80))
        assert r.rows["demo"] == r.n_new_cases + r.n_follow_ups
        assert 3.8 < r.rows["drug"] / r.rows["demo"] < 4.2  # 69.8 M DRUG / 17.6 M DEMO
        assert 2.6 < r.rows["reac"] / r.rows["demo"] < 3.4  # 52.2 M REAC / 17.6 M DEMO
    demo = [r.rows["demo"] for r in results]
    assert demo == sorted(demo) and demo[0] < demo[-1]
    assert archive_reports("2004Q1") == 100_000
    assert archive_reports("2024Q1") == archive_reports("2026Q3") == 400_000
    total = sum(archive_reports(f"{y}Q{n}") for y in range(2004, 2024) for n in (1, 2, 3, 4))
    assert 17_000_000 < total + archive_reports("2024Q1") < 18_000_000


def test_follow_ups_cross_quarters_and_the_laers_faers_switch(switch):
    results, db = switch
    assert results[0].n_follow_ups == 0
    assert all(r.n_follow_ups > 0.15 * r.rows["demo"] for r in results[1:])
    # caseid -> the sources and quarters it was reported in
    spans = _query(
        db,
        "SELECT caseid, list(DISTINCT source ORDER BY source), list(quarter ORDER BY quarter) "
        "FROM raw_demo GROUP BY caseid",
    )
    crossing = [c for c, sources, _ in spans if sources == ["FAERS", "LAERS"]]
    within_laers = [c for c, s, qs in spans if s == ["LAERS"] and len(qs) > 1]
    within_faers = [c for c, s, qs in spans if s == ["FAERS"] and len(qs) > 1]
    assert crossing and within_laers and within_faers
    assert all(len(qs) == len(set(qs)) for _, _, qs in spans)  # one report a quarter
    # a legacy case continues in FAERS with caseversion 1, a FAERS case with the next version
    versions = _query(
        db,
        "SELECT caseid, list(caseversion::INT ORDER BY quarter) FROM raw_demo "
        "WHERE source = 'FAERS' GROUP BY caseid HAVING count(*) > 1",
    )
    assert versions and all(v[1] == v[0] + 1 for _, v in versions)
    (n_cases,) = _query(db, "SELECT count(*) FROM cases")[0]
    assert n_cases == sum(r.n_new_cases for r in results) == len(spans)


def test_deleted_lists_start_in_2019q1_and_name_earlier_cases(deletions):
    results, db = deletions
    by_quarter = {r.quarter: r for r in results}
    assert by_quarter["2018Q4"].n_deleted == 0
    with zipfile.ZipFile(by_quarter["2018Q4"].zip_path) as zf:
        assert not [n for n in zf.namelist() if n.lower().startswith("deleted/")]
    deleted = _query(db, "SELECT quarter, caseid FROM raw_deleted")
    for quarter in ("2019Q1", "2019Q2"):
        named = {c for q, c in deleted if q == quarter}
        assert len(named) == by_quarter[quarter].n_deleted > 0
        earlier = {
            c for (c,) in _query(db, f"SELECT caseid FROM raw_demo WHERE quarter < '{quarter}'")
        }
        later = {
            c for (c,) in _query(db, f"SELECT caseid FROM raw_demo WHERE quarter >= '{quarter}'")
        }
        assert named <= earlier and not named & later
    surviving = _query(
        db, "SELECT count(*) FROM cases WHERE caseid IN (SELECT caseid FROM raw_deleted)"
    )
    assert surviving == [(0,)]


def test_kratom_is_rare_and_rises_after_2016():
    # expected kratom and 7-OH drug rows per quarter at scale 1: reports x 4 drugs x share
    expected: dict[str, dict[str, float]] = {"kratom": {}, "7oh": {}}
    for q in archive_quarters():
        rows = archive_reports(q) * 4
        for names, _, share in _archive_mix(q):
            if names is KRATOM_DRUGNAMES:
                expected["kratom"][str(q)] = rows * share
            elif names is SEVEN_OH_DRUGNAMES:
                expected["7oh"][str(q)] = rows * share
    kratom, seven_oh = expected["kratom"], expected["7oh"]
    assert 500 < sum(kratom.values()) < 5000
    assert sum(v for q, v in kratom.items() if q >= "2016Q1") > 0.9 * sum(kratom.values())
    assert kratom["2004Q1"] < 1 < kratom["2016Q1"] < kratom["2020Q1"] < kratom["2026Q3"]
    assert min(seven_oh) == "2022Q1" and 100 < sum(seven_oh.values()) < 1000


def test_same_bytes_with_two_workers_and_a_resumed_run(tmp_path, switch):
    results, _ = switch
    out = tmp_path / "zips"
    first = write_archive(out, SWITCH[0], "2012Q3", scale=SCALE, seed=SEED)
    kept = first[0].zip_path.stat().st_mtime_ns
    first[1].zip_path.unlink()  # as if killed while writing this quarter
    (out / "faers_ascii_2012q4.zip.partial").write_bytes(b"half a zip")
    again = write_archive(out, *SWITCH, scale=SCALE, seed=SEED, workers=2)
    assert first[0].zip_path.stat().st_mtime_ns == kept
    assert again == [*first[:1], *again[1:]]
    for old, new in zip(results, again, strict=True):
        assert new.zip_path.read_bytes() == old.zip_path.read_bytes(), old.quarter
        assert (new.rows, new.n_new_cases, new.n_follow_ups) == (
            old.rows,
            old.n_new_cases,
            old.n_follow_ups,
        )
    assert not list(out.glob("*.partial"))
    with pytest.raises(ValueError, match=r"seed 11 and scale 0\.005"):
        write_archive(out, *SWITCH, scale=SCALE, seed=SEED + 1)


def test_every_quarter_has_herbal_products_for_the_natural_products_comparator(deletions):
    # without them the report's natural-products analysis has no background and is skipped
    _, db = deletions
    herbal = _query(
        db,
        "SELECT quarter, count(*) FROM raw_drug WHERE prod_ai LIKE 'HERBALS\\%' ESCAPE '!' "
        "AND NOT prod_ai LIKE '%MITRAGYNINE%' GROUP BY quarter ORDER BY quarter",
    )
    assert [q for q, _ in herbal] == ["2018Q4", "2019Q1", "2019Q2"]
    assert all(n > 5 for _, n in herbal)

"""Generated multi-era series -> load -> clean layer and kratom extraction equal the ground truth:
versions, republished primaryids, deletions across quarters, legacy-to-FAERS follow-ups."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance.cases import cases
from surveillance.clean import ensure_macros
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.pipeline import load, rebuild
from surveillance.synthetic import Series, generate_series


def _truth(series: Series) -> pd.DataFrame:
    return series.cases[series.cases["surviving"]].set_index("caseid")


def test_surviving_cases_equal_truth(series_db, series_con) -> None:
    series, con = series_db[0], series_con
    truth = _truth(series)
    got = con.execute("SELECT caseid, primaryid, quarter, source FROM cases").fetchdf()
    got = got.set_index("caseid").sort_index()
    assert sorted(got.index) == sorted(truth.index)
    assert (got["primaryid"] == truth.loc[got.index, "primaryid_latest"]).all()
    assert (got["quarter"] == truth.loc[got.index, "quarter_latest"]).all()
    assert (got["source"] == truth.loc[got.index, "source_of_latest"]).all()


def test_initial_quarter_equals_truth(series_db, series_con) -> None:
    """New case = initial FDA receipt (definitions.NEW_CASE), not the latest version's quarter."""
    truth = _truth(series_db[0])
    got = series_con.execute(
        "SELECT caseid, initial_quarter, first_version_quarter FROM cases"
    ).fetchdf()
    got = got.set_index("caseid").sort_index()
    assert (got["initial_quarter"] == truth.loc[got.index, "quarter_initial"]).all()
    assert (got["first_version_quarter"] == truth.loc[got.index, "quarter_first_version"]).all()
    # What makes the definition matter is planted: follow-ups of kratom cases first received
    # in an earlier loaded quarter, and versions whose first receipt predates the loaded data.
    loaded = {q.quarter for q in series_db[0].quarters}
    followed_up = truth[truth["quarter_initial"] < truth["quarter_latest"]]
    assert (followed_up["quarter_initial"].isin(loaded) & followed_up["is_kratom"]).sum() > 5
    assert (~truth["quarter_initial"].isin(loaded) & truth["is_kratom"]).sum() > 5


def test_initial_receipt_rules_on_hand_made_versions() -> None:
    """Earliest init_fda_dt across versions; partial dates from their first day; a year-only or
    missing date, or one after the first version's quarter, gives way to that quarter."""
    con = duckdb.connect()
    con.execute("CREATE TABLE raw_demo (caseid VARCHAR, quarter VARCHAR, init_fda_dt VARCHAR)")
    con.execute(
        "INSERT INTO raw_demo VALUES "
        "('1', '2020Q3', '20200815'), ('1', '2020Q4', '20200301'), "  # earliest wins
        "('2', '2021Q2', '202104'), ('2', '2021Q3', '20210430'), "  # a partial month
        "('3', '2022Q1', '2019'), "  # year only
        "('4', '2022Q2', NULL), ('4', '2022Q4', NULL), "  # none: first version
        "('5', '2018Q1', '20181120'), "  # later than the first version seen
        "('6', '2017Q4', 'junk'), ('6', '2017Q4', '20170230')"  # invalid dates
    )
    ensure_macros(con)
    rows = con.execute(
        "SELECT caseid, initial_quarter, initial_receipt_date, initial_receipt_precision "
        "FROM initial_receipts(NULL) ORDER BY caseid"
    ).fetchall()
    assert rows == [
        ("1", "2020Q1", "2020-03-01", "day"),
        ("2", "2021Q2", "2021-04", "month"),
        ("3", "2022Q1", "2019", "year"),
        ("4", "2022Q2", None, None),
        ("5", "2018Q1", "2018-11-20", "day"),
        ("6", "2017Q4", None, None),
    ]
    as_of = con.execute(
        "SELECT initial_quarter FROM initial_receipts('2020Q3') WHERE caseid = '1'"
    ).fetchall()
    assert as_of == [("2020Q3",)]


def test_the_planted_hard_cases_are_present(series_db, series_con) -> None:
    """The series really contains what the dedup rules are for, so the test above means it."""
    series, con = series_db[0], series_con
    republished = con.execute(
        "SELECT count(*) FROM (SELECT source, primaryid FROM raw_demo "
        "GROUP BY ALL HAVING count(DISTINCT quarter) > 1)"
    ).fetchone()
    assert republished and republished[0] > 0
    cross_era = con.execute(
        "SELECT count(*) FROM (SELECT caseid FROM raw_demo GROUP BY caseid "
        "HAVING count(DISTINCT source) = 2)"
    ).fetchone()
    assert cross_era and cross_era[0] > 0
    deleted_earlier = con.execute(
        "SELECT count(*) FROM raw_deleted d JOIN raw_demo r USING (caseid) "
        "WHERE r.quarter < d.quarter"
    ).fetchone()
    assert deleted_earlier and deleted_earlier[0] > 0
    assert (~series.cases["surviving"]).sum() > 0
    assert (series.cases["is_kratom"] & series.cases["surviving"]).sum() > 20


def test_kratom_cases_equal_truth_and_exclude_decoys(series_db, series_con) -> None:
    series, con = series_db[0], series_con
    truth = _truth(series)
    got = set(cases(con, resolve("kratom"))["caseid"])
    assert got == set(truth.index[truth["is_kratom"]])
    decoy_only = set(truth.index[truth["has_decoy"] & ~truth["is_kratom"]])
    assert decoy_only and not (got & decoy_only)


def test_7oh_cases_equal_truth(series_db, series_con) -> None:
    series, con = series_db[0], series_con
    truth = _truth(series)
    got = set(cases(con, resolve("7-oh"))["caseid"])
    want = set(truth.index[truth["is_7oh"]])
    assert want and got == want


def test_filters_roles_quarters_terms(series_con) -> None:
    con = series_con
    kratom = resolve("kratom")
    everything = cases(con, kratom)
    suspects = cases(con, kratom, roles="PS,SS")
    assert 0 < len(suspects) < len(everything)
    assert all(set(r) <= {"PS", "SS"} for r in suspects["roles"])
    recent = cases(con, kratom, since="2019Q1", until="2019Q4")
    assert len(recent) and set(recent["quarter"]) <= {"2019Q1", "2019Q2"}
    withdrawal = cases(con, kratom, term="withdrawal")
    assert len(withdrawal) and all(
        any("withdrawal" in pt.lower() for pt in r) for r in withdrawal["reactions"]
    )


def test_rebuild_is_idempotent_and_strict_only_flags(series_con) -> None:
    con = series_con
    before = con.execute("SELECT * FROM cases ORDER BY caseid").fetchdf()
    rebuild(con, dedup="fda")
    pd.testing.assert_frame_equal(
        con.execute("SELECT * FROM cases ORDER BY caseid").fetchdf(), before
    )
    rebuild(con, dedup="strict")
    strict = con.execute("SELECT * FROM cases ORDER BY caseid").fetchdf()
    assert len(strict) == len(before)
    steps = con.execute("SELECT step, dedup_mode FROM dedup_log ORDER BY step_order").fetchall()
    assert steps[-1][1] == "strict" and "strict" in steps[-1][0]
    rebuild(con, dedup="fda")


def _complete_cases(con: duckdb.DuckDBPyConnection, n: int) -> list[str]:
    """The first n caseids with every key the strict rule compares present."""
    return [
        r[0]
        for r in con.execute(
            "SELECT caseid FROM cases WHERE event_dt IS NOT NULL AND age_years IS NOT NULL "
            "AND sex <> 'unknown' AND country IS NOT NULL ORDER BY caseid LIMIT $n",
            {"n": n},
        ).fetchall()
    ]


def _plant_duplicate(
    con: duckdb.DuckDBPyConnection, a: str, b: str, reordered: bool = False
) -> None:
    """Make b a copy of a in everything the strict rule compares, as a duplicate report is
    (drug and reaction rows in reverse order if `reordered`); a is the later report."""
    for table in ("raw_drug", "raw_reac"):
        con.execute(f"DELETE FROM {table} WHERE caseid = $b", {"b": b})
        order = "ORDER BY source_line DESC" if reordered else ""
        con.execute(
            f"INSERT INTO {table} SELECT * REPLACE ($b AS caseid, "
            f"(SELECT primaryid FROM raw_demo WHERE caseid = $b) AS primaryid) "
            f"FROM {table} WHERE caseid = $a {order}",
            {"a": a, "b": b},
        )
    con.execute(
        "UPDATE raw_demo SET event_dt = s.event_dt, age = s.age, age_cod = s.age_cod, "
        "sex = s.sex, reporter_country = s.reporter_country, fda_dt = '20240101' "
        "FROM (SELECT * FROM raw_demo WHERE caseid = $a) s WHERE raw_demo.caseid = $b",
        {"a": a, "b": b},
    )
    con.execute("UPDATE raw_demo SET fda_dt = '20240301' WHERE caseid = $a", {"a": a})


@pytest.mark.slow
def test_strict_flags_a_planted_duplicate(tmp_path: Path) -> None:
    """Two different caseids with identical keys, drugs and reactions: the later is kept."""
    series = generate_series(["2024Q1"], tmp_path / "zips", n_cases=60, seed=9, damage=False)
    with connect(tmp_path / "db.duckdb") as con:
        load(con, [tmp_path / "zips"])
        a, b = _complete_cases(con, 2)
        _plant_duplicate(con, a, b)
        rebuild(con, dedup="strict")
        flags = dict(
            con.execute(
                "SELECT caseid, strict_duplicate_of FROM cases WHERE caseid IN ($a, $b)",
                {"a": a, "b": b},
            ).fetchall()
        )
        assert flags == {a: None, b: a}
        assert len(series.cases) > 0


def test_typed_fields(series_con) -> None:
    con = series_con
    frame = con.execute("SELECT * FROM cases").fetchdf()
    assert set(frame["sex"]) <= {"M", "F", "unknown"}
    assert frame["age_years"].dropna().between(0, 120).all()
    assert set(frame["event_dt_precision"].dropna()) <= {"day", "month", "year"}
    partial = frame[frame["event_dt_precision"].isin(["month", "year"])]
    assert len(partial) and partial["event_date"].isna().all()  # never invent days
    assert frame["country"].dropna().str.fullmatch(r"[A-Z]{2}").all()
    legacy = frame[frame["source"] == "LAERS"]
    assert len(legacy) and legacy["country"].notna().any()
    terms = con.execute("SELECT pt FROM pt_terms").fetchdf()["pt"]
    assert not terms.str.fullmatch(r"[A-Z .,\-()0-9]+").any()  # no shouting legacy spellings


def test_cli_cases_and_case(series_db) -> None:
    series, db = series_db
    runner = CliRunner()
    out = runner.invoke(cli, ["cases", "--db", str(db), "--format", "csv"])
    assert out.exit_code == 0, out.output
    header = out.output.splitlines()[0].split(",")
    assert header[:9] == [
        "caseid",
        "primaryid",
        "quarter",
        "fda_dt",
        "event_dt",
        "age_years",
        "sex",
        "country",
        "reporter_type",
    ]
    assert {"roles", "matched_strings", "reactions", "outcomes", "co_reported"} <= set(header)
    some = _truth(series).query("is_kratom").index[0]
    detail = runner.invoke(cli, ["case", some, "--db", str(db)])
    assert detail.exit_code == 0 and "== drugs" in detail.output and "versions" in detail.output
    missing = runner.invoke(cli, ["case", "999999999999", "--db", str(db)])
    assert missing.exit_code == 1 and "no case 999999999999" in missing.output


# The strict rule as first written (sorted lists of every case's drug and reaction sets), the
# oracle for the candidate-first pass in clean.STRICT.
_STRICT_ORACLE = """
WITH drug_sets AS (
    SELECT caseid, list_sort(list_distinct(list(upper(trim(drugname))))) AS drug_set
    FROM case_drugs WHERE drugname IS NOT NULL GROUP BY caseid),
reaction_sets AS (
    SELECT caseid, list_sort(list_distinct(list(pt_key))) AS reaction_set
    FROM case_reactions GROUP BY caseid),
keys AS (
    SELECT c.caseid, c.fda_dt, c.primaryid, c.event_dt, c.age_years, c.sex, c.country,
        g.drug_set, r.reaction_set
    FROM cases c LEFT JOIN drug_sets g USING (caseid) LEFT JOIN reaction_sets r USING (caseid))
SELECT caseid, first_value(caseid) OVER (
    PARTITION BY event_dt, age_years, sex, country, drug_set, reaction_set
    ORDER BY fda_dt DESC, try_cast(primaryid AS BIGINT) DESC) AS keeper
FROM keys
WHERE event_dt IS NOT NULL AND age_years IS NOT NULL AND sex <> 'unknown'
  AND country IS NOT NULL AND drug_set IS NOT NULL AND reaction_set IS NOT NULL
"""


def test_strict_pass_equals_the_list_rule(tmp_path: Path) -> None:
    """Planted duplicates (exact, reordered with a repeated drug) and near misses (one drug
    differs, one reaction more): the candidate-first pass flags exactly what the rule does."""
    generate_series(["2024Q1"], tmp_path / "zips", n_cases=120, seed=11, damage=False)
    with connect(tmp_path / "db.duckdb") as con:
        load(con, [tmp_path / "zips"])
        complete = _complete_cases(con, 10)
        plans = list(
            zip(
                complete[0::2],
                complete[1::2],
                ["same", "reordered", "drug", "reac", "same"],
                strict=True,
            )
        )
        for i, (a, b, how) in enumerate(plans):
            _plant_duplicate(con, a, b, reordered=how == "reordered")
            if how == "reordered":  # a drug listed twice is one member of the set
                con.execute(
                    "INSERT INTO raw_drug SELECT * REPLACE (source_line + 100000 AS source_line) "
                    "FROM raw_drug WHERE caseid = $b LIMIT 1",
                    {"b": b},
                )
            if how == "drug":
                con.execute(
                    "UPDATE raw_drug SET drugname = 'NEAR MISS ' || $i WHERE caseid = $b "
                    "AND source_line = (SELECT min(source_line) FROM raw_drug WHERE caseid = $b)",
                    {"b": b, "i": i},
                )
            if how == "reac":
                con.execute(
                    "INSERT INTO raw_reac SELECT * REPLACE (source_line + 100000 AS source_line, "
                    "'Near miss' AS pt) FROM raw_reac WHERE caseid = $b LIMIT 1",
                    {"b": b},
                )
        rebuild(con, dedup="strict")
        flagged = dict(
            con.execute(
                "SELECT caseid, strict_duplicate_of FROM cases "
                "WHERE strict_duplicate_of IS NOT NULL"
            ).fetchall()
        )
        oracle = dict(
            con.execute(
                f"SELECT caseid, keeper FROM ({_STRICT_ORACLE}) WHERE keeper <> caseid"
            ).fetchall()
        )
        assert flagged == oracle
        expected = {b: a for a, b, how in plans if how in ("same", "reordered")}
        assert expected.items() <= flagged.items()
        assert not {b for a, b, how in plans if how in ("drug", "reac")} & flagged.keys()

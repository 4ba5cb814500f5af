"""Dechallenge and rechallenge: counts equal codes planted by hand in a tiny database (several
substance rows of one case resolved by the documented order), every case counted once per term,
the generator's planted proportions found, and the CLI's table, CSV and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from surveillance.api import Database
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.dechallenge import CHALLENGES, RESULTS, dechallenge
from surveillance.extract import resolve
from surveillance.onset import ALL_TERMS
from surveillance.pipeline import load, rebuild
from surveillance.synthetic import DECHAL_RATES, RECHAL_RATES, generate_series

KRATOM = resolve("kratom")

# Per planted case: the (dechal, rechal) of each of its kratom rows as written in DRUG, and the
# result it must count as. Several rows: Y beats N beats D beats U beats other beats blank.
PLANTED: list[tuple[list[tuple[str, str]], tuple[str, str]]] = [
    ([("Y", "N")], ("Y", "N")),
    ([("N", "Y")], ("N", "Y")),
    ([("U", "D")], ("U", "D")),
    ([("D", "U")], ("D", "U")),
    ([("", "")], ("missing", "missing")),
    ([(" y ", "d")], ("Y", "D")),  # written in lower case with spaces
    ([("X", "?")], ("other", "other")),  # not an FDA code
    ([("N", "U"), ("Y", "")], ("Y", "U")),  # two kratom rows: Y and N conflict
    ([("U", ""), ("D", "N")], ("D", "N")),
    ([("", "U"), ("U", "")], ("U", "U")),
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One quarter; the kratom rows' codes set by hand: the first len(PLANTED) kratom cases as
    PLANTED says (a second kratom row added where it lists two), the rest blank."""
    tmp = tmp_path_factory.mktemp("dechallenge")
    generate_series(["2024Q1"], tmp / "zips", n_cases=50, seed=22, damage=False, kratom_rate=0.5)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        hits = con.execute(
            "SELECT caseid, min(drug_seq) FROM substance_hits WHERE substance = 'kratom' "
            "GROUP BY caseid ORDER BY caseid"
        ).fetchall()
        assert len(hits) > len(PLANTED)
        con.execute(
            "UPDATE raw_drug SET dechal = NULL, rechal = NULL WHERE EXISTS (SELECT 1 FROM "
            "substance_hits h WHERE h.substance = 'kratom' AND h.caseid = raw_drug.caseid "
            "AND h.drug_seq = raw_drug.drug_seq)"
        )
        expected = {}
        for (caseid, drug_seq), (rows, result) in zip(hits, PLANTED, strict=False):
            for extra, (dechal, rechal) in enumerate(rows):
                seq = drug_seq if extra == 0 else f"9{extra}"
                if extra:
                    con.execute(
                        "INSERT INTO raw_drug SELECT * REPLACE ($seq AS drug_seq, 900 AS "
                        "source_line) FROM raw_drug WHERE caseid = $c AND drug_seq = $s",
                        {"seq": seq, "c": caseid, "s": drug_seq},
                    )
                con.execute(
                    "UPDATE raw_drug SET dechal = $d, rechal = $r "
                    "WHERE caseid = $c AND drug_seq = $s",
                    {"d": dechal, "r": rechal, "c": caseid, "s": seq},
                )
            expected[caseid] = result
        for caseid, _ in hits[len(PLANTED) :]:
            expected[caseid] = ("missing", "missing")
        rebuild(con)
    yield {"db": db, "expected": expected}


@pytest.fixture
def planted_con(planted: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(planted["db"]) as con:
        yield con


def _counts(results: list[tuple[str, str]]) -> dict[str, int]:
    """The expected count columns of a row, from the planted results by hand."""
    out = {}
    for i, challenge in enumerate(CHALLENGES):
        for code, suffix in RESULTS.items():
            out[f"n_{challenge}_{suffix}"] = sum(r[i] == code for r in results)
    return out


def test_counts_equal_the_planted_codes(planted, planted_con) -> None:
    table = dechallenge(planted_con, KRATOM, top_terms=5)
    expected = planted["expected"]
    overall = table.iloc[0]
    assert overall["term"] == ALL_TERMS and overall["n_cases"] == len(expected)
    assert {k: overall[k] for k in _counts([])} == _counts(list(expected.values()))
    assert overall["n_dechal_conflicting"] == 1 and overall["n_rechal_conflicting"] == 0
    # dechallenge: 3 cases Y (one of them also N on another row) and 1 N: 75% positive
    assert overall["pct_dechal_positive"] == pytest.approx(75.0)
    for _, row in table[table["term_kind"] == "pt"].iterrows():
        with_term = [
            r[0]
            for r in planted_con.execute(
                "SELECT DISTINCT caseid FROM case_reactions WHERE pt = $pt", {"pt": row["term"]}
            ).fetchall()
            if r[0] in expected
        ]
        assert row["n_cases"] == len(with_term)
        assert {k: row[k] for k in _counts([])} == _counts([expected[c] for c in with_term])


def test_roles_limit_the_rows_that_count(planted_con) -> None:
    """With PS only, cases whose kratom row is not the primary suspect are not listed, and a
    case counts with its PS rows' codes only."""
    ps = dechallenge(planted_con, KRATOM, roles="PS", top_terms=0).iloc[0]
    n_ps = planted_con.execute("SELECT count(*) FROM involved_cases('kratom', 'PS')").fetchone()
    assert n_ps is not None and ps["n_cases"] == n_ps[0]
    counts = [f"n_dechal_{suffix}" for suffix in RESULTS.values()]
    assert sum(ps[c] for c in counts) == ps["n_cases"]


def test_groups_and_every_row_adds_up(series_con) -> None:
    table = dechallenge(series_con, KRATOM, top_terms=8, groups=True)
    assert (table["term_kind"] == "group").sum() == 7
    for challenge in CHALLENGES:
        columns = [f"n_{challenge}_{suffix}" for suffix in RESULTS.values()]
        assert (table[columns].sum(axis=1) == table["n_cases"]).all()


@pytest.mark.slow
def test_onset_and_dechallenge_share_one_read_of_the_cases(series_con, monkeypatch) -> None:
    """The report reads the substance's cases once for both tables (`cases_by_term`), with the
    same tables as each function's own read; cases made for other options are not used."""
    from surveillance import onset as onset_module
    from surveillance.report import _case_summaries

    plain = dechallenge(series_con, KRATOM, groups=True)
    plain_onset = onset_module.onset(series_con, KRATOM, groups=True).table
    reads: list[bool] = []
    listed = onset_module.cases

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        reads.append(True)
        return listed(*args, **kwargs)

    monkeypatch.setattr(onset_module, "cases", counting)
    summaries = _case_summaries(series_con, KRATOM, None)
    assert len(reads) == 1
    pd.testing.assert_frame_equal(summaries.tables["dechallenge"], plain)
    pd.testing.assert_frame_equal(summaries.tables["onset"], plain_onset)
    made = onset_module.cases_by_term(series_con, KRATOM, top_terms=3)
    reads.clear()
    assert dechallenge(series_con, KRATOM, top_terms=3, by_term=made).equals(
        dechallenge(series_con, KRATOM, top_terms=3)
    )
    assert len(reads) == 1  # made for these options: used; the plain call read once
    other = dechallenge(series_con, KRATOM, top_terms=5, by_term=made)
    assert len(reads) == 2 and len(other) > len(made.rows)  # other options: read again


@pytest.mark.parametrize(
    ("challenge", "rates"), [("dechal", DECHAL_RATES), ("rechal", RECHAL_RATES)]
)
def test_generated_codes_follow_the_planted_proportions(series_con, challenge, rates) -> None:
    """Chi-square goodness of fit of the kratom cases' codes to the generator's shares."""
    overall = dechallenge(series_con, KRATOM, top_terms=0).iloc[0]
    codes = {"Y": "positive", "N": "negative", "U": "unknown", "D": "not_applicable"}
    observed = [overall[f"n_{challenge}_{codes[c]}"] for c in codes]
    observed.append(overall[f"n_{challenge}_missing"])
    assert overall[f"n_{challenge}_other"] == 0
    shares = [rates[c] for c in codes] + [rates[""]]
    expected = [s * overall["n_cases"] for s in shares]
    assert stats.chisquare(observed, expected).pvalue > 0.001


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


def test_cli_formats(planted) -> None:
    db = str(planted["db"])
    with connect(planted["db"]) as con:
        library = dechallenge(con, KRATOM, top_terms=2)
    with Database(planted["db"]) as door:
        assert door.dechallenge(top_terms=2).equals(library)
    as_json = _run("cases", "--db", db, "--dechallenge", "--top-terms", "2", "--format", "json")
    assert as_json.exit_code == 0, as_json.output
    rows = json.loads(as_json.stdout)
    assert [r["term"] for r in rows] == list(library["term"])
    assert rows[0]["n_dechal_positive"] == library.iloc[0]["n_dechal_positive"]
    table = _run("cases", "--db", db, "--dechallenge", "--format", "table")
    first = table.output.splitlines()[1]
    assert table.exit_code == 0 and "dechal Y/N/U/D/-" in table.output
    y, n, u, d = (library.iloc[0][f"n_dechal_{s}"] for s in list(RESULTS.values())[:4])
    assert f"{y}/{n}/{u}/{d}/" in first

"""Stratified ROR (`surveillance.stratified`): on a quarter generated with planted strata, the
Mantel-Haenszel ROR recovers the stratum OR that sex confounds in the crude table, Breslow-Day
finds the effect modification planted in another term, the crude cells are the signals', and
the command prints, stores and refuses as an analyst needs."""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from statsmodels.stats.contingency_tables import StratifiedTable

from surveillance import signals as signals_module
from surveillance import stats
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.definitions import AGE_UNKNOWN, YEAR_BOUNDS, YEAR_GROUPS
from surveillance.design import make_design
from surveillance.errors import UsageError
from surveillance.extract import resolve
from surveillance.pipeline import load
from surveillance.signals import signals
from surveillance.stratified import (
    FACTORS,
    OUTPUT_COLUMNS,
    UNKNOWN_RULE,
    mh_table,
    parse_factors,
    signal_mh,
)

# A converged prior (openEBGM's published CAERS estimate), so that no test waits for a fit.
CONVERGED = stats.Prior(
    3.25379064,
    0.39988801,
    2.02613219,
    1.90808279,
    0.06534557,
    -1.0,
    True,
    10,
    10,
    "published",
    -1.0,
)

CONFOUNDED = "Seizure"  # OR 1 within each sex; sex drives both exposure and the term
MODIFIED = "Liver injury"  # OR 9 among men, 1 among women
HOSTILE = "=Sum(1+1)"  # a term a spreadsheet would run

# The planted strata: sex, exposed, cases, cases with CONFOUNDED, cases with MODIFIED.
GROUPS = (
    ("M", True, 200, 80, 100),
    ("M", False, 200, 80, 20),
    ("F", True, 50, 5, 5),
    ("F", False, 800, 80, 80),
    ("", False, 20, 0, 0),  # sex not reported: a stratum of unexposed cases, uninformative
)
# Planted per-sex 2x2 tables (a, b, c, d) of each term, from GROUPS.
PLANTED = {
    CONFOUNDED: {"M": (80, 120, 80, 120), "F": (5, 45, 80, 720)},
    MODIFIED: {"M": (100, 100, 20, 180), "F": (5, 45, 80, 720)},
}
REPORTERS = ("MD", "CN", "ZZ", "")  # ZZ is no FAERS occupation code: unknown, as is none

_DEMO = (
    "primaryid caseid caseversion i_f_code event_dt mfr_dt init_fda_dt fda_dt rept_cod auth_num "
    "mfr_num mfr_sndr lit_ref age age_cod age_grp sex e_sub wt wt_cod rept_dt to_mfr occp_cod "
    "reporter_country occr_country"
).split()
_DRUG = (
    "primaryid caseid drug_seq role_cod drugname prod_ai val_vbm route dose_vbm cum_dose_chr "
    "cum_dose_unit dechal rechal lot_num exp_dt nda_num dose_amt dose_unit dose_form dose_freq"
).split()
_EMPTY = {
    "OUTC": "primaryid$caseid$outc_cod",
    "RPSR": "primaryid$caseid$rpsr_cod",
    "THER": "primaryid$caseid$dsg_drug_seq$start_dt$end_dt$dur$dur_cod",
    "INDI": "primaryid$caseid$indi_drug_seq$indi_pt",
}


def _line(columns: list[str], values: dict[str, str]) -> str:
    return "$".join(values.get(c, "") for c in columns) + "\r\n"


def planted_quarter(path: Path) -> Path:
    """A FAERS 2024Q1 zip of the GROUPS' cases: age never reported, initial receipt in 2013 or
    2024 by turns, reporter types cycling through REPORTERS; HOSTILE on 3 exposed and 3
    unexposed cases, a filler term on every case."""
    demo, drug, reac = [_line(_DEMO, {c: c for c in _DEMO})], [], []
    drug.append(_line(_DRUG, {c: c for c in _DRUG}))
    reac.append("primaryid$caseid$pt$drug_rec_act\r\n")
    i = 0
    for sex, exposed, n, n_confounded, n_modified in GROUPS:
        for j in range(n):
            caseid = str(1_000_000 + i)
            pid = caseid + "1"
            received = "20130115" if i % 2 else "20240110"
            demo.append(
                _line(
                    _DEMO,
                    {
                        "primaryid": pid,
                        "caseid": caseid,
                        "caseversion": "1",
                        "i_f_code": "I",
                        "init_fda_dt": received,
                        "fda_dt": "20240110",
                        "rept_cod": "EXP",
                        "sex": sex,
                        "occp_cod": REPORTERS[i % len(REPORTERS)],
                        "reporter_country": "US",
                        "occr_country": "US",
                    },
                )
            )
            name = ("KRATOM", "MITRAGYNINE") if exposed else ("ASPIRIN", "ASPIRIN")
            drug.append(
                _line(
                    _DRUG,
                    {
                        "primaryid": pid,
                        "caseid": caseid,
                        "drug_seq": "1",
                        "role_cod": "PS",
                        "drugname": name[0],
                        "prod_ai": name[1],
                    },
                )
            )
            terms = ["Nausea"]
            terms += [CONFOUNDED] if j < n_confounded else []
            terms += [MODIFIED] if j >= n - n_modified else []
            terms += [HOSTILE] if j < 3 else []
            reac.extend(f"{pid}${caseid}${t}$\r\n" for t in terms)
            i += 1
    members = {"DEMO": demo, "DRUG": drug, "REAC": reac}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for table, lines in members.items():
            zf.writestr(f"ASCII/{table}24Q1.txt", "".join(lines).encode("latin-1"))
        for table, header in _EMPTY.items():
            zf.writestr(f"ASCII/{table}24Q1.txt", (header + "\r\n").encode("latin-1"))
    return path


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("planted")
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [planted_quarter(tmp / "faers_ascii_2024q1.zip")])
    return db


@pytest.fixture
def planted(planted_db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(planted_db) as con:
        yield con


def _row(table: pd.DataFrame, term: str, factor: str) -> pd.Series:
    found = table[(table["term"] == term) & (table["factor"] == factor)]
    assert len(found) == 1, (term, factor)
    return found.iloc[0]


def _crude(term: str) -> tuple[int, int, int, int]:
    """The planted crude cells: the per-sex tables summed, plus the 20 cases without a sex."""
    a, b, c, d = (sum(cells) for cells in zip(*PLANTED[term].values(), strict=True))
    return a, b, c, d + 20


def test_mh_recovers_the_stratum_or_that_sex_confounds(planted) -> None:
    table = mh_table(planted, resolve("kratom"), factors="sex,age", terms=[CONFOUNDED])
    sex = _row(table, CONFOUNDED, "sex")
    a, b, c, d = _crude(CONFOUNDED)
    assert (sex["a"], sex["b"], sex["c"], sex["d"]) == (a, b, c, d)
    np.testing.assert_allclose(sex["ror"], a * d / (b * c), rtol=1e-12)  # 2.77: confounded
    np.testing.assert_allclose(sex["ror_mh"], 1.0, rtol=1e-12)  # the planted stratum OR
    assert sex["ror_mh_lower"] < 1 < sex["ror_mh_upper"]
    assert sex["confounding"] and not sex["effect_modification"]
    assert sex["n_strata"] == 3 and sex["n_informative"] == 2  # the unknown sex: no exposed
    assert sex["informative_strata"] == "F, M"
    np.testing.assert_allclose(sex["bd_chi2"], 0.0, atol=1e-9)  # equal ORs: nothing to find
    assert sex["bd_df"] == 1 and sex["bd_p"] > 0.99
    # No age is reported: one stratum, unknown, where the MH ROR is the crude ROR.
    age = _row(table, CONFOUNDED, "age")
    assert age["n_informative"] == 1 and age["informative_strata"] == AGE_UNKNOWN
    np.testing.assert_allclose(age["ror_mh"], age["ror"], rtol=1e-12)
    assert pd.isna(age["bd_chi2"]) and pd.isna(age["bd_p"]) and age["bd_df"] == 0
    assert not age["confounding"] and not age["effect_modification"]


def test_breslow_day_finds_the_planted_effect_modification(planted) -> None:
    row = _row(
        mh_table(planted, resolve("kratom"), factors="sex", terms=[MODIFIED]), MODIFIED, "sex"
    )
    # The same per-sex tables, written down from the plan, through statsmodels.
    cells = np.array(list(PLANTED[MODIFIED].values()), dtype=float)  # (strata, a b c d)
    want = StratifiedTable(cells.T.reshape(2, 2, -1))
    bd = want.test_equal_odds(adjust=True)
    np.testing.assert_allclose(row["ror_mh"], want.oddsratio_pooled, rtol=1e-12)
    np.testing.assert_allclose(
        [row["ror_mh_lower"], row["ror_mh_upper"]], want.oddsratio_pooled_confint(), rtol=1e-10
    )
    np.testing.assert_allclose([row["bd_chi2"], row["bd_p"]], [bd.statistic, bd.pvalue], rtol=1e-9)
    assert 1 < row["ror_mh"] < 9 and row["bd_p"] < 0.001
    assert row["effect_modification"] and row["bd_df"] == 1


def test_crude_cells_are_the_signals_cells_for_every_factor(planted) -> None:
    run = signals(planted, resolve("kratom"), min_cases=1, prior=CONVERGED)
    table = mh_table(planted, resolve("kratom"), terms=list(run.table["term"]))
    assert list(table.columns) == OUTPUT_COLUMNS
    assert list(dict.fromkeys(table["term"])) == list(run.table["term"])
    assert list(table["factor"][: len(FACTORS)]) == list(FACTORS)
    crude = run.table.set_index("term")[["a", "b", "c", "d", "ror", "ror_lower", "ror_upper"]]
    for _, rows in table.groupby("factor"):
        got = rows.set_index("term")[crude.columns].loc[crude.index]
        pd.testing.assert_frame_equal(got, crude, check_dtype=False, check_exact=False)
    # A term every case reports leaves no stratum informative: nothing estimable, no flag.
    every_case = table[table["term"] == "Nausea"]
    assert (every_case["n_informative"] == 0).all() and every_case["ror_mh"].isna().all()
    assert every_case["bd_p"].isna().all() and every_case["mh_p"].isna().all()
    assert not (every_case["confounding"] | every_case["effect_modification"]).any()
    # Every term co-reported, alphabetically, when none is named.
    every = mh_table(planted, resolve("kratom"), factors="year")
    assert list(every["term"]) == sorted(run.table["term"])


def test_year_and_reporter_strata_and_their_unknowns(planted) -> None:
    table = mh_table(planted, resolve("kratom"), factors="year,reporter", terms=[CONFOUNDED])
    year = _row(table, CONFOUNDED, "year")
    assert year["informative_strata"] == ", ".join(
        g for g, lo in zip(YEAR_GROUPS, (0, *YEAR_BOUNDS), strict=True) if lo in (0, 2018)
    )  # received in 2013 and in 2024
    reporter = _row(table, CONFOUNDED, "reporter")
    assert reporter["informative_strata"] == f"CN, MD, {AGE_UNKNOWN}"  # ZZ and none: unknown
    assert reporter["n_strata"] == 3


def test_year_groups_follow_their_bounds() -> None:
    assert YEAR_GROUPS[0] == f"before {YEAR_BOUNDS[0]}"
    assert YEAR_GROUPS[1:-1] == tuple(f"{lo}-{hi - 1}" for lo, hi in pairwise(YEAR_BOUNDS))
    assert YEAR_GROUPS[-1] == f"{YEAR_BOUNDS[-1]} on" and len(YEAR_GROUPS) == len(YEAR_BOUNDS) + 1


def test_signal_mh_is_stored_with_the_run_and_replaced(planted_db: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(planted_db.read_bytes())
    kratom = resolve("kratom")
    with connect(copy) as con:
        run = signals(con, kratom, min_cases=1, prior=CONVERGED)
        first = signal_mh(con, run, kratom, "sex,age")
        signal_mh(con, run, kratom, "sex,age")
        signal_mh(con, run, kratom, "year")
        stored = con.execute(
            "SELECT factor, term, bd_p FROM signal_mh WHERE run_id = $r ORDER BY factor, term",
            {"r": run.run_id},
        ).fetchdf()
        nan = con.execute("SELECT count(*) FROM signal_mh WHERE isnan(bd_chi2)").fetchone()
    assert nan == (0,)  # not estimable is NULL, never a NaN stored as a number
    assert list(stored.groupby("factor").size().items()) == [
        (f, len(run.table)) for f in FACTORS if f in ("age", "sex", "year")
    ]
    sex = stored[stored["factor"] == "sex"].set_index("term")["bd_p"]
    want = first[first["factor"] == "sex"].set_index("term")["bd_p"]
    pd.testing.assert_series_equal(sex.sort_index(), want.sort_index(), check_dtype=False)
    assert sex.notna().any() and sex.isna().any()  # an uninformative term among others


def test_parse_factors() -> None:
    assert parse_factors(" Sex , age,sex") == ("age", "sex")
    assert parse_factors(None) == ()
    for bad in ("age,color", "", " , "):
        with pytest.raises(UsageError, match="--mh-by"):
            parse_factors(bad)


@pytest.mark.slow
def test_cli_prints_the_table_in_every_format(planted_db: Path, monkeypatch) -> None:
    monkeypatch.setattr(signals_module, "fitted_prior", lambda *args, **kwargs: CONVERGED)
    runner = CliRunner()
    args = ["signals", "--db", str(planted_db), "--min-cases", "1", "--mh-by", "sex,age"]
    text = runner.invoke(cli, [*args, "--format", "table"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert "Crude and Mantel-Haenszel ROR by age, sex:" in lines
    header = lines[lines.index("Crude and Mantel-Haenszel ROR by age, sex:") + 1].split()
    assert header == "term by k ROR (95% CI) MH ROR (95% CI) BD p flag".split()
    assert max(len(line) for line in lines) <= 80
    assert " ".join(UNKNOWN_RULE.split()) in " ".join(text.stdout.split())
    row = next(line for line in lines if line.lstrip().startswith(MODIFIED) and " sex " in line)
    assert row.split()[-2] == "<0.001" and row.split()[-1] == "CE"
    csv = runner.invoke(cli, [*args, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    assert csv.stdout.splitlines()[0] == ",".join(OUTPUT_COLUMNS)
    frame = pd.read_csv(io.StringIO(csv.stdout), keep_default_na=False)
    assert set(frame["factor"]) == {"age", "sex"}
    assert f"'{HOSTILE}" in set(frame["term"])  # a formula-like term is neutralised
    assert (frame.loc[frame["factor"] == "age", "bd_p"] == "").all()  # blank, never NaN
    records = json.loads(runner.invoke(cli, [*args, "--format", "json"]).stdout)
    assert {r["term"] for r in records} >= {HOSTILE, CONFOUNDED, MODIFIED}
    assert all(r["bd_p"] is None for r in records if r["factor"] == "age")


def test_cli_refuses_a_bad_factor_in_one_line(planted_db: Path) -> None:
    runner = CliRunner()
    for args in (
        ["--mh-by", "age,color"],
        ["--mh-by", "sex", "--engine", "spark", "--parquet", str(planted_db.parent)],
    ):
        result = runner.invoke(cli, ["signals", "--db", str(planted_db), *args])
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and "--mh-by" in result.stderr
        assert "Traceback" not in result.output
    result = runner.invoke(cli, ["signals", "--db", str(planted_db), "--mh-by", "age,color"])
    assert (
        result.stderr.strip() == "Error: --mh-by: unknown factor color; use age,sex,year,reporter"
    )


def test_signal_mh_refuses_a_run_it_cannot_count(planted) -> None:
    """The strata come from the clean layer: a run as of an earlier quarter, or counted by
    Spark, is refused before anything is stored."""
    kratom = resolve("kratom")
    run = signals(planted, kratom, min_cases=1, prior=CONVERGED)
    for other in (replace(run, through="2023Q4"), replace(run, engine="spark")):
        with pytest.raises(UsageError, match="--mh-by counts the database's clean layer"):
            signal_mh(planted, other, kratom, "sex")
    with pytest.raises(UsageError, match="--mh-by counts single PTs against all cases"):
        signal_mh(planted, replace(run, design=make_design(groups=True)), kratom, "sex")

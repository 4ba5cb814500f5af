"""Signals: the 2x2 counts equal the generator's ground truth, as-of analyses equal a database
that never saw the later quarters, and the command prints what an analyst needs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.errors import NoDataError, UsageError
from surveillance.extract import resolve
from surveillance.pipeline import load
from surveillance.signals import OUTPUT_COLUMNS, signals
from surveillance.synthetic import Series


def _truth_tables(series: Series, through: str | None = None) -> pd.DataFrame:
    """a, b, c, d per term, computed from the generator's truth rows, without SQL."""
    cases = series.cases[series.cases["surviving"]]
    keys = {
        (row.primaryid_latest, row.quarter_latest): row.is_kratom
        for row in cases.itertuples()
        if through is None or row.quarter_latest <= through
    }
    reactions: dict[tuple[str, str], set[str]] = {}
    for quarter in series.quarters:
        for r in quarter.truth["reac"]:
            key = (r["primaryid"], r["quarter"])
            if key in keys and r["pt"] and r["pt"].strip():
                reactions.setdefault(key, set()).add(r["pt"].strip().upper())
    n = len(keys)
    n_kratom = sum(keys.values())
    a: Counter[str] = Counter()
    with_term: Counter[str] = Counter()
    for key, terms in reactions.items():
        for t in terms:
            with_term[t] += 1
            a[t] += keys[key]
    rows = [
        (t, a[t], n_kratom - a[t], with_term[t] - a[t], n - n_kratom - (with_term[t] - a[t]))
        for t in with_term
        if a[t] > 0
    ]
    return pd.DataFrame(rows, columns=["pt_key", "a", "b", "c", "d"]).set_index("pt_key")


def test_counts_equal_ground_truth(series_db, series_con) -> None:
    run = signals(series_con, resolve("kratom"), min_cases=1)
    got = run.table.assign(pt_key=run.table["term"].str.upper()).set_index("pt_key")
    want = _truth_tables(series_db[0])
    assert sorted(got.index) == sorted(want.index)
    pd.testing.assert_frame_equal(
        got.loc[want.index, ["a", "b", "c", "d"]], want, check_dtype=False
    )
    assert list(run.table.columns) == OUTPUT_COLUMNS
    assert not run.table[OUTPUT_COLUMNS[5:20]].isna().any().any()


def test_planted_signals_are_found(series_con) -> None:
    table = signals(series_con, resolve("kratom")).table.set_index("term")
    for term in ("Drug withdrawal syndrome", "Liver injury"):
        assert table.loc[term, "signal_prr"] and table.loc[term, "signal_ror"]
        assert table.loc[term, "signal_ic"] and table.loc[term, "eb05"] > 1


def test_as_of_equals_a_database_without_later_quarters(series_db, tmp_path: Path) -> None:
    series, _ = series_db
    through = "2019Q1"
    early = [q.zip_path for q in series.quarters if q.quarter <= through]
    with connect(tmp_path / "early.duckdb") as con:
        load(con, early)
        alone = signals(con, resolve("kratom"), min_cases=1).table
    with connect(series_db[1]) as con:
        as_of = signals(con, resolve("kratom"), through=through, min_cases=1).table
    cols = ["term", "a", "b", "c", "d", "prr", "ror", "ic"]
    pd.testing.assert_frame_equal(
        alone[cols].sort_values("term").reset_index(drop=True),
        as_of[cols].sort_values("term").reset_index(drop=True),
    )


def test_roles_min_cases_and_storage(series_con) -> None:
    kratom = resolve("kratom")
    everything = signals(series_con, kratom, min_cases=1)
    suspects = signals(series_con, kratom, roles="ss,PS", min_cases=1)
    assert suspects.roles == "PS,SS"
    assert suspects.n_substance_cases < everything.n_substance_cases
    assert (signals(series_con, kratom, min_cases=5).table["a"] >= 5).all()
    stored = series_con.execute(
        "SELECT count(*) FROM signals WHERE run_id = $r", {"r": suspects.run_id}
    ).fetchone()
    assert stored == (len(suspects.table),)
    prior = series_con.execute(
        "SELECT prior_loglik, prior_n_pairs FROM signal_runs WHERE run_id = $r",
        {"r": suspects.run_id},
    ).fetchone()
    assert prior and prior[0] == pytest.approx(suspects.prior.loglik) and prior[1] > 0


def test_bad_options(series_con) -> None:
    kratom = resolve("kratom")
    with pytest.raises(UsageError, match="roles"):
        signals(series_con, kratom, roles="XX")
    with pytest.raises(UsageError, match="stratum"):
        signals(series_con, kratom, stratify="colour")
    with pytest.raises(
        NoDataError, match=r"^2005Q1 is not loaded; the latest loaded quarter is 2023Q1$"
    ):
        signals(series_con, kratom, through="2005Q1")
    with pytest.raises(NoDataError, match=r"^2019Q4 is not loaded"):
        signals(series_con, kratom, through="2019Q4")


def test_cli_formats_and_caveats(series_db) -> None:
    db = str(series_db[1])
    runner = CliRunner()
    table = runner.invoke(cli, ["signals", "--db", db, "--format", "table", "--show-prior"])
    assert table.exit_code == 0, table.output
    assert "EBGM prior: alpha1=" in table.output and "log-likelihood" in table.output
    assert "not evidence that the substance causes" in table.output
    assert (
        max(len(line) for line in table.output.splitlines()) <= 80 or "EBGM prior" in table.output
    )
    csv = runner.invoke(cli, ["signals", "--db", db, "--format", "csv", "--sort", "eb05"])
    assert csv.exit_code == 0, csv.output
    assert csv.output.splitlines()[0] == ",".join(OUTPUT_COLUMNS)
    eb05 = [
        float(line.split(",")[OUTPUT_COLUMNS.index("eb05")]) for line in csv.output.splitlines()[1:]
    ]
    assert eb05 == sorted(eb05, reverse=True)


def test_stratified_run_keeps_crude_counts(series_con) -> None:
    kratom = resolve("kratom")
    crude = signals(series_con, kratom, min_cases=1).table.set_index("term")
    strat = signals(series_con, kratom, min_cases=1, stratify="sex,age,year").table
    strat = strat.set_index("term").loc[crude.index]
    pd.testing.assert_frame_equal(
        strat[["a", "b", "c", "d", "prr"]], crude[["a", "b", "c", "d", "prr"]]
    )
    assert not np.allclose(strat["expected"], crude["expected"])
    assert not np.allclose(strat["ror"], crude["ror"])
    assert (strat["ror_lower"] <= strat["ror"]).all() and (strat["ror"] <= strat["ror_upper"]).all()

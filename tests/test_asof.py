"""The one-pass cumulative counts equal a `signals(through=q)` run for every loaded quarter and
every term, on the shared multi-era series (follow-ups, deleted cases, LAERS -> FAERS)."""

from __future__ import annotations

import itertools

import duckdb
import pandas as pd
import pytest

from surveillance.asof import AsOfCounts, asof_counts, asof_signal_tables
from surveillance.errors import NoDataError
from surveillance.extract import resolve
from surveillance.signals import OUTPUT_COLUMNS, SignalRun, signals


def _by_term(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("term", kind="mergesort").reset_index(drop=True)[OUTPUT_COLUMNS]


def _quarters(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT quarter FROM quarters ORDER BY quarter").fetchall()]


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_counts_equal_signals_as_of_every_quarter(series_con, roles: str | None) -> None:
    kratom = resolve("kratom")
    latest = signals(series_con, kratom, roles=roles, min_cases=1)
    counts = asof_counts(series_con, kratom, latest.roles)
    tables = asof_signal_tables(series_con, counts, latest.prior)
    quarters = _quarters(series_con)
    assert list(counts.quarters) == quarters == list(tables)
    compared = 0
    for index, quarter in enumerate(quarters):
        try:
            run = signals(
                series_con, kratom, through=quarter, roles=roles, min_cases=1, prior=latest.prior
            )
        except NoDataError:
            assert counts.n_exposed[index] == 0 and tables[quarter].empty
            continue
        assert (counts.n_cases[index], counts.n_exposed[index]) == (
            run.n_cases,
            run.n_substance_cases,
        )
        pd.testing.assert_frame_equal(_by_term(tables[quarter]), _by_term(run.table))
        compared += len(run.table)
    assert compared > 0


def _versions(con: duckdb.DuckDBPyConnection, quarter: str, roles: str | None) -> pd.DataFrame:
    """Each as-of case's surviving version and whether it names kratom (signals' own rule)."""
    run = signals(con, resolve("kratom"), through=quarter, roles=roles, min_cases=1)
    frame = con.execute("SELECT caseid, source, primaryid, quarter FROM _sig_cases").fetchdf()
    return frame.assign(exposed=frame["caseid"].isin(run.exposed))


def test_the_series_exercises_supersession_deletion_and_eras(series_con) -> None:
    """Without these situations the equivalence above could not catch their mishandling: a
    case whose surviving version changes (and its exposure with it), a kratom case deleted after
    it was counted, a LAERS case continued in FAERS, a primaryid republished."""
    quarters = _quarters(series_con)
    states = {q: _versions(series_con, q, None).set_index("caseid") for q in quarters}
    changed = exposure_changed = n_lost = 0
    for before, after in itertools.pairwise(quarters):
        both = states[before].merge(
            states[after], left_index=True, right_index=True, suffixes=("_0", "_1")
        )
        moved = both[
            (both["primaryid_0"] != both["primaryid_1"]) | (both["quarter_0"] != both["quarter_1"])
        ]
        changed += len(moved)
        exposure_changed += int((moved["exposed_0"] != moved["exposed_1"]).sum())
        lost = states[before].index.difference(states[after].index)
        deleted = series_con.execute(
            "SELECT DISTINCT caseid FROM raw_deleted WHERE quarter <= $q", {"q": after}
        ).fetchdf()["caseid"]
        assert set(lost) <= set(deleted)
        n_lost += len(lost)
    assert changed > 0 and exposure_changed > 0 and n_lost > 0
    deleted_kratom = series_con.execute(
        """SELECT count(*) FROM raw_deleted x
        WHERE x.caseid IN (SELECT d.caseid FROM raw_demo d
                           JOIN raw_drug g USING (source, primaryid, quarter)
                           WHERE d.quarter < x.quarter
                             AND g.drugname IN (SELECT string FROM substance_strings
                                                WHERE substance = 'kratom'))"""
    ).fetchone()
    assert deleted_kratom is not None and deleted_kratom[0] > 0
    crossings = series_con.execute(
        """SELECT count(*) FROM (SELECT caseid FROM raw_demo GROUP BY caseid
        HAVING count(DISTINCT source) = 2)"""
    ).fetchone()
    republished = series_con.execute(
        """SELECT count(*) FROM (SELECT source, primaryid FROM raw_demo GROUP BY ALL
        HAVING count(DISTINCT quarter) > 1)"""
    ).fetchone()
    assert crossings is not None and crossings[0] > 0
    assert republished is not None and republished[0] > 0


def test_no_case_yet_gives_zero_counts_and_no_terms(series_con) -> None:
    kratom = resolve("kratom")
    counts = asof_counts(series_con, kratom, None)
    empty = AsOfCounts(
        quarters=counts.quarters,
        n_cases=counts.n_cases,
        n_exposed=counts.n_exposed * 0,
        terms=counts.terms,
        n_term=counts.n_term,
        a=counts.a * 0,
    )
    latest: SignalRun = signals(series_con, kratom, min_cases=1)
    tables = asof_signal_tables(series_con, empty, latest.prior)
    assert all(t.empty and list(t.columns) == OUTPUT_COLUMNS for t in tables.values())

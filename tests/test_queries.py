"""Every named query parses, declares its parameters and runs on a generated database; the main
ones equal counts from the generator's ground truth."""

from __future__ import annotations

import re

import pytest

from surveillance.errors import UsageError
from surveillance.query import get_query, named_queries, run_query

REQUIRED = {"caseid": "0"}


def test_every_query_has_a_header_and_declares_what_it_uses() -> None:
    queries = named_queries()
    assert len(queries) >= 10
    for q in queries.values():
        assert q.description and q.counts
        used = set(re.findall(r"\$([a-z_][a-z0-9_]*)", q.sql))
        assert used == {p.name for p in q.params}, q.name


@pytest.mark.parametrize("name", sorted(named_queries()))
def test_every_query_runs(series_con, name: str) -> None:
    params = {p.name: REQUIRED[p.name] for p in get_query(name).params if p.required}
    frame = run_query(series_con, name, **params)
    assert list(frame.columns)


def test_cases_by_quarter_equals_truth(series_db, series_con) -> None:
    truth = series_db[0].cases.query("surviving")
    frame = run_query(series_con, "cases_by_quarter").set_index("quarter")
    loaded = [q.quarter for q in series_db[0].quarters]
    assert list(frame.index) == loaded
    new = truth[truth["quarter_initial"].isin(loaded)]
    want_all = new.groupby("quarter_initial").size()
    want_kratom = new[new["is_kratom"]].groupby("quarter_initial").size()
    want_latest = truth[truth["is_kratom"]].groupby("quarter_latest").size()
    assert frame["n_all_cases"].to_dict() == want_all.to_dict()
    assert frame["n_cases"][frame["n_cases"] > 0].to_dict() == want_kratom.to_dict()
    latest = frame["n_cases_latest_version"]
    assert latest[latest > 0].to_dict() == want_latest.to_dict()


def test_breakdowns_add_up_to_the_substance_cases(series_db, series_con) -> None:
    n_kratom = int(series_db[0].cases.query("surviving and is_kratom").shape[0])
    assert run_query(series_con, "demographics")["n_cases"].sum() == n_kratom
    assert run_query(series_con, "cases_by_reporter_type")["n_cases"].sum() == n_kratom
    outcomes = run_query(series_con, "cases_by_outcome")
    assert outcomes["n_cases"].max() <= n_kratom
    assert run_query(series_con, "matched_strings")["n_cases"].sum() >= n_kratom


def test_co_reported_excludes_the_substance_itself(series_con) -> None:
    drugs = run_query(series_con, "co_reported_substances", limit_rows=100)["drug"]
    assert len(drugs) and not drugs.str.contains("KRATOM|MITRAGYN").any()


def test_parameters_are_checked() -> None:
    with pytest.raises(UsageError, match="missing parameter caseid"):
        run_query(None, "case_detail")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="unknown parameter"):
        run_query(None, "top_reactions", colour="red")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="expected INTEGER"):
        run_query(None, "top_reactions", limit_rows="many")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="no query named"):
        run_query(None, "nope")  # type: ignore[arg-type]

"""The demo looks like FAERS: a large background, kratom a fraction of a percent of cases, many
drugs and terms, a drug-by-term table with most pairs near n/E = 1 and an elevated minority, and
planted kratom terms with plausible PRRs. Run on the demo database at a tenth of its scale."""

from __future__ import annotations

import dataclasses

import duckdb
import numpy as np
import pytest

from surveillance.db import connect
from surveillance.demo import DemoData, prior_line, signal_counts
from surveillance.extract import resolve
from surveillance.signals import SignalRun, signals
from surveillance.synthetic import KRATOM_REACTIONS, README_CASEID, SIGNAL_PTS

# The demo database at a tenth of the demo's scale takes about 10 s to build: slow tier.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_con(demo_data: DemoData):
    with connect(demo_data.db_path) as con:
        yield con


@pytest.fixture(scope="module")
def kratom_run(demo_con: duckdb.DuckDBPyConnection) -> SignalRun:
    return signals(demo_con, resolve("kratom"))


def _scalar(con: duckdb.DuckDBPyConnection, sql: str) -> int:
    row = con.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def test_cases_and_kratom_match_the_generators_truth(
    demo_data: DemoData, demo_con: duckdb.DuckDBPyConnection
) -> None:
    truth = demo_data.series.cases
    surviving = set(truth.loc[truth["surviving"], "caseid"])
    loaded = {r[0] for r in demo_con.execute("SELECT caseid FROM cases").fetchall()}
    assert loaded == surviving
    kratom = set(truth.loc[truth["surviving"] & truth["is_kratom"], "caseid"])
    hits = demo_con.execute("SELECT DISTINCT caseid FROM substance_hits WHERE substance = 'kratom'")
    assert {r[0] for r in hits.fetchall()} == kratom
    rows_in_zips = sum(
        len(qf.truth["drug"]) + qf.background_rows.get("drug", 0)
        for qf in demo_data.series.quarters
    )
    assert _scalar(demo_con, "SELECT count(*) FROM raw_drug") == rows_in_zips


def test_initial_receipt_matches_the_generators_truth(
    demo_data: DemoData, demo_con: duckdb.DuckDBPyConnection
) -> None:
    """New cases (definitions.NEW_CASE) count background follow-ups as follow-ups too."""
    truth = demo_data.series.cases
    want = dict(truth.loc[truth["surviving"], ["caseid", "quarter_initial"]].to_numpy())
    got = dict(demo_con.execute("SELECT caseid, initial_quarter FROM cases").fetchall())
    assert got == want
    assert (
        sum(
            want[c] < q for c, q in demo_con.execute("SELECT caseid, quarter FROM cases").fetchall()
        )
        > 1000
    )


def test_background_dwarfs_kratom(demo_con: duckdb.DuckDBPyConnection) -> None:
    n_cases = _scalar(demo_con, "SELECT count(*) FROM cases")
    n_kratom = _scalar(
        demo_con, "SELECT count(DISTINCT caseid) FROM substance_hits WHERE substance = 'kratom'"
    )
    assert n_cases > 15_000
    assert 0.001 < n_kratom / n_cases < 0.01


def test_many_drugs_and_terms_with_skewed_frequencies(demo_con: duckdb.DuckDBPyConnection) -> None:
    drugs = demo_con.execute(
        "SELECT count(*) AS n FROM case_drugs GROUP BY drugname ORDER BY n DESC"
    ).fetchnumpy()["n"]
    terms = demo_con.execute(
        "SELECT count(*) AS n FROM case_reactions GROUP BY pt_key ORDER BY n DESC"
    ).fetchnumpy()["n"]
    assert len(drugs) > 2000 and len(terms) > 500
    for counts in (drugs, terms):  # Zipf-like: the top 1% of strings carry a large share
        top = counts[: max(1, len(counts) // 100)].sum() / counts.sum()
        assert 0.1 < top < 0.6
    per_case = demo_con.execute(
        """SELECT avg(n) FROM (SELECT caseid, count(*) AS n FROM case_drugs GROUP BY caseid)
        UNION ALL SELECT avg(n) FROM (SELECT caseid, count(*) AS n FROM case_reactions
        GROUP BY caseid)"""
    ).fetchall()
    assert all(row[0] > 2 for row in per_case)
    roles = {r[0] for r in demo_con.execute("SELECT DISTINCT role_cod FROM case_drugs").fetchall()}
    assert {"PS", "SS", "C", "I"} <= roles
    with_ai = _scalar(
        demo_con,
        "SELECT count(*) FROM case_drugs d JOIN cases c USING (caseid) "
        "WHERE c.quarter >= '2019Q1' AND d.prod_ai IS NOT NULL",
    )
    assert with_ai > 0


def test_drug_by_term_table_has_two_components(demo_con: duckdb.DuckDBPyConnection) -> None:
    """Computed here from the clean layer, independent of the signals code and the prior fit."""
    table = demo_con.execute(
        """WITH d AS (SELECT DISTINCT caseid, upper(coalesce(prod_ai, drugname)) AS drug
                      FROM case_drugs),
        r AS (SELECT DISTINCT caseid, pt_key FROM case_reactions),
        n_all AS (SELECT count(*) AS n FROM cases),
        di AS (SELECT drug, count(*) AS n_i FROM d GROUP BY drug),
        tj AS (SELECT pt_key, count(*) AS n_j FROM r GROUP BY pt_key)
        SELECT count(*) AS n, any_value(di.n_i) * any_value(tj.n_j) / any_value(n_all.n) AS e
        FROM d JOIN r USING (caseid) JOIN di USING (drug) JOIN tj USING (pt_key), n_all
        GROUP BY d.drug, r.pt_key"""
    ).fetchnumpy()
    n, e = table["n"].astype(float), table["e"].astype(float)
    ratio = n[e >= 1] / e[e >= 1]
    assert len(ratio) > 1000
    assert 0.7 < np.median(ratio) < 1.3  # the bulk: no association
    elevated = np.mean(ratio >= 3)
    assert 0.002 < elevated < 0.2  # a minority of genuine associations
    assert np.quantile(ratio, 0.999) > 5  # of varying, some strong, strength


def test_planted_kratom_terms_have_plausible_prrs(kratom_run: SignalRun) -> None:
    table = kratom_run.table.set_index("term")
    planted = [t for t in (*SIGNAL_PTS, *KRATOM_REACTIONS) if t in table.index]
    assert set(SIGNAL_PTS) <= set(planted) and len(planted) >= 8
    enough = table.loc[planted][table.loc[planted, "a"] >= 5]
    assert len(enough) >= 5
    # plausible (at this small scale a few cases more or less move a PRR a lot)
    assert enough["prr"].between(2, 150).all(), enough["prr"]
    assert 5 < enough["prr"].median() < 60, enough["prr"]
    assert enough["prr"].max() / enough["prr"].min() > 3  # varying strengths
    assert enough["signal_prr"].all()


def test_readme_case_has_several_versions_and_is_kratom(
    demo_con: duckdb.DuckDBPyConnection,
) -> None:
    caseid = str(README_CASEID)
    quarters = demo_con.execute(
        "SELECT quarter FROM reports WHERE caseid = $c ORDER BY quarter", {"c": caseid}
    ).fetchall()
    assert len(quarters) >= 3 and len({q[0] for q in quarters}) >= 3
    hits = demo_con.execute(
        "SELECT count(*) FROM substance_hits WHERE caseid = $c AND substance = 'kratom'",
        {"c": caseid},
    ).fetchone()
    assert hits and hits[0] >= 1


def test_kratom_follow_ups_across_quarters(demo_con: duckdb.DuckDBPyConnection) -> None:
    """Kratom cases whose surviving version is a follow-up received after the first version."""
    n = _scalar(
        demo_con,
        """SELECT count(DISTINCT h.caseid) FROM substance_hits h
        JOIN (SELECT caseid, count(DISTINCT quarter) AS nq, min(quarter) AS first
              FROM reports GROUP BY caseid) r USING (caseid)
        JOIN cases c USING (caseid)
        WHERE h.substance = 'kratom' AND r.nq >= 2 AND c.quarter > r.first""",
    )
    assert n >= 3


def test_background_follow_ups_across_quarters(
    demo_data: DemoData, demo_con: duckdb.DuckDBPyConnection
) -> None:
    multi = _scalar(
        demo_con,
        "SELECT count(*) FROM (SELECT caseid FROM reports GROUP BY caseid "
        "HAVING count(DISTINCT quarter) >= 2)",
    )
    assert multi > 1000
    reports = _scalar(demo_con, "SELECT count(*) FROM reports")
    assert reports - _scalar(demo_con, "SELECT count(*) FROM cases") > 1000


def test_synthetic_marks(demo_data: DemoData, demo_con: duckdb.DuckDBPyConnection) -> None:
    assert _scalar(demo_con, "SELECT count(*) FROM quarters WHERE NOT synthetic") == 0
    assert _scalar(demo_con, "SELECT count(*) FROM quarters") == len(demo_data.series.quarters)


def test_summary_reports_the_prior_and_signals(kratom_run: SignalRun) -> None:
    line = prior_line(kratom_run)
    assert line.startswith("EBGM prior: converged" if kratom_run.ebgm_available else "WARNING")
    counts = signal_counts(kratom_run)
    assert counts.startswith("PRR ") and "EBGM" in counts
    failed = dataclasses.replace(
        kratom_run, prior=dataclasses.replace(kratom_run.prior, converged=False)
    )
    assert prior_line(failed).startswith("WARNING: EBGM prior did not converge")
    assert "EBGM n/a" in signal_counts(failed)
    assert f"PRR {int(kratom_run.table['signal_prr'].sum())}" in signal_counts(failed)


def test_demo_prior_converges_off_its_bounds(kratom_run: SignalRun) -> None:
    prior = kratom_run.prior
    assert prior.converged, prior
    assert 0.0 < prior.p < 0.5  # the elevated component is the minority
    assert prior.alpha1 / prior.beta1 > 2 > prior.alpha2 / prior.beta2

"""Trends: every per-quarter series equals counts made from the generator's ground truth, and the
cumulative statistics equal separate `signals` runs as of each quarter."""

from __future__ import annotations

import io
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance.asof import asof_counts
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.definitions import NEW_CASE
from surveillance.extract import resolve
from surveillance.query import run_query
from surveillance.signals import signals
from surveillance.synthetic import Series
from surveillance.trends import (
    CRITERIA,
    OUTCOMES,
    TOP_TERM_MIN_CASES,
    Trends,
    regulatory_events,
    trends,
)


@pytest.fixture(scope="module")
def kratom_trends(series_db: tuple[Series, Path]) -> Trends:
    """The kratom trends of the shared series, computed once for this module."""
    with connect(series_db[1]) as con:
        return trends(con, resolve("kratom"))


@pytest.fixture(scope="module")
def quarters(series_db: tuple[Series, Path]) -> list[str]:
    """The generated (and loaded) quarters, oldest first."""
    return [q.quarter for q in series_db[0].quarters]


def _truth_cases(series: Series) -> pd.DataFrame:
    return series.cases[series.cases["surviving"]]


def _truth_rows(series: Series, table: str) -> Iterable[dict]:
    for quarter in series.quarters:
        yield from quarter.truth[table]


def _kratom_keys(series: Series) -> dict[tuple[str, str], str]:
    """(primaryid, quarter) of each surviving kratom case's latest version -> the quarter of its
    initial receipt, the quarter every series counts the case in."""
    cases = _truth_cases(series)
    cases = cases[cases["is_kratom"]]
    return {(r.primaryid_latest, r.quarter_latest): r.quarter_initial for r in cases.itertuples()}


def _by_quarter(counter: Counter[str], quarters: Iterable[str]) -> list[int]:
    return [counter[q] for q in quarters]


def test_quarter_axis_is_every_loaded_quarter(quarters, kratom_trends: Trends) -> None:
    assert kratom_trends.quarters == tuple(quarters)
    assert list(kratom_trends.by_quarter["quarter"]) == quarters
    assert kratom_trends.missing_quarters[0] == "2013Q2"
    assert "2018Q3" in kratom_trends.missing_quarters and "2019Q1" not in (
        kratom_trends.missing_quarters
    )
    assert len(kratom_trends.missing_quarters) == 22 + 14
    assert kratom_trends.synthetic and kratom_trends.through == "2023Q1"
    assert len(kratom_trends.vintage) == 64


def test_new_cases_count_by_initial_receipt(quarters, series_db, kratom_trends: Trends) -> None:
    """definitions.NEW_CASE: a case is new in the quarter of its initial FDA receipt."""
    cases = _truth_cases(series_db[0])
    all_cases = Counter(cases["quarter_initial"])
    kratom_cases = cases[cases["is_kratom"]]
    kratom = Counter(kratom_cases["quarter_initial"])
    got = kratom_trends.by_quarter
    assert list(got["n_all_cases"]) == _by_quarter(all_cases, quarters)
    assert list(got["n_cases"]) == _by_quarter(kratom, quarters)
    share = [100 * kratom[q] / all_cases[q] if all_cases[q] else None for q in quarters]
    assert list(got["share_pct"].astype(object).where(got["share_pct"].notna(), None)) == (
        pytest.approx(share, abs=5e-4)
    )
    not_loaded = (~kratom_cases["quarter_initial"].isin(quarters)).sum()
    assert kratom_trends.n_cases_initial_not_loaded == not_loaded > 0
    # The latest-version view stays, as its own column; it differs where follow-ups moved cases.
    latest = Counter(kratom_cases["quarter_latest"])
    assert list(got["n_cases_latest_version"]) == _by_quarter(latest, quarters)
    assert list(got["n_cases_latest_version"]) != list(got["n_cases"])


def test_event_readings_count_new_cases_by_initial_receipt(
    quarters, series_db, kratom_trends: Trends
) -> None:
    """Before/after an event: new cases (initial receipt) in the loaded quarters of each window."""
    truth = _truth_cases(series_db[0])
    kratom = Counter(truth.loc[truth["is_kratom"], "quarter_initial"])
    got = kratom_trends.around_events.set_index("event")
    in_span = [
        e for e in regulatory_events("kratom") if quarters[0] <= _quarter_of(e.date) <= quarters[-1]
    ]
    assert list(got.index) == [e.label for e in in_span] and len(in_span) >= 5
    for event in in_span:
        year, q = event.date.year, (event.date.month - 1) // 3
        window = [f"{(year * 4 + q + k) // 4}Q{(year * 4 + q + k) % 4 + 1}" for k in range(-4, 5)]
        before = [w for w in window[:4] if w in quarters]
        after = [w for w in window[5:] if w in quarters]
        row = got.loc[event.label]
        assert row["n_quarters_before_loaded"] == len(before), event.label
        assert row["n_cases_before"] == sum(kratom[w] for w in before), event.label
        assert row["n_quarters_after_loaded"] == len(after), event.label
        assert row["n_cases_after"] == sum(kratom[w] for w in after), event.label
    assert got["n_cases_after"].sum() > 0 and got["n_cases_before"].sum() > 0


def _quarter_of(d) -> str:
    return f"{d.year}Q{(d.month - 1) // 3 + 1}"


def test_followups_equal_truth_versions(quarters, series_db, kratom_trends: Trends) -> None:
    """A follow-up received in Q: a version first published in Q of a case received earlier."""
    truth = _truth_cases(series_db[0])
    initial = dict(zip(truth["caseid"], truth["quarter_initial"], strict=True))
    kratom = set(truth.loc[truth["is_kratom"], "caseid"])
    first_seen: dict[tuple[str, str], str] = {}
    for row in _truth_rows(series_db[0], "demo"):
        key = (row["caseid"], row["primaryid"])
        first_seen[key] = min(first_seen.get(key, row["quarter"]), row["quarter"])
    followups = Counter(
        q
        for caseid, q in {(c, q) for (c, _), q in first_seen.items()}
        if caseid in kratom and q > initial[caseid]
    )
    got = kratom_trends.by_quarter["n_followup_cases"]
    assert list(got) == _by_quarter(followups, quarters) and got.sum() > 5


def test_outcome_counts_equal_truth_outc_rows(quarters, series_db, kratom_trends: Trends) -> None:
    keys = _kratom_keys(series_db[0])
    codes: dict[tuple[str, str], set[str]] = {}
    for row in _truth_rows(series_db[0], "outc"):
        key = (row["primaryid"], row["quarter"])
        if key in keys and row["outc_cod"]:
            codes.setdefault(key, set()).add(str(row["outc_cod"]).strip().upper())
    got = kratom_trends.by_quarter
    for column, code in (
        ("n_death", "DE"),
        ("n_hospitalization", "HO"),
        ("n_life_threatening", "LT"),
    ):
        want = Counter(keys[k] for k, c in codes.items() if code in c)
        assert list(got[column]) == _by_quarter(want, quarters), column
    serious = Counter(keys[k] for k in codes)
    assert list(got["n_serious"]) == _by_quarter(serious, quarters)
    assert got["n_death"].sum() > 0


def test_worst_outcome_categories_are_exclusive(kratom_trends: Trends) -> None:
    wide = kratom_trends.by_outcome.pivot(index="quarter", columns="outcome", values="n_cases")
    by_quarter = kratom_trends.by_quarter.set_index("quarter")
    assert set(wide.columns) == set(OUTCOMES)
    assert (wide.sum(axis=1) == by_quarter["n_cases"]).all()
    assert (wide["death"] == by_quarter["n_death"]).all()
    assert (wide["non-serious"] == by_quarter["n_cases"] - by_quarter["n_serious"]).all()


def _event_year(text: str | None) -> int | None:
    """The year of a FAERS date text of 4, 6 or 8 digits (the generator writes valid ones)."""
    if not text or not text.isdigit() or len(text) not in (4, 6, 8):
        return None
    return int(text[:4])


def test_event_years_equal_truth_demo_rows(series_db, kratom_trends: Trends) -> None:
    keys = _kratom_keys(series_db[0])
    years: Counter[int | None] = Counter(
        _event_year(row["event_dt"])
        for row in _truth_rows(series_db[0], "demo")
        if (row["primaryid"], row["quarter"]) in keys
    )
    got = kratom_trends.by_event_year
    assert kratom_trends.n_cases_no_event_year == years.pop(None, 0)
    assert dict(zip(got["event_year"], got["n_cases"], strict=True)) == {
        y: years.get(y, 0) for y in range(min(years), max(years) + 1)
    }


def test_reporters_and_countries_equal_truth_demo_rows(
    quarters, series_db, kratom_trends: Trends
) -> None:
    keys = _kratom_keys(series_db[0])
    reporters: Counter[tuple[str, str]] = Counter()
    countries: Counter[tuple[str, str]] = Counter()
    for row in _truth_rows(series_db[0], "demo"):
        key = (row["primaryid"], row["quarter"])
        if keys.get(key) not in quarters:  # not a kratom case, or first received unloaded
            continue
        code = (row["occp_cod"] or "").strip().upper()
        known = code in {"MD", "PH", "OT", "HP", "RN", "LW", "CN"}
        reporters[(keys[key], code if known else "other")] += 1
        country = next(
            (c for c in (row["reporter_country"], row["occr_country"]) if c), "NOT SPECIFIED"
        )
        group = {"US": "US", "UNITED STATES": "US", "COUNTRY NOT SPECIFIED": "unknown"}.get(
            country, "non-US"
        )
        countries[(keys[key], "unknown" if country == "NOT SPECIFIED" else group)] += 1
    got_reporters = kratom_trends.by_reporter.set_index(["quarter", "reporter_type"])["n_cases"]
    assert {k: v for k, v in got_reporters.items() if v} == dict(reporters)
    got_countries = kratom_trends.by_country_group.set_index(["quarter", "country_group"])
    assert {k: v for k, v in got_countries["n_cases"].items() if v} == dict(countries)
    assert len(got_countries) == 3 * len(quarters)


def test_co_reported_and_demographics_equal_named_queries(series_con, kratom_trends) -> None:
    co = run_query(series_con, "co_reported_substances", substance="kratom", limit_rows=100_000)
    assert len(kratom_trends.co_reported) == 20 and not co["drug"].str.contains("KRATOM").any()
    suspects = run_query(series_con, "co_reported_substances", roles="PS,SS", limit_rows=100_000)
    merged = co.merge(suspects, on="drug", suffixes=("", "_suspect"))
    assert len(merged) == len(suspects) and (merged["n_cases_suspect"] <= merged["n_cases"]).all()
    assert merged["n_cases_suspect"].sum() < co["n_cases"].sum()
    demo = run_query(series_con, "demographics", substance="kratom")
    got = kratom_trends.demographics.set_index(["sex", "age_group"])["n_cases"]
    want = demo.set_index(["sex", "age_group"])["n_cases"]
    assert {k: v for k, v in got.items() if v} == want.to_dict()


def test_top_terms_rank_by_eb05_or_ic025_without_ebgm(kratom_trends: Trends) -> None:
    rank = kratom_trends.top_term_rank
    assert rank == ("eb05" if kratom_trends.ebgm_available else "ic025")
    table = kratom_trends.latest_signals
    eligible = table[table["a"] >= TOP_TERM_MIN_CASES].sort_values(rank, ascending=False)
    assert len(kratom_trends.top_terms) == 8
    assert set(kratom_trends.top_terms) <= set(eligible["term"])
    ranked = eligible.set_index("term").loc[list(kratom_trends.top_terms), rank]
    assert ranked.is_monotonic_decreasing
    assert ranked.iloc[-1] >= eligible[rank].iloc[len(kratom_trends.top_terms)]


def _rows(cumulative: pd.DataFrame, quarter: str) -> pd.DataFrame:
    return cumulative[cumulative["quarter"] == quarter].set_index("term")


def test_cumulative_equals_signals_runs(quarters, series_con, kratom_trends: Trends) -> None:
    kratom = resolve("kratom")
    columns = ["a", "ror", "ror_lower", "ror_upper", "ic", "ic025", "ebgm", "eb05", "signal_ror"]
    terms = list(kratom_trends.top_terms)
    whole = signals(series_con, kratom, min_cases=1).table.set_index("term")
    last = _rows(kratom_trends.cumulative, quarters[-1])
    pd.testing.assert_frame_equal(last.loc[terms, columns], whole.loc[terms, columns])
    # An earlier quarter: as of then, with the one prior the whole series shares.
    early = signals(
        series_con, kratom, through="2012Q3", min_cases=1, prior=kratom_trends.prior
    ).table.set_index("term")
    got = _rows(kratom_trends.cumulative, "2012Q3")
    present = [t for t in terms if t in early.index]
    pd.testing.assert_frame_equal(got.loc[present, columns], early.loc[present, columns])
    absent = got.loc[[t for t in terms if t not in early.index]]
    assert (absent["a"] == 0).all() and absent["ror"].isna().all()
    assert not absent[[f"signal_{c}" for c in CRITERIA]].any().any()
    assert len(kratom_trends.cumulative) == len(terms) * len(quarters)


def test_first_signal_is_the_earliest_quarter_meeting_the_criterion(
    quarters, kratom_trends
) -> None:
    cumulative = kratom_trends.cumulative
    first = kratom_trends.first_signal.set_index(["term", "criterion"])
    assert len(first) == len(kratom_trends.top_terms) * len(CRITERIA)
    for term in kratom_trends.top_terms:
        for criterion in CRITERIA:
            met = [
                q
                for q in quarters
                if _rows(cumulative, q).loc[term, f"signal_{criterion}"]  # quarters in order
            ]
            want = met[0] if met else None
            got = first.loc[(term, criterion), "first_quarter"]
            assert pd.isna(got) if want is None else got == want, (term, criterion)
            assert first.loc[(term, criterion), "met_at_last_quarter"] == (quarters[-1] in met)
    assert first["first_quarter"].notna().any()


def test_roles_restrict_every_series(series_con, kratom_trends: Trends) -> None:
    told: list[str] = []
    suspects = trends(
        series_con, resolve("kratom"), top_terms=3, roles="ss,ps", progress=told.append
    )
    assert suspects.roles == "PS,SS"
    assert [m for m in told if "as of" in m] == [
        "trends: cumulative counts as of every loaded quarter"
    ]
    run = signals(series_con, resolve("kratom"), roles="PS,SS", min_cases=1)
    assert suspects.by_quarter["n_cases_latest_version"].sum() == run.n_substance_cases
    new_cases = suspects.by_quarter["n_cases"].sum()
    assert new_cases + suspects.n_cases_initial_not_loaded == run.n_substance_cases
    assert (suspects.by_quarter["n_cases"] <= kratom_trends.by_quarter["n_cases"]).all()
    assert suspects.by_quarter["n_cases"].sum() < kratom_trends.by_quarter["n_cases"].sum()
    assert suspects.demographics["n_cases"].sum() == run.n_substance_cases
    assert len(suspects.top_terms) <= 3


def test_tables_and_metadata_name_what_they_count(quarters, kratom_trends: Trends) -> None:
    for name, frame in kratom_trends.tables().items():
        assert "count" not in frame.columns, name
    meta = kratom_trends.metadata()
    assert meta["quarters"] == quarters and meta["substance_version"]
    assert set(meta["ebgm_prior"]) == {"alpha1", "beta1", "alpha2", "beta2", "p"}
    assert meta["new_case_definition"] == NEW_CASE
    assert "zero_corrected" in kratom_trends.cumulative.columns


def test_cli_csv_and_json_carry_every_series(series_db, kratom_trends: Trends) -> None:
    """`trends --format csv` is one long table of every series; json every series and metadata."""
    runner = CliRunner()
    base = ["trends", "--db", str(series_db[1]), "--substance", "kratom"]
    as_csv = runner.invoke(cli, [*base, "--format", "csv"])
    assert as_csv.exit_code == 0, as_csv.output
    frame = pd.read_csv(io.StringIO(as_csv.output), dtype=str, keep_default_na=False)
    tables = kratom_trends.tables()
    assert list(frame["series"].unique()) == list(tables)
    for name, table in tables.items():
        rows = frame[frame["series"] == name]
        assert len(rows) == len(table), name
        first = table.columns[0]
        assert list(rows[first]) == [str(v) for v in table[first]], name
    by_quarter = frame[frame["series"] == "by_quarter"]
    assert [int(n) for n in by_quarter["n_cases"]] == list(kratom_trends.by_quarter["n_cases"])
    as_json = runner.invoke(cli, [*base, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert set(data) == {"metadata", "series"} and list(data["series"]) == list(tables)
    for name, table in tables.items():
        assert len(data["series"][name]) == len(table), name
    assert data["metadata"]["new_case_definition"] == NEW_CASE
    assert [r["n_followup_cases"] for r in data["series"]["by_quarter"]] == list(
        kratom_trends.by_quarter["n_followup_cases"]
    )


def test_a_given_prior_and_counts_give_the_same_series(series_con, kratom_trends: Trends) -> None:
    """The report's path (its prior and counts, no signals run of its own) equals the default."""
    kratom = resolve("kratom")
    counts = asof_counts(series_con, kratom, None)
    given = trends(series_con, kratom, prior=kratom_trends.prior, counts=counts)
    for name, frame in kratom_trends.tables().items():
        pd.testing.assert_frame_equal(given.tables()[name], frame)
    pd.testing.assert_frame_equal(given.latest_signals, kratom_trends.latest_signals)
    assert given.metadata() == kratom_trends.metadata()
    with pytest.raises(ValueError, match="other roles"):
        trends(series_con, kratom, roles="PS", prior=kratom_trends.prior, counts=counts)

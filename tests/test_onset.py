"""Time to onset: the Weibull fit recovers known shapes (a large scipy sample, the generator's
planted onsets), partial dates and negative onsets are flagged and never used, the earliest
start before the event is the one used, and the CLI prints the table and draws the figure."""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from scipy import stats

from surveillance import synthetic
from surveillance.api import Database
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.onset import ALL_TERMS, ONSET_MIN_CASES, STATUSES, onset, weibull_fit
from surveillance.pipeline import load, rebuild
from surveillance.synthetic import ONSET_WEIBULL_SCALE_DAYS, ONSET_WEIBULL_SHAPE, generate_series

KRATOM = resolve("kratom")


# --- the fit ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shape", "scale", "hazard"),
    [(0.7, 30.0, "early"), (1.0, 20.0, "constant"), (2.5, 60.0, "late")],
)
def test_a_large_scipy_sample_recovers_shape_and_scale(shape, scale, hazard) -> None:
    """20,000 onsets drawn by scipy, floored to whole days as reports give them."""
    t = stats.weibull_min(shape, scale=scale).rvs(20_000, random_state=np.random.default_rng(3))
    fit = weibull_fit(np.floor(t))
    assert fit.shape == pytest.approx(shape, rel=0.03)
    assert fit.scale_days == pytest.approx(scale, rel=0.03)
    assert fit.shape_lower < shape < fit.shape_upper
    assert fit.shape_upper - fit.shape_lower < 0.1 * shape
    assert fit.hazard == hazard and fit.n == 20_000


def test_fine_grained_days_give_scipy_continuous_mle() -> None:
    """Onsets counted in thousandths of a day: the interval-censored MLE is the continuous one
    scipy computes independently (weibull_min.fit with the location fixed at 0)."""
    t = stats.weibull_min(1.6, scale=12.0).rvs(400, random_state=np.random.default_rng(8))
    fine = weibull_fit(np.floor(t * 1000))
    c, _, scale = stats.weibull_min.fit(t, floc=0)
    assert fine.shape == pytest.approx(c, rel=1e-3)
    assert fine.scale_days / 1000 == pytest.approx(scale, rel=1e-3)


def test_profile_interval_bounds_sit_at_the_chi_square_point() -> None:
    """At each bound the log-likelihood, maximised over the scale by a plain grid search here,
    is 3.84 / 2 below its maximum."""
    days = np.floor(stats.weibull_min(0.8, scale=25).rvs(60, random_state=np.random.default_rng(1)))
    fit = weibull_fit(days)

    def loglik(k: float, lam: float) -> float:
        mass = np.exp(-((days / lam) ** k)) - np.exp(-(((days + 1) / lam) ** k))
        return float(np.sum(np.log(mass)))

    def profile(k: float) -> float:
        return max(loglik(k, lam) for lam in np.exp(np.linspace(0, 6, 6001)))

    top = profile(fit.shape)
    for bound in (fit.shape_lower, fit.shape_upper):
        assert 2 * (top - profile(bound)) == pytest.approx(stats.chi2.ppf(0.95, 1), abs=0.01)


def test_too_few_or_identical_onsets_give_no_estimate() -> None:
    few = weibull_fit([3, 8, 1, 40][: ONSET_MIN_CASES - 1])
    assert math.isnan(few.shape) and few.hazard is None
    assert f"fewer than {ONSET_MIN_CASES}" in few.interpretation
    same = weibull_fit([0] * 12)
    assert math.isnan(same.shape) and "same day" in same.interpretation
    with pytest.raises(ValueError):
        weibull_fit([1, 2, 3, -4, 5, 6])


# --- the generator's planted onsets -----------------------------------------------------------


def test_planted_weibull_is_recovered_from_the_generated_series(series_con) -> None:
    result = onset(series_con, KRATOM)
    fit = result.fits[f"all:{ALL_TERMS}"]
    assert fit.n >= 40
    assert fit.shape_lower < ONSET_WEIBULL_SHAPE < fit.shape_upper
    assert fit.scale_days == pytest.approx(ONSET_WEIBULL_SCALE_DAYS, rel=0.35)
    row = result.table.iloc[0]
    assert row["term"] == ALL_TERMS and row["n_with_onset"] == fit.n
    counts = [c for c in result.table.columns if c.startswith("n_") and c != "n_cases"]
    assert (result.table[counts].sum(axis=1) == result.table["n_cases"]).all()
    assert row["n_partial_date"] > 0 and row["n_negative_onset"] > 0


def test_onset_days_equal_an_independent_sql_count(series_con) -> None:
    """Cases whose event and every substance start are full days: the onset is the event minus
    the earliest start on or before it, computed here in SQL."""
    expected = dict(
        series_con.execute(
            """WITH starts AS (
                SELECT t.caseid, t.start_date, t.start_dt_precision FROM case_therapies t
                JOIN substance_hits h ON h.caseid = t.caseid AND h.drug_seq = t.drug_seq
                WHERE h.substance = 'kratom' AND t.start_dt_precision IS NOT NULL)
            SELECT c.caseid, date_diff('day', min(s.start_date), c.event_date)
            FROM cases c JOIN starts s USING (caseid)
            WHERE c.event_dt_precision = 'day' AND s.start_date <= c.event_date
              AND c.caseid NOT IN (SELECT caseid FROM starts WHERE start_dt_precision <> 'day')
            GROUP BY c.caseid, c.event_date"""
        ).fetchall()
    )
    per_case = onset(series_con, KRATOM).cases
    used = per_case[per_case["onset_status"] == "onset"]
    assert dict(zip(used["caseid"], used["onset_days"].astype(int), strict=True)) == expected


def _members(folder: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(folder.iterdir()):
        with zipfile.ZipFile(path) as z:
            out.update({f"{path.name}/{n}": z.read(n) for n in z.namelist()})
    return out


def _without_challenges(text: bytes) -> list[list[str]]:
    lines = [line.split("$") for line in text.decode("latin-1").splitlines()]
    header = [h.strip().lower() for h in lines[0]]
    drop = {header.index("dechal"), header.index("rechal")}
    return [[f for i, f in enumerate(line) if i not in drop] for line in lines]


def test_onset_constants_move_no_other_generated_value(tmp_path: Path, monkeypatch) -> None:
    """The onset stream is separate: other planted onsets and codes change THER rows and the
    kratom rows' dechal/rechal only (and the LAERS size/line-count files)."""
    quarters = ["2012Q3", "2019Q1"]
    generate_series(quarters, tmp_path / "a", n_cases=80, seed=4)
    monkeypatch.setattr(synthetic, "ONSET_WEIBULL_SHAPE", 3.0)
    monkeypatch.setattr(synthetic, "ONSET_NO_THERAPY_RATE", 0.5)
    monkeypatch.setattr(synthetic, "DECHAL_RATES", {"Y": 0.5, "N": 0.5})
    generate_series(quarters, tmp_path / "b", n_cases=80, seed=4)
    a, b = _members(tmp_path / "a"), _members(tmp_path / "b")
    assert a.keys() == b.keys()
    changed = {name for name in a if a[name] != b[name]}
    kinds = {name.rsplit("/", 1)[-1].upper()[:4] for name in changed}
    assert {"THER", "DRUG"} <= kinds <= {"THER", "DRUG", "SIZE", "STAT"}
    for name in changed:
        if name.rsplit("/", 1)[-1].upper().startswith("DRUG"):
            assert _without_challenges(a[name]) == _without_challenges(b[name])


# --- hand-planted dates in a tiny database ----------------------------------------------------

EVENT = "20240310"
# caseid slot -> (event_dt, start dates of its kratom row, expected status, expected days)
PLANTED: list[tuple[str, list[str], str, float]] = [
    (EVENT, ["20240301"], "onset", 9),
    ("202403", ["20240301"], "partial date", math.nan),
    (EVENT, ["202402"], "partial date", math.nan),
    (EVENT, ["20240315"], "negative onset", -5),
    (EVENT, ["202404"], "negative onset", math.nan),  # the whole month is after the event
    (EVENT, ["20240305", "20240201", "20240320"], "onset", 38),  # earliest before the event
    (EVENT, ["20240301", "2023"], "partial date", math.nan),  # the year could start earlier
    (EVENT, ["20240301", "202403"], "onset", 9),  # the month cannot start earlier
    (EVENT, ["20240310"], "onset", 0),
    ("", ["20240301"], "no event date", math.nan),
    (EVENT, [], "no start date", math.nan),
    (EVENT, ["20241399"], "no start date", math.nan),  # not a date
]


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One quarter; every kratom case's event date and kratom therapy rows set by hand: the
    first len(PLANTED) as PLANTED says, the others without a therapy row."""
    tmp = tmp_path_factory.mktemp("onset")
    generate_series(["2024Q1"], tmp / "zips", n_cases=50, seed=21, damage=False, kratom_rate=0.5)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        hits = con.execute(
            "SELECT DISTINCT caseid, primaryid, drug_seq FROM substance_hits "
            "WHERE substance = 'kratom' ORDER BY caseid"
        ).fetchall()
        con.execute(
            "DELETE FROM raw_ther WHERE EXISTS (SELECT 1 FROM substance_hits h "
            "WHERE h.substance = 'kratom' AND h.caseid = raw_ther.caseid "
            "AND h.drug_seq = raw_ther.dsg_drug_seq)"
        )
        caseids = sorted({caseid for caseid, _, _ in hits})
        assert len(caseids) > len(PLANTED)
        expected = {}
        for caseid, (event_dt, starts, status, days) in zip(caseids, PLANTED, strict=False):
            con.execute(
                "UPDATE raw_demo SET event_dt = nullif($e, '') WHERE caseid = $c",
                {"e": event_dt, "c": caseid},
            )
            primaryid, drug_seq = next((p, s) for c, p, s in hits if c == caseid)
            for line, start in enumerate(starts):
                con.execute(
                    "INSERT INTO raw_ther (source, quarter, source_file, source_line, primaryid, "
                    "caseid, dsg_drug_seq, start_dt) VALUES ('FAERS', '2024Q1', 'planted', "
                    "$n, $p, $c, $s, $start)",
                    {"n": line, "p": primaryid, "c": caseid, "s": drug_seq, "start": start},
                )
            expected[caseid] = (status, days)
        rebuild(con)
    yield {"db": db, "expected": expected, "caseids": caseids, "tmp": tmp}


@pytest.fixture
def planted_con(planted: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(planted["db"]) as con:
        yield con


def test_partial_and_negative_dates_are_flagged_and_never_used(planted, planted_con) -> None:
    result = onset(planted_con, KRATOM)
    per_case = result.cases.set_index("caseid")
    for caseid, (status, days) in planted["expected"].items():
        assert per_case.loc[caseid, "onset_status"] == status, caseid
        if math.isnan(days):
            assert math.isnan(per_case.loc[caseid, "onset_days"]), caseid
        else:
            assert per_case.loc[caseid, "onset_days"] == days, caseid
    others = per_case.drop(index=list(planted["expected"]))
    assert set(others["onset_status"]) <= {"no start date", "no event date"}
    row = result.table.iloc[0]
    used = [d for s, d in planted["expected"].values() if s == "onset"]
    assert row["n_with_onset"] == len(used) == 4
    assert row["n_partial_date"] == 3 and row["n_negative_onset"] == 2
    assert row["median_days"] == np.median(used)
    assert (row["q1_days"], row["q3_days"]) == tuple(np.percentile(used, [25, 75]))
    assert math.isnan(row["weibull_shape"])  # 4 onsets: fewer than ONSET_MIN_CASES
    assert set(result.cases["onset_status"]) <= set(STATUSES)


def test_top_terms_count_a_case_once_per_term(planted_con) -> None:
    result = onset(planted_con, KRATOM, top_terms=3, groups=True)
    table = result.table
    assert list(table["term_kind"][:4]) == ["all", "pt", "pt", "pt"]
    assert (table["term_kind"] == "group").sum() == 7
    pts = table[table["term_kind"] == "pt"]
    for _, row in pts.iterrows():
        n = planted_con.execute(
            "SELECT count(DISTINCT r.caseid) FROM case_reactions r "
            "JOIN involved_cases('kratom', NULL) USING (caseid) WHERE r.pt = $pt",
            {"pt": row["term"]},
        ).fetchone()
        assert n is not None and row["n_cases"] == n[0]
    assert list(pts["n_cases"]) == sorted(pts["n_cases"], reverse=True)


def _run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args))


@pytest.mark.slow  # draws the figure at full size (PNG and SVG)
def test_cli_json_and_figure(planted, tmp_path: Path) -> None:
    db = str(planted["db"])
    result = _run("cases", "--db", db, "--onset", "--format", "json", "--out", str(tmp_path))
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["table"][0]["term"] == ALL_TERMS and out["table"][0]["n_with_onset"] == 4
    statuses = {c["caseid"]: c["onset_status"] for c in out["cases"]}
    assert statuses == {**statuses, **{c: s for c, (s, _) in planted["expected"].items()}}
    assert out["metadata"]["substance"] == "kratom" and out["metadata"]["synthetic"] is True
    png, svg = tmp_path / "time_to_onset.png", tmp_path / "time_to_onset.svg"
    with Image.open(png) as image:
        assert image.size == (2000, 1120)
        assert "Time to onset" in image.info["Title"]
        assert "4 kratom cases have both dates to the day" in image.info["Description"]
    text = svg.read_text(encoding="utf-8")
    assert '<title id="title">' in text and "SYNTHETIC DATA" in text


def test_cli_table_and_csv(planted) -> None:
    db = str(planted["db"])
    with Database(planted["db"]) as door:
        result = door.onset(top_terms=2)
        assert result.table.iloc[0]["n_with_onset"] == 4 and len(result.table) == 3
    table = _run("cases", "--db", db, "--onset", "--format", "table")
    assert table.exit_code == 0 and "no estimate" in table.output
    csv = _run("cases", "--db", db, "--onset", "--format", "csv", "--top-terms", "0")
    assert csv.exit_code == 0 and len(csv.output.strip().splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--onset", "--dechallenge"], "choose one"),
        (["--groups"], "need --onset or --dechallenge"),
        (["--dechallenge", "--out", "figs"], "--out needs --onset"),
        (["--onset", "--top-terms", "-1"], "--top-terms"),
    ],
)
def test_cli_bad_usage_is_one_line(planted, args: list[str], message: str) -> None:
    result = _run("cases", "--db", str(planted["db"]), *args)
    assert result.exit_code == 2
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_profile_interval_covers_the_truth_about_95_percent_of_the_time() -> None:
    """200 samples of 50 onsets: the 95% interval holds the true shape in most of them (the
    shape's MLE is biased upward in small samples, so coverage runs a little under 95%; a
    wrong deviance point or a Wald interval on the wrong scale would leave this range)."""
    rng = np.random.default_rng(11)
    held = 0
    for _ in range(200):
        days = np.floor(stats.weibull_min(0.7, scale=30.0).rvs(50, random_state=rng))
        fit = weibull_fit(days)
        held += fit.shape_lower < 0.7 < fit.shape_upper
    assert 0.88 <= held / 200 <= 0.99

"""Sequential alerts: the MaxSPRT critical values against the published ones, the recursions
against brute-force enumeration and simulation, alerts on planted increases and none on flat
series, the stored runs and their freshness, the `alerts` command and `update`'s exit status."""

from __future__ import annotations

import functools
import http.server
import json
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy.stats import poisson

from surveillance import sequential as sq
from surveillance.asof import asof_counts
from surveillance.cli import cli
from surveillance.design import make_design
from surveillance.extract import resolve
from surveillance.signals import signals
from surveillance.synthetic import Series, generate_series

# Continuous Poisson MaxSPRT critical values, alpha = 0.05, D = 0 (Kulldorff et al. 2011, Table
# 1), as the R package Sequential 4.5.1 ships them in R/CV.Poisson.R (`TableCV.PoissonM`, rows
# T = 1, 1.5, 2, ..., columns M = 1, 2, 3, 4, 6, 8, 10), which CV.Poisson returns for them.
PUBLISHED_CV = [
    (1, 1, 2.85393700326128),
    (2, 1, 3.0469774628286),
    (2, 2, 2.68935364101625),
    (5, 1, 3.29718279728549),
    (5, 2, 3.01290868171239),
    (10, 1, 3.46795158033368),  # also the CV.Poisson man page: "[1] 3.467952"
    (10, 3, 3.06424796686384),
]


@pytest.mark.parametrize(("length", "min_cases", "published"), PUBLISHED_CV)
def test_continuous_critical_values_match_the_published_table(
    length: float, min_cases: int, published: float
) -> None:
    found = sq.continuous_critical_value(length, 0.05, min_cases)
    assert found.cv == pytest.approx(published, abs=1e-7)
    assert found.size == pytest.approx(0.05, abs=1e-8)


def test_power_matches_performance_poisson() -> None:
    # Sequential's Performance.Poisson man page, example 1: SampleSize = 10, cv = 3.467952,
    # RR = 2 gives "Power 0.6850634".
    increments, thresholds = sq.continuous_boundary(3.467952, 10, 1)
    power = sq.rejection_probabilities(increments, thresholds, rr=2).sum()
    assert power == pytest.approx(0.6850634, abs=5e-7)


def _enumerated(increments: list[float], alarm: object) -> float:
    """P(alarm) summed over every combination of per-look counts below a cap, weighted by their
    Poisson probabilities (independent of the recursions under test)."""
    cap = 25
    counts = np.indices((cap,) * len(increments)).reshape(len(increments), -1).T
    weights = np.prod([poisson.pmf(counts[:, i], m) for i, m in enumerate(increments)], axis=0)
    fired = alarm(counts)  # type: ignore[operator]
    return float(weights[fired].sum())


def _clipped_sums(counts: np.ndarray, expected: list[float], k: float) -> np.ndarray:
    """S_t = max(0, S_t-1 + O_t - k E_t) for every row of counts at once (looks in columns)."""
    s = np.zeros(len(counts))
    out = []
    for t, e in enumerate(expected):
        s = np.maximum(0.0, s + counts[:, t] - k * e)
        out.append(s)
    return np.stack(out, axis=1)


@pytest.mark.parametrize("cv", [0.8, 1.7, 2.9])
def test_group_recursion_equals_enumeration(cv: float) -> None:
    increments = [0.7, 1.3, 0.4]
    thresholds = sq.cases_to_alert(np.cumsum(increments), cv, 1)
    recursion = sq.rejection_probabilities(increments, thresholds).sum()
    enumerated = _enumerated(increments, lambda c: (np.cumsum(c, axis=1) >= thresholds).any(axis=1))
    assert recursion == pytest.approx(enumerated, abs=1e-12)


def test_one_look_critical_value_is_the_poisson_quantile() -> None:
    mu = 4.0
    found = sq.critical_value([mu], alpha=0.05)
    needed = int(sq.cases_to_alert([mu], found.cv, 1)[0])
    # The smallest k with P(X >= k) <= 0.05, straight from the Poisson tail.
    k = next(k for k in range(1, 50) if poisson.sf(k - 1, mu) <= 0.05)
    assert needed == k
    assert found.cv == pytest.approx(sq.llr(k, mu))
    assert found.size == pytest.approx(poisson.sf(k - 1, mu))


@pytest.mark.parametrize(
    "expected", [[5, 6, 6, 5, 8], [0.8, 1.2, 0.5, 2.0, 1.0, 1.5, 0.7, 1.3], [0.02] * 8]
)
def test_group_critical_value_is_the_smallest_within_alpha(expected: list[float]) -> None:
    found = sq.critical_value(expected)
    mu = np.cumsum(expected)

    def size(cv: float) -> float:
        return float(sq.rejection_probabilities(expected, sq.cases_to_alert(mu, cv, 1)).sum())

    assert size(found.cv) == pytest.approx(found.size) and found.size <= 0.05
    # The test changes only where the CV passes an attainable LLR: the largest one below the CV
    # (one case fewer than needed at some look) must give a size above alpha.
    needed = sq.cases_to_alert(mu, found.cv, 1)
    below = [v for v in sq.llr(needed - 1, mu) if 0 < v < found.cv]
    if below:
        assert size(max(below)) > 0.05
    else:  # the CV already alerts on the first case at every look
        assert (needed == 1).all()


FLAT = np.array([0.8, 1.2, 0.5, 2.0, 1.0, 1.5, 0.7, 1.3])


def test_no_alert_on_flat_series_beyond_alpha_by_simulation() -> None:
    runs = 2000
    rng = np.random.default_rng(20261130)
    observed = rng.poisson(FLAT, size=(runs, len(FLAT)))
    found = sq.critical_value(FLAT)
    needed = sq.cases_to_alert(np.cumsum(FLAT), found.cv, 1)
    maxsprt = np.mean((np.cumsum(observed, axis=1) >= needed).any(axis=1))
    k = sq.cusum_k(2.0)
    h = sq.cusum_threshold(FLAT)
    cusum = np.mean([(sq.cusum_path(o, FLAT, k) >= h).any() for o in observed])
    tolerance = 3 * np.sqrt(0.05 * 0.95 / runs)
    for rate, exact in ((maxsprt, found.size), (cusum, sq.cusum_false_alarm(FLAT, k, h))):
        assert exact <= 0.05
        assert rate <= 0.05 + tolerance
        assert abs(rate - exact) <= 3 * np.sqrt(exact * (1 - exact) / runs)


@pytest.mark.parametrize("h", [0.5, 1.2, 2.7])
def test_cusum_false_alarm_equals_enumeration(h: float) -> None:
    expected = [0.9, 0.3, 1.6]
    k = sq.cusum_k(2.0)
    enumerated = _enumerated(expected, lambda c: (_clipped_sums(c, expected, k) >= h).any(axis=1))
    assert sq.cusum_false_alarm(expected, k, h) == pytest.approx(enumerated, abs=1e-12)


@pytest.mark.parametrize("h", [0.5, 2.7])
def test_cusum_false_alarm_equals_enumeration_when_the_drift_outruns_h(h: float) -> None:
    # k E per look (about 4) is wider than the kept window (h + 1 counts), and a look expects
    # nothing: the windows move by several counts at once, by different amounts per reset look.
    expected = [3.0, 0.0, 2.6, 0.4]
    k = sq.cusum_k(2.0)
    enumerated = _enumerated(expected, lambda c: (_clipped_sums(c, expected, k) >= h).any(axis=1))
    assert sq.cusum_false_alarm(expected, k, h) == pytest.approx(enumerated, abs=1e-12)


def test_cusum_thresholds_of_many_series_are_each_the_smallest_within_alpha() -> None:
    series = np.array(
        [
            [0.0] * 6,
            [0.02] * 6,
            [0.8, 1.2, 0.5, 2.0, 1.0, 1.5],
            [0, 0, 9.0, 12.0, 0, 7.5],
            [3.0] * 6,
        ]
    )
    k = sq.cusum_k(2.0)
    found = sq.cusum_thresholds(series, batch=2)  # batches that converge at different passes
    assert found[0] == np.inf
    for h, expected in zip(found[1:], series[1:], strict=True):
        assert h == sq.cusum_threshold(expected)
        assert sq.cusum_false_alarm(expected, k, h) <= 0.05
        assert sq.cusum_false_alarm(expected, k, h - 1e-4) > 0.05


def test_cusum_path_is_the_clipped_recursion() -> None:
    observed, expected, k = [3, 0, 0, 5, 1], [1.0, 2.0, 0.5, 1.0, 1.0], 1.4
    recursion = _clipped_sums(np.array([observed]), expected, k)[0]
    assert sq.cusum_path(observed, expected, k) == pytest.approx(recursion)


@pytest.mark.parametrize("jump", [4, 7, 10])
def test_planted_increase_alerts_at_or_after_it(jump: int) -> None:
    quarters = [f"Q{i}" for i in range(1, 13)]
    expected = np.full(12, 1.5)
    flat = np.round(expected).astype(int)
    raised = flat.copy()
    raised[jump - 1 :] = 4 * flat[jump - 1 :]
    for observed, planted in ((flat, None), (raised, jump)):
        path = sq.term_path(quarters, observed, expected).path
        for flag in ("maxsprt_alert", "cusum_alert"):
            looks = path.loc[path[flag], "look"]
            if planted is None:
                assert looks.empty, flag
            else:
                assert planted <= looks.min() <= planted + 2, flag


def test_looks_without_expected_cases_test_nothing() -> None:
    path = sq.term_path(["Q1", "Q2", "Q3"], [2, 0, 0], [0.0, 0.5, 0.5]).path
    assert path["llr"].isna().tolist() == [True, False, False]
    assert path["cusum"].isna().tolist() == [True, False, False]
    assert path["cum_observed"].tolist() == [2, 2, 2]
    assert not path.loc[0, "maxsprt_alert"] and not path.loc[0, "cusum_alert"]
    nothing = sq.term_path(["Q1"], [3], [0.0])
    assert not nothing.path["maxsprt_alert"].any() and np.isinf(nothing.maxsprt.cv)


def test_bad_parameters_are_usage_errors() -> None:
    from surveillance.errors import UsageError

    with pytest.raises(UsageError, match="alpha"):
        sq.critical_value([1.0], alpha=0.7)
    with pytest.raises(UsageError, match="at least 1"):
        sq.critical_value([1.0], min_cases=0)
    with pytest.raises(UsageError, match="> 1"):
        sq.cusum_k(1.0)


# --- the database (slow tier: a sequential run on the session series takes ~10 s) ------------
@pytest.mark.slow
def test_stored_run_counts_match_the_clean_layer_and_signals(
    series_con: duckdb.DuckDBPyConnection,
) -> None:
    kratom = resolve("kratom", None)
    result = sq.sequential(series_con, kratom)
    quarters = [
        r[0] for r in series_con.execute("SELECT quarter FROM quarters ORDER BY 1").fetchall()
    ]
    assert list(result.quarters) == quarters
    # Observed: the substance's new cases with the term, by quarter of initial receipt.
    counted = series_con.execute(
        """SELECT r.pt, count(DISTINCT c.caseid) FROM cases c
        JOIN case_reactions r USING (caseid)
        WHERE c.caseid IN (SELECT caseid FROM substance_hits WHERE substance = 'kratom')
          AND c.initial_quarter IN (SELECT quarter FROM quarters)
        GROUP BY 1"""
    ).fetchall()
    pts = result.paths[result.paths["term_kind"] == "pt"]
    last = pts[pts["look"] == len(quarters)].set_index("term")
    assert dict(counted) == last["cum_observed"].to_dict()
    # A group's case counts once, whichever and however many of its PTs it reports.
    hits = """SELECT caseid FROM cases WHERE caseid IN (SELECT caseid FROM substance_hits
        WHERE substance = 'kratom') AND initial_quarter IN (SELECT quarter FROM quarters)"""
    groups = result.paths[result.paths["term_kind"] == "group"]
    groups = groups[groups["look"] == len(quarters)].set_index("term")["cum_observed"]
    assert len(groups) > 0
    for group in make_design(groups=True).groups:
        if group.name not in groups.index:
            continue
        found = series_con.execute(
            f"""SELECT count(DISTINCT caseid) FROM case_reactions
            WHERE caseid IN ({hits}) AND list_contains($pts, pt_key)""",
            {"pts": [p.strip().upper() for p in group.pts]},
        ).fetchone()
        assert found == (groups[group.name],)
    # Expected at the last look: the background rate c / (c + d) of signals through it.
    table = signals(series_con, kratom, min_cases=1).table.set_index("term")
    rate = table["c"] / (table["c"] + table["d"])
    assert last["background_rate"].to_numpy() == pytest.approx(rate.loc[last.index].to_numpy())
    assert set(result.paths["term_kind"]) == {"pt", "group"}
    # Each alert is the first look over its limit.
    for alert in result.alerts.itertuples():
        own = result.paths[(result.paths["term"] == alert.term)]
        own = own[own["term_kind"] == alert.term_kind].sort_values("look")
        flag = "maxsprt_alert" if alert.method == "maxsprt" else "cusum_alert"
        assert own.loc[own[flag], "quarter"].iloc[0] == alert.alert_quarter
        assert alert.new_this_quarter == (alert.alert_quarter == quarters[-1])
    assert result.alerts["new_this_quarter"].is_monotonic_decreasing


@pytest.mark.slow
def test_stored_run_is_reused_only_with_its_data(series_con: duckdb.DuckDBPyConnection) -> None:
    kratom = resolve("kratom", None)
    first = sq.sequential(series_con, kratom, alpha=0.04)
    again = sq.sequential(series_con, kratom, alpha=0.04)
    assert (again.alerts["created_at"] == first.alerts["created_at"]).all()
    pd.testing.assert_frame_equal(
        again.paths.reset_index(drop=True),
        first.paths.sort_values(["term_kind", "term", "look"]).reset_index(drop=True),
        check_dtype=False,
    )
    series_con.execute(
        "UPDATE sequential_runs SET data_fingerprint = 'older data' "
        "WHERE data_fingerprint = $f AND parameters LIKE $alpha",
        {"f": first.data_fingerprint, "alpha": '%"alpha": 0.04,%'},
    )
    fresh = sq.sequential(series_con, kratom, alpha=0.04)
    assert fresh.data_fingerprint == first.data_fingerprint
    assert (
        not fresh.alerts.empty and (fresh.alerts["created_at"] > first.alerts["created_at"]).all()
    )


@pytest.mark.slow
def test_the_report_s_counts_give_the_same_run(series_con: duckdb.DuckDBPyConnection) -> None:
    kratom = resolve("kratom", None)
    counts = asof_counts(series_con, kratom, None, groups=sq.event_groups())
    given = sq.sequential(series_con, kratom, alpha=0.03, counts=counts)
    series_con.execute("DELETE FROM sequential_runs WHERE parameters LIKE '%\"alpha\": 0.03,%'")
    own = sq.sequential(series_con, kratom, alpha=0.03)
    assert not own.alerts.empty
    assert (own.alerts["created_at"] > given.alerts["created_at"].max()).all()  # computed again
    pd.testing.assert_frame_equal(own.paths, given.paths)
    pd.testing.assert_frame_equal(
        own.alerts.drop(columns="created_at"), given.alerts.drop(columns="created_at")
    )
    with pytest.raises(ValueError, match="event groups"):
        sq.sequential(series_con, kratom, alpha=0.02, counts=counts.pts())


@pytest.mark.slow
def test_alerts_command_formats(series_db: tuple[Series, Path]) -> None:
    db = str(series_db[1])
    runner = CliRunner()
    out = runner.invoke(cli, ["alerts", "--db", db, "--format", "json"])
    assert out.exit_code == 0, out.output
    rows = json.loads(out.output)
    assert rows and {"term", "method", "alert_quarter", "parameters"} <= set(rows[0])
    assert {json.loads(r["parameters"])["alpha"] for r in rows} == {0.05}
    table = runner.invoke(cli, ["alerts", "--db", db, "--format", "table"])
    assert table.exit_code == 0 and "MaxSPRT LLR" in table.output
    paths = runner.invoke(cli, ["alerts", "--db", db, "--paths", "--format", "csv"])
    frame = pd.read_csv(__import__("io").StringIO(paths.output))
    assert set(frame["term"]) == {r["term"] for r in rows}
    for bad in (["--alpha", "0.9"], ["--term", "liver"]):
        refused = runner.invoke(cli, ["alerts", "--db", db, *bad])
        assert refused.exit_code == 2 and "Traceback" not in refused.output, bad


# --- a planted increase, end to end ---------------------------------------------------------
PLANTED = "Planted reaction"
SERIES_QUARTERS = ["2019Q1", "2019Q2", "2019Q3", "2019Q4", "2020Q1", "2020Q2"]
JUMP = "2019Q4"


def _plant(series: Series) -> None:
    """Add PLANTED to every fiftieth case (by caseid) of every quarter, and from JUMP on to every
    kratom case first received then: the term's rate jumps at JUMP for kratom only."""
    truth = series.cases.set_index("caseid")
    kratom_from_jump = truth["is_kratom"] & ~truth["is_7oh"] & (truth["quarter_initial"] >= JUMP)
    raised = {str(caseid) for caseid in truth.index[kratom_from_jump]}
    for files in series.quarters:
        with zipfile.ZipFile(files.zip_path) as z:
            members = {info.filename: z.read(info) for info in z.infolist()}
        demo = next(n for n in members if "DEMO" in n.upper())
        reac = next(n for n in members if "REAC" in n.upper())
        end = b"\r\n" if b"\r\n" in members[reac] else b"\n"
        added = []
        for line in members[demo].decode("latin-1").splitlines()[1:]:
            primaryid, caseid = line.split("$")[:2]
            if caseid.isdigit() and (int(caseid) % 50 == 0 or caseid in raised):
                added.append(f"{primaryid}${caseid}${PLANTED}$".encode("latin-1") + end)
        members[reac] = members[reac] + b"".join(added)
        with zipfile.ZipFile(files.zip_path, "w", zipfile.ZIP_DEFLATED) as z:
            for name, data in members.items():
                z.writestr(name, data)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("planted")
    series = generate_series(SERIES_QUARTERS, folder, n_cases=150, seed=3, damage=False)
    _plant(series)
    return [q.zip_path for q in series.quarters]


class _Site:
    """The planted zips served over HTTP with an FDA-style index page."""

    def __init__(self, root: Path, url: str) -> None:
        self.root, self.url = root, url

    def publish(self, zip_path: Path) -> None:
        (self.root / zip_path.name).write_bytes(zip_path.read_bytes())
        links = "".join(
            f'<tr><td>Q</td><td><a href="/{p.name}">ASCII</a></td></tr>'
            for p in sorted(self.root.glob("*.zip"))
        )
        (self.root / "index.html").write_text(f"<html><body><table>{links}</table></body></html>")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[_Site]:
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield _Site(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.slow
def test_update_exits_3_and_writes_alerts_json_when_a_planted_alert_is_new(
    tmp_path: Path, site: _Site, planted: list[Path]
) -> None:
    def run(*extra: str) -> tuple[int, dict]:
        args = ["update", "--db", str(tmp_path / "db.duckdb"), "--out", str(tmp_path / "reports")]
        args += ["--dest", str(tmp_path / "raw"), "--base-url", site.url]
        args += ["--index-url", site.url + "/index.html", "--quiet", *extra]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code in (0, 3), result.output
        return result.exit_code, json.loads((tmp_path / "reports" / "alerts.json").read_text())

    for zip_path in planted[:3]:
        site.publish(zip_path)
    _, first = run("--since", SERIES_QUARTERS[0])
    assert first["loaded_this_run"] == SERIES_QUARTERS[:3]
    assert PLANTED not in {a["term"] for a in first["alerts"]}
    site.publish(planted[3])
    code, second = run()
    assert second["loaded_this_run"] == [JUMP] and code == 3
    new = {(a["term"], a["method"]) for a in second["new_alerts"]}
    assert {(PLANTED, "maxsprt"), (PLANTED, "cusum")} <= new
    assert all(a["alert_quarter"] == JUMP for a in second["new_alerts"])
    code, third = run()
    assert code == 0 and third["new_alerts"] == []  # nothing loaded: nothing new to act on


@pytest.mark.parametrize(
    ("new_alerts", "switch", "status"),
    [
        ([{"term": "Seizure", "method": "maxsprt"}], [], 3),
        ([{"term": "Seizure", "method": "maxsprt"}], ["--no-alerts-exit-status"], 0),
        ([], [], 0),
    ],
)
def test_update_exit_status_follows_new_alerts_and_the_switch(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    new_alerts: list[dict[str, str]],
    switch: list[str],
    status: int,
) -> None:
    import surveillance.update as updating

    def fake(*args: object, **kwargs: object) -> updating.UpdateResult:
        return updating.UpdateResult(new_alerts=new_alerts)

    monkeypatch.setattr(updating, "update", fake)
    args = ["update", "--db", str(tmp_path / "db.duckdb"), "--quiet", *switch]
    assert CliRunner().invoke(cli, args).exit_code == status


NO_CASES_TOML = """
[substance]
name = "nothing-such"
version = "0.1"
description = "a substance no synthetic case reports"
sources = ["test"]

[rules]
terms = ["ZZQX NEVER REPORTED"]
"""


@pytest.mark.slow
def test_alerts_json_of_a_substance_without_cases(
    series_con: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    from surveillance.update import _write_alerts

    term_file = tmp_path / "nothing-such.toml"
    term_file.write_text(NO_CASES_TOML, encoding="utf-8")
    path = tmp_path / "reports" / "alerts.json"
    assert _write_alerts(series_con, "nothing-such", term_file, ["2023Q1"], path) == []
    document = json.loads(path.read_text())
    assert document["new_alerts"] == [] and "no nothing-such cases" in document["note"]
    assert [p.name for p in path.parent.iterdir()] == ["alerts.json"]  # no partial file left

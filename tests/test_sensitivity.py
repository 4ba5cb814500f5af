"""Sensitivity analyses (`surveillance.sensitivity`): on the stratified planted quarter, where
sex confounds Seizure, the MH-adjusted analysis takes Seizure's signal away and says so; every
other analysis is the signals run with its option; the joint MH estimate is statsmodels'; what
cannot run says why; the rows are stored under the main run."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from statsmodels.stats.contingency_tables import StratifiedTable
from test_stratified import CONFOUNDED, MODIFIED, planted_quarter

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.definitions import ROBUSTNESS_RULE
from surveillance.extract import resolve
from surveillance.pipeline import load
from surveillance.sensitivity import ANALYSES, MH, Analysis, sensitivity, verdict, wide
from surveillance.signals import signals
from surveillance.stratified import FACTORS, JOINT, mh_joint, mh_table, mh_tables


@pytest.fixture(scope="module")
def planted_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("sensitivity")
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [planted_quarter(tmp / "faers_ascii_2024q1.zip")])
    return db


@pytest.fixture
def planted(planted_db: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(planted_db) as con:
        yield con


@pytest.fixture(scope="module")
def result(planted_db: Path):
    with connect(planted_db) as con:
        return sensitivity(con, resolve("kratom"))


def _cases(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Every case with its four factors' strata, exposure and terms, read independently of
    `stratified` (from the clean layer's own columns)."""
    return con.execute(
        """SELECT c.caseid, age_group(c.age_years) AS age, c.sex,
            CASE WHEN left(c.initial_quarter, 4)::INT < 2014 THEN 'early' ELSE 'late' END AS year,
            CASE WHEN c.reporter_type_label IS NULL THEN 'unknown' ELSE c.reporter_type END
                AS reporter,
            EXISTS (SELECT 1 FROM case_drugs d WHERE d.caseid = c.caseid
                    AND d.drugname = 'KRATOM') AS exposed,
            list(r.pt) AS terms
        FROM cases c JOIN case_reactions r USING (caseid) GROUP BY ALL"""
    ).fetchdf()


def test_mh_adjusted_is_statsmodels_over_the_joint_strata(planted) -> None:
    cases = _cases(planted)
    table = mh_joint(planted, resolve("kratom"), None, [CONFOUNDED, MODIFIED])
    assert set(table["factor"]) == {JOINT}
    for term in (CONFOUNDED, MODIFIED):
        has = cases["terms"].map(lambda ts, t=term: t in list(ts))
        tables = []
        for _, stratum in cases.groupby(list(FACTORS)):
            e, t = stratum["exposed"], has[stratum.index]
            cells = [[(e & t).sum(), (e & ~t).sum()], [(~e & t).sum(), (~e & ~t).sum()]]
            if min(sum(cells[0]), sum(cells[1]), cells[0][0] + cells[1][0]) > 0:
                tables.append(np.array(cells, dtype=float))
        expected = StratifiedTable(tables)
        row = table[table["term"] == term].iloc[0]
        assert row["n_informative"] == sum(
            1 for t in tables if t[:, 1].sum() > 0 and t[1].sum() > 0
        )
        assert row["ror_mh"] == pytest.approx(expected.oddsratio_pooled, rel=1e-9)
        lower, upper = expected.oddsratio_pooled_confint()
        assert row["ror_mh_lower"] == pytest.approx(lower, rel=1e-9)
        assert row["ror_mh_upper"] == pytest.approx(upper, rel=1e-9)


def test_the_mh_analysis_counts_the_table_by_factor_with_it(planted, result) -> None:
    s, roles, groups = resolve("kratom"), result.main.roles, result.main.design.groups
    pts = [t for t, k in result.terms if k == "pt"]
    by_factor, joint = mh_tables(planted, s, roles, pts, groups)
    pd.testing.assert_frame_equal(by_factor, mh_table(planted, s, roles, FACTORS, pts))
    pd.testing.assert_frame_equal(joint, mh_joint(planted, s, roles, pts, groups))
    assert set(joint["term_kind"]) == {"pt", "group"}
    # The analyses ran MH once and kept its table by factor for the report.
    assert result.stratified is not None
    pd.testing.assert_frame_equal(result.stratified, by_factor)


def test_the_confounded_signal_is_not_robust_and_the_change_is_listed(result) -> None:
    table = result.table
    seizure = table[table["term"] == CONFOUNDED].set_index("analysis")
    assert bool(seizure.loc["main", "signal"])  # crude OR about 2.8: a signal
    assert not bool(seizure.loc[MH, "signal"])  # within every stratum the OR is 1
    assert bool(seizure.loc[MH, "changed"])
    changed = result.changes()
    assert (CONFOUNDED, MH) in set(zip(changed["term"], changed["analysis"], strict=True))
    # (Every background case of the planted quarter has aspirin: masking empties c, so the
    # masking-adjusted analysis loses the signal too.)
    verdict_text = result.verdicts[(CONFOUNDED, "pt")]
    assert verdict_text.startswith("Not robust: no longer a signal in ")
    assert "'MH-adjusted'" in verdict_text
    # The seizure group holds no other PT of the planted quarter: under MH it is Seizure itself.
    group = table[(table["term"] == "seizure") & (table["analysis"] == MH)].iloc[0]
    assert group["term_kind"] == "group"
    assert group["ror"] == pytest.approx(seizure.loc[MH, "ror"], rel=1e-12)
    assert not group["signal"] and group["changed"]
    # The modified term (OR 9 among men) stays a signal wherever it is counted (masking aside).
    modified = table[(table["term"] == MODIFIED) & (table["analysis"] != "masking_adjusted")]
    assert modified["signal"].all() and not modified["changed"].any()
    assert result.verdicts[(MODIFIED, "pt")] == (
        "Not robust: no longer a signal in 'Masking-adjusted'."
    )


def test_every_analysis_is_the_signals_run_with_its_option(planted, result) -> None:
    s = resolve("kratom")
    main = result.main
    for analysis in ANALYSES[1:]:
        if analysis.key == MH or analysis.key in result.skipped:
            continue
        options = {"roles": main.roles, **analysis.options}
        run = signals(
            planted, s, main.through, min_cases=1, groups=True, prior=main.prior, **options
        )
        expected = run.table.set_index(["term", "term_kind"])
        rows = result.table[result.table["analysis"] == analysis.key]
        for r in rows.itertuples(index=False):
            if (r.term, r.term_kind) in expected.index:
                e = expected.loc[(r.term, r.term_kind)]
                assert (r.a, r.b, r.c, r.d) == (e["a"], e["b"], e["c"], e["d"]), analysis.key
                assert r.signal == bool(e["signal_ror"])
            else:
                assert r.a == 0 and not r.signal


def test_an_analysis_that_cannot_run_says_why(result) -> None:
    # The planted quarter has no herbal product: the natural-product comparator has no case.
    assert "natural-products" in result.skipped["natural_products"]
    assert "natural_products" not in set(result.table["analysis"])
    shown = wide(result)
    assert "Natural-product comparator" not in shown.columns
    assert list(shown["term"]) == [t for t, _ in result.terms]


def test_rows_are_stored_under_the_main_run_and_replaced(planted_db: Path, result) -> None:
    with connect(planted_db) as con:
        sensitivity(con, resolve("kratom"))
        stored = con.execute(
            "SELECT count(*), count(DISTINCT analysis) FROM signal_sensitivity WHERE run_id = $r",
            {"r": result.main.run_id},
        ).fetchone()
    assert stored == (len(result.table), len(set(result.table["analysis"])))


def test_verdicts_follow_the_rule() -> None:
    run = [
        Analysis("main", "Main"),
        Analysis("x", "X"),
        Analysis("y", "Y"),
        Analysis("z", "Z"),
    ]

    def table(signals: dict[str, bool]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "analysis": list(signals),
                "term": "T",
                "term_kind": "pt",
                "signal": list(signals.values()),
            }
        )

    term = ("T", "pt")
    every = {"main": True, "x": True, "y": True, "z": True}
    assert verdict(table(every), term, run) == "Robust: a signal in all 4 analyses run."
    lost = {**every, "x": False, "z": False}
    assert verdict(table(lost), term, run) == "Not robust: no longer a signal in 'X' and 'Z'."
    gained = {"main": False, "x": False, "y": True, "z": False}
    assert verdict(table(gained), term, run) == (
        "Not a signal in the main analysis; a signal in 'Y'."
    )
    assert verdict(table(dict.fromkeys(every, False)), term, run) == (
        "Not a signal in any analysis run."
    )
    assert "ROR" in ROBUSTNESS_RULE


@pytest.mark.slow
def test_cli_prints_the_matrix_the_changes_and_the_verdicts(planted_db: Path) -> None:
    runner = CliRunner()
    shown = runner.invoke(
        cli, ["signals", "--db", str(planted_db), "--sensitivity", "--format", "table"]
    )
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "Classifications that differ from the main analysis:" in out
    assert f"{CONFOUNDED} (pt): not a signal in MH-adjusted" in out
    assert f"{MODIFIED} (pt): Not robust: no longer a signal in 'Masking-adjusted'." in out
    assert "Not run: Natural-product comparator:" in out
    assert all(len(line) <= 100 for line in out.splitlines())
    as_csv = runner.invoke(
        cli, ["signals", "--db", str(planted_db), "--sensitivity", "--format", "csv"]
    )
    assert as_csv.exit_code == 0
    header = as_csv.stdout.splitlines()[0]
    assert header == "analysis,term,term_kind,a,b,c,d,ror,ror_lower,ror_upper,marks,signal,changed"
    assert "Not run: Natural-product comparator" in as_csv.stderr


@pytest.mark.parametrize(
    "extra", [["--groups"], ["--background", "natural-products"], ["--mh-by", "sex"]]
)
def test_cli_refuses_options_the_analyses_set_themselves(planted_db: Path, extra) -> None:
    refused = CliRunner().invoke(cli, ["signals", "--db", str(planted_db), "--sensitivity", *extra])
    assert refused.exit_code == 2
    assert (
        refused.output.count("\n") == 1 and "--sensitivity runs its own designs" in refused.output
    )


def test_the_main_run_is_the_grouped_signals_run(planted, result) -> None:
    full = signals(planted, resolve("kratom"), groups=True, prior=result.main.prior)
    columns = list(full.table.columns)
    assert list(result.main.table.columns) == columns
    key = ["term_kind", "term"]
    got = result.main.table.sort_values(key).reset_index(drop=True)
    expected = full.table.sort_values(key).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected)


def test_a_second_run_reads_the_stored_analyses_back(planted_db: Path, result, monkeypatch) -> None:
    import surveillance.sensitivity as module

    with connect(planted_db) as con:
        sensitivity(con, resolve("kratom"))  # stored by this version, whatever ran before

        def refuse(*_args, **_kwargs):
            raise AssertionError("an analysis was run again")

        monkeypatch.setattr(module, "_analysis", refuse)
        monkeypatch.setattr(module, "_mh", refuse)
        plain = signals(con, resolve("kratom"))
        again = sensitivity(con, resolve("kratom"), plain=plain)
        pd.testing.assert_frame_equal(again.table, result.table)
        assert again.stratified is None  # the report counts its table by factor itself
        assert (again.terms, again.skipped, again.verdicts) == (
            result.terms,
            result.skipped,
            result.verdicts,
        )
        # Other options (here fewer compared terms) or another tool version run them again.
        with pytest.raises(AssertionError, match="run again"):
            sensitivity(con, resolve("kratom"), top=2)
        monkeypatch.setattr(module, "__version__", "0.0.0-other")
        with pytest.raises(AssertionError, match="run again"):
            sensitivity(con, resolve("kratom"))


def test_a_plain_run_of_other_options_is_refused(planted) -> None:
    plain = signals(planted, resolve("kratom"), min_cases=2)
    with pytest.raises(ValueError, match="not the run of these options"):
        sensitivity(planted, resolve("kratom"), plain=plain)


def test_the_runs_share_reactions_only_for_their_keys_and_data_vintage(
    planted_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import surveillance.signals as module

    db = tmp_path / "db.duckdb"
    shutil.copy(planted_db, db)
    s = resolve("kratom")
    with connect(db) as con:
        plain = signals(con, s)
        term = str(plain.table["term"].iloc[0])

        def a_of(terms: list[str]) -> int:
            run = signals(con, s, min_cases=1, prior=plain.prior, terms=terms)
            return int(run.table.set_index("term").loc[term, "a"])

        a = a_of([term])
        assert a == int(plain.table["a"].iloc[0])
        # One of the term's substance cases loses the term; the next run is of another vintage.
        con.execute(
            """DELETE FROM case_reactions WHERE upper(pt) = upper($t) AND caseid = (
                SELECT min(caseid) FROM involved_cases('kratom', NULL)
                WHERE caseid IN (SELECT caseid FROM case_reactions WHERE upper(pt) = upper($t)))""",
            {"t": term},
        )
        monkeypatch.setattr(module, "data_fingerprint", lambda _con: "another vintage")
        assert a_of([term]) == a - 1
        assert a_of([term, "NOT A TERM"]) == a - 1  # other keys: made again too
        sensitivity(con, s)
        left = con.execute(
            "SELECT count(*) FROM duckdb_tables() WHERE temporary AND table_name = ANY($t)",
            {"t": list(module.KEYED_REACTIONS)},
        ).fetchone()
        assert left == (0,)


@pytest.mark.slow
def test_the_analyses_read_the_compared_terms_reactions_once(
    planted_db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The main run's groups are counted with the compared PTs, so every run of one call asks for
    the same keys and the keyed reactions are made once (2.7 to 4.3 s each on the whole archive)."""
    import surveillance.signals as module

    db = tmp_path / "db.duckdb"
    shutil.copy(planted_db, db)
    asked: list[list[str]] = []
    keyed = module._keyed_reactions

    def counted(con: duckdb.DuckDBPyConnection, keys: list[str]) -> str:
        asked.append(keys)
        return keyed(con, keys)

    monkeypatch.setattr(module, "_keyed_reactions", counted)
    with connect(db) as con:
        con.execute("DROP TABLE IF EXISTS signal_sensitivity_runs")  # none to read back
        found = sensitivity(con, resolve("kratom"))
    assert len(asked) >= len(ANALYSES) - 1  # main, and every analysis but MH
    assert all(keys == asked[0] for keys in asked)
    pts = {t.upper() for t, k in found.terms if k == "pt"}
    assert pts <= set(asked[0])

"""Signals: the 2x2 counts equal the generator's ground truth, as-of analyses equal a database
that never saw the later quarters, and the command prints what an analyst needs."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import signals as signals_module
from surveillance import stats
from surveillance.cli import cli, compact_signals
from surveillance.db import connect
from surveillance.definitions import AGE_GROUPS, AGE_UNKNOWN, criteria_legend
from surveillance.errors import NoDataError, UsageError
from surveillance.extract import resolve
from surveillance.pipeline import load
from surveillance.signals import EBGM_COLUMNS, OUTPUT_COLUMNS, signals
from surveillance.synthetic import Series

# A converged prior (openEBGM's published CAERS estimate), and the same prior marked as not
# converged, as fit_prior reports a fit whose P sits at the edge.
CONVERGED = stats.Prior(
    alpha1=3.25379064,
    beta1=0.39988801,
    alpha2=2.02613219,
    beta2=1.90808279,
    p=0.06534557,
    loglik=-1.0,
    converged=True,
    n_pairs=10,
    n_points=10,
    method="published",
    loglik_full=-1.0,
)
NOT_CONVERGED = stats.Prior(
    **{
        **CONVERGED.__dict__,
        "converged": False,
        "method": "test; not converged: P = 0.9999 is within 0.001 of 0 or 1 (one gamma)",
    }
)


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
    numbers = [c for c in OUTPUT_COLUMNS[5:20] if run.ebgm_available or c not in EBGM_COLUMNS]
    assert not run.table[numbers].isna().any().any()
    assert run.table[list(EBGM_COLUMNS)].isna().all().all() != run.ebgm_available


def test_planted_signals_are_found(series_con) -> None:
    table = signals(series_con, resolve("kratom"), prior=CONVERGED).table.set_index("term")
    for term in ("Drug withdrawal syndrome", "Liver injury"):
        assert table.loc[term, "signal_prr"] and table.loc[term, "signal_ror"]
        assert table.loc[term, "signal_ic"] and table.loc[term, "eb05"] > 1


@pytest.mark.slow
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
    full = series_con.execute(
        "SELECT r.prior_loglik_full, p.loglik_full FROM signal_runs r, signal_priors p "
        "WHERE r.run_id = $r AND p.loglik_full = r.prior_loglik_full",
        {"r": suspects.run_id},
    ).fetchall()
    assert full and full[0][0] == pytest.approx(suspects.prior.loglik_full)
    assert np.isfinite(suspects.prior.loglik_full)


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


def _flat(text: str) -> str:
    """Text with its line wrapping undone, to look for a sentence that was wrapped."""
    return " ".join(text.split())


def test_cli_formats_and_caveats(series_db, monkeypatch) -> None:
    monkeypatch.setattr(signals_module, "fitted_prior", lambda *args, **kwargs: CONVERGED)
    db = str(series_db[1])
    runner = CliRunner()
    table = runner.invoke(cli, ["signals", "--db", db, "--format", "table", "--show-prior"])
    assert table.exit_code == 0, table.output
    assert "EBGM prior: alpha1=" in table.stderr and "log-likelihood" in table.stderr
    assert "not evidence that the substance causes" in table.stdout
    assert max(len(line) for line in table.stdout.splitlines()) <= 80
    assert "WARNING" not in table.output
    assert "Sorted by eb05, largest first." in table.stdout
    assert _flat("PRIE marks: " + criteria_legend()) in _flat(table.stdout)
    csv = runner.invoke(cli, ["signals", "--db", db, "--format", "csv"])
    assert csv.exit_code == 0, csv.output
    # Only the comparator, on stderr, so that a CSV that is passed on has its own header only.
    assert csv.stderr == "Background (c, d): all cases without the substance.\n"
    assert csv.stdout.splitlines()[0] == ",".join(OUTPUT_COLUMNS)
    frame = pd.read_csv(io.StringIO(csv.stdout))
    assert frame["eb05"].notna().all()
    assert list(frame["eb05"]) == sorted(frame["eb05"], reverse=True)


def test_unconverged_prior_never_drives_a_result(series_db, monkeypatch) -> None:
    monkeypatch.setattr(signals_module, "fitted_prior", lambda *args, **kwargs: NOT_CONVERGED)
    db = str(series_db[1])
    runner = CliRunner()
    table = runner.invoke(cli, ["signals", "--db", db, "--format", "table", "--min-cases", "1"])
    assert table.exit_code == 0, table.output
    lines = table.stdout.splitlines()
    assert lines[0].startswith("WARNING: EBGM unavailable: the EBGM prior did not converge (P =")
    assert _flat(table.stdout).count("WARNING: EBGM unavailable") == 2  # top and footer
    assert "Sorted by ic025, largest first." in table.stdout
    header = next(line for line in lines if line.lstrip().startswith("term"))
    ebgm_at = header.index("EBGM")
    rows = lines[lines.index(header) + 1 :][:5]
    assert all(row[ebgm_at:].split()[0] == "n/a" for row in rows)
    assert max(len(line) for line in lines) <= 80
    for fmt in ("csv", "json"):
        out = runner.invoke(
            cli, ["signals", "--db", db, "--format", fmt, "--min-cases", "1", "--sort", "ebgm"]
        )
        assert out.exit_code == 0, out.output
        assert out.stderr.startswith("WARNING: EBGM unavailable")
        frame = (
            pd.read_csv(io.StringIO(out.stdout))
            if fmt == "csv"
            else pd.DataFrame(json.loads(out.stdout))
        )
        assert frame[list(EBGM_COLUMNS)].isna().all().all()
        assert not frame["signal_ebgm"].any() and not frame["ebgm_below_eb05"].any()
        assert list(frame["ic025"]) == sorted(frame["ic025"], reverse=True)
    with connect(series_db[1]) as con:
        run = signals(con, resolve("kratom"), min_cases=1, prior=NOT_CONVERGED)
        assert run.sort == "ic025" and not run.ebgm_available
        stored = con.execute(
            "SELECT count(*), count(ebgm), count(eb05), count(eb95), bool_or(signal_ebgm) "
            "FROM signals WHERE run_id = $r",
            {"r": run.run_id},
        ).fetchone()
    assert stored == (len(run.table), 0, 0, 0, False)


def test_zero_corrected_in_every_output(series_db, monkeypatch) -> None:
    monkeypatch.setattr(signals_module, "fitted_prior", lambda *args, **kwargs: CONVERGED)
    db = str(series_db[1])
    with connect(series_db[1]) as con:
        run = signals(con, resolve("kratom"), min_cases=1)
        corrected = set(run.table.loc[run.table["zero_corrected"], "term"])
        assert corrected and len(corrected) < len(run.table)  # both kinds, to tell them apart
        stored = con.execute(
            "SELECT term FROM signals WHERE run_id = $r AND zero_corrected", {"r": run.run_id}
        ).fetchall()
    assert {t for (t,) in stored} == corrected
    runner = CliRunner()
    outputs = {
        fmt: runner.invoke(cli, ["signals", "--db", db, "--format", fmt, "--min-cases", "1"])
        for fmt in ("table", "csv", "json")
    }
    csv = pd.read_csv(io.StringIO(outputs["csv"].stdout))
    assert set(csv.loc[csv["zero_corrected"], "term"]) == corrected
    records = json.loads(outputs["json"].stdout)
    assert {r["term"] for r in records if r["zero_corrected"] is True} == corrected
    text = outputs["table"].stdout
    assert "* PRR and ROR with the zero-cell correction (0.5 added to each cell)." in text
    lines = text.splitlines()
    header = next(line for line in lines if line.lstrip().startswith("term"))
    prr_end = header.index("PRR") + len("PRR")
    shown = run.table.head(40)
    body = lines[lines.index(header) + 1 :][: len(shown)]
    for row, (_, want) in zip(body, shown.iterrows(), strict=True):
        prr_cell = row[:prr_end].split()[-1]
        assert prr_cell.endswith("*") == bool(want["zero_corrected"]), row


def test_no_exposed_case_is_an_answer(series_db) -> None:
    db = str(series_db[1])
    runner = CliRunner()
    none = runner.invoke(cli, ["signals", "--db", db, "--substance", "7-oh", "--through", "2013Q1"])
    assert none.exit_code == 1
    assert none.stderr == "Error: no 7-oh cases through 2013Q1\n"
    roles = runner.invoke(
        cli,
        ["signals", "--db", db, "--substance", "7-oh", "--through", "2013Q1", "--roles", "ss,ps"],
    )
    assert roles.exit_code == 1
    assert roles.stderr == "Error: no 7-oh cases in roles PS,SS through 2013Q1\n"


def test_cli_refuses_a_quarter_not_loaded(series_db) -> None:
    out = CliRunner().invoke(cli, ["signals", "--db", str(series_db[1]), "--through", "2019Q4"])
    assert out.exit_code == 1
    assert out.stderr == "Error: 2019Q4 is not loaded; the latest loaded quarter is 2023Q1\n"
    assert out.stdout == ""


def test_runs_with_different_priors_are_both_stored(series_con) -> None:
    kratom = resolve("kratom")
    other = stats.Prior(**{**CONVERGED.__dict__, "alpha1": 5.0, "beta1": 0.5})
    first = signals(series_con, kratom, prior=CONVERGED)
    second = signals(series_con, kratom, prior=other)
    assert first.run_id != second.run_id
    assert not np.allclose(
        first.table["ebgm"], second.table.set_index("term").loc[first.table["term"], "ebgm"]
    )
    for run in (first, second):
        stored = series_con.execute(
            "SELECT r.prior_alpha1, count(*) FROM signal_runs r JOIN signals s USING (run_id) "
            "WHERE run_id = $r GROUP BY ALL",
            {"r": run.run_id},
        ).fetchall()
        assert stored == [(run.prior.alpha1, len(run.table))]
    again = signals(series_con, kratom, prior=CONVERGED)
    assert again.run_id == first.run_id


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


def test_compact_table_marks_and_unavailable_values() -> None:
    frame = pd.DataFrame(
        {
            "term": ["Bimodal", "Zero cell", "No prior"],
            "a": [3, 4, 5],
            "expected": [0.1, 0.5, 1.5],
            "prr": [30.0, 8.0, 3.3333],
            "ror_lower": [5.0, 2.0, 1.5],
            "ic025": [1.2, 0.8, 0.1],
            "ebgm": [8.48, 3.0, float("nan")],
            "eb05": [9.4, 2.1, float("nan")],
            "zero_corrected": [False, True, False],
            "ebgm_below_eb05": [True, False, False],
            "signal_prr": [True, True, False],
            "signal_ror": [True, True, True],
            "signal_ic": [True, True, True],
            "signal_ebgm": [True, True, False],
        }
    )
    shown = compact_signals(frame)
    assert list(shown["EBGM"]) == ["8.48^", "3", "n/a"]
    assert list(shown["EB05"]) == ["9.4", "2.1", "n/a"]
    assert list(shown["PRR"]) == ["30", "8*", "3.33"]
    assert list(shown["PRIE"]) == ["PRIE", "PRIE", ".RI."]


def test_age_strata_are_the_registry_age_groups(series_con) -> None:
    signals(series_con, resolve("kratom"), min_cases=1, stratify="age")
    strata = {
        r[0] for r in series_con.execute("SELECT DISTINCT stratum FROM _sig_cases").fetchall()
    }
    assert strata <= {*AGE_GROUPS, AGE_UNKNOWN}
    assert len(strata - {AGE_UNKNOWN}) >= 3


def _sorted_pairs(pairs: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Drug-term pairs (n, e) in one order, to compare two countings of the same table."""
    n, e = (np.asarray(x, dtype=float) for x in pairs)
    order = np.lexsort((e, n))
    return np.column_stack([n[order], e[order]])


def _assert_same_counts(
    got: signals_module.Counts, want: signals_module.Counts, want_pairs: Any = None
) -> None:
    cells = ["pt_key", "stratum", "n_term", "a"]
    pd.testing.assert_frame_equal(
        got.cells[cells].sort_values("pt_key").reset_index(drop=True),
        want.cells[cells].sort_values("pt_key").reset_index(drop=True),
        check_dtype=False,
    )
    pd.testing.assert_frame_equal(got.strata, want.strata, check_dtype=False)
    assert got.exposed == want.exposed
    expected = _sorted_pairs(want_pairs if want_pairs is not None else want.pairs())
    np.testing.assert_allclose(_sorted_pairs(got.pairs()), expected, rtol=1e-12)


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_shared_sql_counts_equal_the_case_tables(series_con, roles) -> None:
    """The latest quarter's aggregates over the clean layer (queries/signals/) count what the
    temp tables of the as-of path count, drug-by-term pairs included."""
    kratom = resolve("kratom")
    signals(series_con, kratom, prior=CONVERGED)  # extraction and macros in place
    through = signals_module.resolve_through(series_con, None)[0]
    shared = signals_module._duckdb_counts(series_con, kratom, roles)
    tables = signals_module._asof_counts(series_con, kratom, through, True, roles, ())
    assert len(shared.cells) > 10 and len(shared.pairs()[0]) > 100
    _assert_same_counts(shared, tables)


def test_repeated_reaction_rows_count_once(series_db, tmp_path: Path) -> None:
    """A case's term listed again with a drug_rec_act, or only with one, is one case with the
    term, in the cells and in the drug-by-term pairs."""
    copy = tmp_path / "copy.duckdb"
    copy.write_bytes(series_db[1].read_bytes())
    kratom = resolve("kratom")
    with connect(copy) as con:
        signals(con, kratom, prior=CONVERGED)
        before = signals_module._duckdb_counts(con, kratom, None)
        pairs = before.pairs()
        exposed = sorted(before.exposed)[:20]
        others = [r[0] for r in con.execute("SELECT caseid FROM cases LIMIT 20").fetchall()]
        con.execute(
            """INSERT INTO case_reactions
            SELECT caseid, primaryid, source, pt, pt_key, 'Rechallenged ' || pt
            FROM case_reactions WHERE list_contains($ids, caseid)""",
            {"ids": exposed + others},
        )
        con.execute(
            """INSERT INTO case_reactions
            SELECT caseid, primaryid, source, pt, pt_key, 'Rechallenged twice'
            FROM case_reactions WHERE caseid = $id AND drug_rec_act IS NOT NULL""",
            {"id": exposed[0]},
        )
        con.execute(
            "DELETE FROM case_reactions WHERE caseid = $id AND drug_rec_act IS NULL",
            {"id": exposed[1]},
        )
        repeated = con.execute(
            "SELECT count(*) FROM (SELECT caseid, pt_key FROM case_reactions "
            "GROUP BY ALL HAVING count(*) > 1)"
        ).fetchone()
        assert repeated and repeated[0] > 20
        _assert_same_counts(signals_module._duckdb_counts(con, kratom, None), before, pairs)


def test_shared_sql_role_rule_is_clean_role_counts() -> None:
    """The shared SQL inlines clean's role_counts macro (Spark has no DuckDB macros): the same
    text wherever it filters roles, and the same answer for every role code and filter."""
    from surveillance.clean import _MACROS

    macro = next(m for m in _MACROS if "MACRO role_counts(" in m)
    rule = macro.split(" AS ", 1)[1]
    spelled = {}
    for path in sorted((signals_module.queries_dir() / "signals").glob("*.sql")):
        text = " ".join(path.read_text(encoding="utf-8").split())
        inline = [
            rule.replace("in_roles", "$roles").replace("role_cod", f"{alias}.role_cod")
            for alias in ("h", "g")
        ]
        spelled[path.name] = sum(text.count(r) for r in inline)
        assert text.count("$roles") == 2 * spelled[path.name], path.name
    assert {name for name, n in spelled.items() if n} == {"exposed.sql", "drugs.sql"}
    exposed = signals_module.signal_sql("exposed")
    where = exposed[exposed.index("($roles IS NULL") :]
    con = duckdb.connect()
    con.execute(macro)
    for code in ("PS", "SS", "C", "I", " ps ", None):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE probe AS SELECT $code AS role_cod", {"code": code}
        )
        for roles in (None, "PS", "PS,SS", "ss, c", "I"):
            inline = con.execute(
                f"SELECT count(*) FROM probe h WHERE {where}", {"roles": roles}
            ).fetchall()
            macro_says = con.execute(
                "SELECT count(*) FROM probe WHERE role_counts(role_cod, $roles)", {"roles": roles}
            ).fetchall()
            assert inline == macro_says, (roles, code)


def test_reaction_rows_repeat_only_by_drug_rec_act() -> None:
    """queries/signals/reactions.sql de-duplicates only the (caseid, pt_key) rows that carry a
    drug_rec_act, relying on the clean layer's case_reactions: DISTINCT over the case's one
    surviving report (caseid fixes primaryid and source), pt_terms' one spelling per pt_key, and
    drug_rec_act. Should that column list change, so must reactions.sql."""
    from surveillance.clean import REBUILD

    step = next(s for s in REBUILD if s.table == "case_reactions")
    columns = step.select.split("SELECT DISTINCT", 1)[1].split("FROM", 1)[0]
    assert [c.strip() for c in columns.split(",")] == [
        "s.caseid",
        "s.primaryid",
        "s.source",
        "t.pt",
        "t.pt_key",
        "r.drug_rec_act",
    ]
    assert "JOIN pt_terms t ON t.pt_key = upper(trim(r.pt))" in step.select
    assert "drug_rec_act IS NOT NULL" in signals_module.signal_sql("reactions")


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_sparse_pairs_equal_the_shared_sql(series_con, roles) -> None:
    """DuckDB's sparse product counts the drug-by-term table that pairs.sql (Spark's form)
    counts: the same n and e for every pair."""
    kratom = resolve("kratom")
    signals(series_con, kratom, prior=CONVERGED)
    sparse_counts = signals_module._duckdb_counts(series_con, kratom, roles)
    values = signals_module.signal_values(kratom, roles)
    series_con.execute(
        f"CREATE OR REPLACE TEMP TABLE signal_drugs AS {signals_module.signal_sql('drugs')}",
        values,
    )
    by_sql = series_con.execute(signals_module.signal_sql("pairs")).fetchnumpy()
    got = _sorted_pairs(sparse_counts.pairs())
    assert len(got) > 100
    np.testing.assert_array_equal(got, _sorted_pairs((by_sql["n"], by_sql["e"])))


def test_pair_table_counts_cases_once() -> None:
    """A drug listed twice in a case counts the case once; a case without terms adds to the
    drug's cases only; e = drug's cases * term's cases / all cases."""
    from surveillance.drug_term import pair_table

    # cases 0..3; drug 0 twice in case 0; drug 1 in cases 0, 1, 2; case 2 has no term
    n, e = pair_table(
        drug_case=np.array([0, 0, 0, 1, 2]),
        drug=np.array([0, 0, 1, 1, 1]),
        term_case=np.array([0, 0, 1, 3]),
        term=np.array([0, 1, 0, 1]),
        n_cases=4,
        n_terms=3,
    )
    got = sorted(zip(n.tolist(), e.tolist(), strict=True))
    # drug 0 (1 case) x term 0 (2 cases): n 1, e 0.5; x term 1 (2 cases): n 1, e 0.5
    # drug 1 (3 cases) x term 0: n 2 (cases 0, 1), e 1.5; x term 1: n 1 (case 0), e 1.5
    assert got == [(1.0, 0.5), (1.0, 0.5), (1.0, 1.5), (2.0, 1.5)]

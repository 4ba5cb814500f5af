"""Notoriety windows and eras (--exclude-window, --era): cases planted around a regulatory event
(the day before, the day itself, the last day inside the window, the first day after it), a
partial date and a year-only one, on substance and background cases; a, b, c, d checked against
set arithmetic over the clean layer with the window computed here from the events file; the two
eras add up to the main run; as of an earlier quarter the initial receipt known then decides."""

from __future__ import annotations

import calendar
import csv
from collections.abc import Iterator
from datetime import date
from importlib import resources
from typing import Any

import duckdb
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.definitions import YEAR_BOUNDS
from surveillance.design import make_design
from surveillance.errors import UsageError
from surveillance.extract import resolve
from surveillance.notoriety import ERAS, exclusion
from surveillance.pipeline import load, rebuild
from surveillance.signals import background_statement, signals
from surveillance.stats import Prior
from surveillance.stratified import signal_mh
from surveillance.synthetic import generate_series

MONTHS = 6
EVENT = "20140228"  # the 2014 import alert in data/regulatory_events.csv
# init_fda_dt planted on substance cases and on background cases, and whether each is inside
BOUNDARY = [("20140227", False), (EVENT, True), ("20140827", True), ("20140828", False)]
PARTIAL = [("201408", True), ("2014", False)]  # from its first day; year only: the quarter's
# A given prior is used as it is: the tests count cells, and no run waits for a fit.
PRIOR = Prior(0.2, 0.1, 2.0, 4.0, 0.3, 0.0, True, 0, 0, "fixed for the test", 0.0)


def _events(substance: str) -> list[date]:
    """The substance's event days, read here from the shipped file."""
    text = (resources.files("surveillance") / "data" / "regulatory_events.csv").read_text("utf-8")
    rows = csv.DictReader(text.splitlines())
    return [date.fromisoformat(r["date"]) for r in rows if substance in r["substance"].split(";")]


def _plus_months(day: date, months: int) -> date:
    month = day.month - 1 + months
    year, month = day.year + month // 12, month % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _exposed(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT caseid FROM involved_cases('kratom', NULL)").fetchall()
    return {r[0] for r in rows}


def _initial_day(iso: str | None, precision: str | None, quarter: str) -> date:
    """NEW_CASE's initial receipt as a day: a partial date from its first day; the quarter's
    first day when the quarter of the first version stands in."""
    first_of_quarter = date(int(quarter[:4]), int(quarter[-1]) * 3 - 2, 1)
    if iso is None or precision not in ("day", "month"):
        return first_of_quarter
    day = date.fromisoformat(iso if precision == "day" else iso + "-01")
    return day if f"{day.year}Q{(day.month + 2) // 3}" == quarter else first_of_quarter


def _inside(day: date) -> bool:
    return any(e <= day < _plus_months(e, MONTHS) for e in _events("kratom"))


def _set_initial(
    con: duckdb.DuckDBPyConnection, caseid: str, value: str, quarter: str = ""
) -> None:
    con.execute(
        "UPDATE raw_demo SET init_fda_dt = $v WHERE caseid = $c AND ($q = '' OR quarter = $q)",
        {"v": value, "c": caseid, "q": quarter},
    )


@pytest.fixture(scope="module")
def window_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two generated quarters with initial receipts planted around the 2014 event."""
    tmp = tmp_path_factory.mktemp("notoriety")
    generate_series(["2024Q1", "2024Q2"], tmp / "zips", n_cases=90, seed=11)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        exposed = _exposed(con)
        both = {
            r[0]
            for r in con.execute(
                "SELECT caseid FROM raw_demo GROUP BY caseid HAVING count(DISTINCT quarter) = 2"
            ).fetchall()
        }
        cases = sorted(r[0] for r in con.execute("SELECT caseid FROM cases").fetchall())
        # A case with versions in both quarters: outside the window as of 2024Q1, inside once
        # its 2024Q2 version reports an earlier initial receipt.
        followed = sorted(both - exposed)[0]
        _set_initial(con, followed, "20200105", "2024Q1")
        _set_initial(con, followed, "20140301", "2024Q2")
        substance = sorted(set(exposed) - {followed})
        background = sorted(set(cases) - exposed - {followed})
        planted: dict[str, bool] = {}
        for caseids, dates in ((substance, BOUNDARY), (background, BOUNDARY + PARTIAL)):
            for caseid, (value, inside) in zip(caseids, dates, strict=False):
                _set_initial(con, caseid, value)
                planted[caseid] = inside
        rebuild(con)
    yield {"db": db, "planted": planted, "followed": followed}


@pytest.fixture
def con(window_db: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(window_db["db"]) as c:
        yield c


def _truth(con: duckdb.DuckDBPyConnection, kept: set[str]) -> dict[str, tuple[int, ...]]:
    """a, b, c, d of every PT with a >= 1 over the kept cases (any role)."""
    exposed = _exposed(con) & kept
    terms: dict[str, set[str]] = {}
    rows = con.execute("SELECT r.caseid, t.pt FROM case_reactions r JOIN pt_terms t USING (pt_key)")
    for caseid, pt in rows.fetchall():
        if caseid in kept:
            terms.setdefault(pt, set()).add(caseid)
    tables = {}
    for pt, having in terms.items():
        a, c = len(having & exposed), len(having - exposed)
        if a:
            tables[pt] = (a, len(exposed) - a, c, len(kept) - len(exposed) - c)
    return tables


def _initial_days(con: duckdb.DuckDBPyConnection) -> dict[str, date]:
    rows = con.execute(
        "SELECT caseid, initial_receipt_date, initial_receipt_precision, initial_quarter FROM cases"
    ).fetchall()
    return {caseid: _initial_day(iso, p, q) for caseid, iso, p, q in rows}


def _cells(run: Any) -> dict[str, tuple[int, ...]]:
    return {r.term: (r.a, r.b, r.c, r.d) for r in run.table.itertuples()}


def test_window_boundaries_and_cells(con, window_db) -> None:
    days = _initial_days(con)
    for caseid, inside in window_db["planted"].items():
        assert _inside(days[caseid]) == inside, caseid  # the planted days are what they claim
    kept = {c for c, day in days.items() if not _inside(day)}
    main = signals(con, resolve("kratom"), min_cases=1, prior=PRIOR)
    run = signals(con, resolve("kratom"), min_cases=1, prior=PRIOR, exclude_window=MONTHS)
    assert _cells(run) == _truth(con, kept)
    assert run.n_cases == len(kept)
    assert window_db["followed"] not in kept
    for caseid, inside in window_db["planted"].items():
        if caseid in main.exposed:
            assert (caseid in run.exposed) != inside
    stored = con.execute(
        "SELECT exclude_window, era, remove_maskers FROM signal_runs WHERE run_id = $r",
        {"r": run.run_id},
    ).fetchone()
    assert stored == (MONTHS, None, None)


def test_design_identity() -> None:
    window = make_design(exclusion=exclusion("kratom", MONTHS))
    era = make_design(exclusion=exclusion("kratom", era=ERAS[1]))
    assert not window.is_default and not era.is_default
    # The prior is fitted without the excluded cases, so it is another prior.
    assert window.prior_key() != era.prior_key() != [] != window.prior_key()
    assert window.prior_key()[0] == "exclusion" and window.key() != era.key()


def test_eras_add_up_to_the_main_run(con) -> None:
    kratom = resolve("kratom")
    main = signals(con, kratom, min_cases=1, prior=PRIOR)
    runs = [signals(con, kratom, min_cases=1, prior=PRIOR, era=era) for era in ERAS]
    assert ERAS == (f"before-{YEAR_BOUNDS[1]}", f"{YEAR_BOUNDS[1]}-on")
    assert sum(r.n_cases for r in runs) == main.n_cases
    assert runs[0].exposed.isdisjoint(runs[1].exposed)
    assert runs[0].exposed | runs[1].exposed == main.exposed
    a = {t: sum(_cells(r).get(t, (0,))[0] for r in runs) for t in _cells(main)}
    assert a == {t: cells[0] for t, cells in _cells(main).items()}
    days = _initial_days(con)
    before = {c for c, day in days.items() if day.year < YEAR_BOUNDS[1]}
    assert _cells(runs[0]) == _truth(con, before)


def test_window_as_of_an_earlier_quarter(con, window_db) -> None:
    kratom = resolve("kratom")
    asof = signals(con, kratom, "2024Q1", min_cases=1, prior=PRIOR, exclude_window=MONTHS)
    rows = con.execute(
        """SELECT i.caseid, i.initial_receipt_date, i.initial_receipt_precision, i.initial_quarter
        FROM initial_receipts('2024Q1') i
        WHERE caseid IN (SELECT caseid FROM surviving_reports('2024Q1'))"""
    ).fetchall()
    kept = [c for c, iso, p, q in rows if not _inside(_initial_day(iso, p, q))]
    assert window_db["followed"] in kept  # its initial receipt as of 2024Q1: 2020
    assert asof.n_cases == len(kept) < len(rows)


def test_bad_options(con, tmp_path) -> None:
    with pytest.raises(UsageError, match="no regulatory events for nothing-known"):
        exclusion("nothing-known", MONTHS)
    with pytest.raises(UsageError, match="at least 1 month"):
        exclusion("kratom", 0)
    with pytest.raises(UsageError, match="--era: one of before-2018, 2018-on"):
        signals(con, resolve("kratom"), era="1990s", prior=PRIOR)
    assert exclusion("nothing-known", era=ERAS[0]) is not None  # an era needs no events
    other = make_design(exclusion=exclusion("7-oh", MONTHS))
    with pytest.raises(UsageError, match="made for 7-oh's events, not kratom's"):
        signals(con, resolve("kratom"), design=other, prior=PRIOR)


def test_statement_and_refusals(con, window_db, tmp_path) -> None:
    design = make_design(exclusion=exclusion("kratom", MONTHS, ERAS[0]))
    assert background_statement(design) == (
        "Background (c, d): all cases without the substance. Excluded: cases initially "
        "received within 6 months on or after one of the 7 kratom regulatory events; cases "
        "initially received from 2018 on."
    )
    run = signals(con, resolve("kratom"), min_cases=1, prior=PRIOR, design=design)
    with pytest.raises(UsageError, match=r"--mh-by counts single PTs .* --exclude-window, --era"):
        signal_mh(con, run, resolve("kratom"), "sex")
    runner = CliRunner()
    args = ["signals", "--db", str(window_db["db"]), "--min-cases", "1"]
    term_file = tmp_path / "zz.toml"
    term_file.write_text(
        '[substance]\nname = "zz-no-events"\nversion = "1"\ndescription = "x"\n'
        '[rules]\ntokens = ["zzdrug"]\n',
        encoding="utf-8",
    )
    none = runner.invoke(cli, [*args, "--substance-file", str(term_file), "--exclude-window", "6"])
    assert none.exit_code == 2
    assert none.stderr.strip().endswith(
        "--exclude-window: no regulatory events for zz-no-events in the shipped events file "
        "(data/regulatory_events.csv)"
    )
    spark = runner.invoke(cli, [*args, "--era", ERAS[1], "--engine", "spark", "--parquet", "."])
    assert spark.exit_code == 2
    assert "--exclude-window, --era and --remove-maskers are not supported" in spark.stderr
    helped = " ".join(runner.invoke(cli, ["signals", "--help"]).stdout.split())
    assert f"one era: {ERAS[0]} or {ERAS[1]}." in helped  # the help's text matches ERAS


@pytest.mark.slow
def test_cli_states_the_exclusion(window_db) -> None:
    runner = CliRunner()
    args = ["signals", "--db", str(window_db["db"]), "--min-cases", "1", "--era", ERAS[0]]
    stated = f"Excluded: cases initially received from {YEAR_BOUNDS[1]} on."
    table = runner.invoke(cli, [*args, "--format", "table"])
    assert table.exit_code == 0, table.output
    assert stated in " ".join(table.stdout.split())
    csv_out = runner.invoke(cli, [*args, "--format", "csv"])
    assert csv_out.exit_code == 0 and csv_out.stderr.splitlines()[-1].endswith(" " + stated)
    assert csv_out.stderr.splitlines()[-1].startswith("Background (c, d): all cases without")
    assert csv_out.stdout.splitlines()[0].endswith(",background")

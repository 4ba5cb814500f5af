"""The one-pass cumulative counts equal a `signals(through=q)` run for every loaded quarter and
every term, on the shared multi-era series (follow-ups, deleted cases, LAERS -> FAERS)."""

from __future__ import annotations

import dataclasses
import itertools

import duckdb
import pandas as pd
import pytest

from surveillance.asof import AsOfCounts, _counted, asof_counts, asof_signal_tables
from surveillance.errors import NoDataError
from surveillance.extract import resolve
from surveillance.sequential import event_groups
from surveillance.signals import OUTPUT_COLUMNS, SignalRun, signals


def _by_term(table: pd.DataFrame) -> pd.DataFrame:
    return table.sort_values("term", kind="mergesort").reset_index(drop=True)[OUTPUT_COLUMNS]


def _quarters(con: duckdb.DuckDBPyConnection) -> list[str]:
    return [r[0] for r in con.execute("SELECT quarter FROM quarters ORDER BY quarter").fetchall()]


@pytest.mark.parametrize("roles", [None, pytest.param("PS,SS", marks=pytest.mark.slow)])
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


def test_event_group_rows_leave_the_pt_rows_as_they_are(series_con) -> None:
    kratom = resolve("kratom")
    alone = asof_counts(series_con, kratom, None)
    both = asof_counts(series_con, kratom, None, groups=event_groups())
    assert set(both.terms) - set(alone.terms) and both.groups == set(event_groups())
    pts = both.pts()
    assert (pts.terms, pts.quarters) == (alone.terms, alone.quarters)
    for field in ("n_cases", "n_exposed", "n_term", "a"):
        assert (getattr(pts, field) == getattr(alone, field)).all(), field


def _same(found: AsOfCounts, want: AsOfCounts) -> None:
    assert (found.terms, found.quarters, found.groups) == (want.terms, want.quarters, want.groups)
    for field in ("n_cases", "n_exposed", "n_term", "a"):
        assert (getattr(found, field) == getattr(want, field)).all(), field


def _spy(monkeypatch) -> list[int]:  # type: ignore[no-untyped-def]
    """Each computation of the stored counts: how many earlier quarters it started from."""
    from surveillance import asof

    starts: list[int] = []
    counted = asof._counted

    def counting(*args, since=None, **kwargs):  # type: ignore[no-untyped-def]
        starts.append(0 if since is None else len(since.quarters))
        return counted(*args, since=since, **kwargs)

    monkeypatch.setattr(asof, "_counted", counting)
    return starts


def test_stored_counts_are_reused_only_with_their_data(series_con, monkeypatch) -> None:
    from surveillance import asof

    kratom = resolve("kratom")
    fresh = asof_counts(series_con, kratom, None, groups=event_groups())
    computed = _spy(monkeypatch)
    series_con.execute("DROP TABLE IF EXISTS asof_runs")
    for expected in ([0], [0]):  # computed and stored, then read back
        _same(asof.stored_asof_counts(series_con, kratom, None), fresh)
        assert computed == expected
    series_con.execute("UPDATE asof_runs SET quarter_fingerprints = ['older data']")
    asof.stored_asof_counts(series_con, kratom, None)
    assert computed == [0, 0]  # other data from the first quarter: counted again, never reused
    asof.stored_asof_counts(series_con, kratom, "PS,SS")
    assert computed == [0, 0, 0]  # other roles: their own counts
    edited = dataclasses.replace(kratom, patterns=(*kratom.patterns, "zz edited"))
    asof.stored_asof_counts(series_con, edited, None)
    assert computed == [0, 0, 0, 0]  # the same name and version with another rule: again


def test_counts_continued_from_earlier_quarters_equal_counts_from_scratch(series_con) -> None:
    """A new vintage counts only the cases touched after its stored quarters: the same numbers,
    for every term (co-reported or not), from every quarter the stored counts could end at."""
    from surveillance.asof import _counted

    kratom = resolve("kratom")
    groups = event_groups()
    full = _counted(series_con, kratom, None, groups)
    assert set(full.terms) > set(full.reported().terms)  # terms with a = 0 are kept too
    for m in range(1, len(full.quarters)):
        _same(_counted(series_con, kratom, None, groups, since=full.head(m)), full)


def test_a_new_vintage_counts_from_its_unchanged_quarters(series_con, monkeypatch) -> None:
    """Stored counts of the first quarters (as an earlier vintage left them) are continued; a
    quarter loaded again with other bytes makes the counts start before it."""
    from surveillance import asof

    kratom = resolve("kratom")
    series_con.execute("DROP TABLE IF EXISTS asof_runs")
    series_con.execute("DROP TABLE IF EXISTS asof_terms")
    fresh = asof.stored_asof_counts(series_con, kratom, None)
    n = len(fresh.quarters)
    m = n - 3
    series_con.execute(
        """UPDATE asof_runs SET quarters = quarters[1:$m], n_cases = n_cases[1:$m],
        n_exposed = n_exposed[1:$m], quarter_fingerprints = quarter_fingerprints[1:$m]""",
        {"m": m},
    )
    series_con.execute("UPDATE asof_terms SET n_term = n_term[1:$m], a = a[1:$m]", {"m": m})
    computed = _spy(monkeypatch)
    _same(asof.stored_asof_counts(series_con, kratom, None), fresh)
    assert computed == [m]
    stored = series_con.execute("SELECT len(quarters), len(quarter_fingerprints) FROM asof_runs")
    assert stored.fetchall() == [(n, n)]
    series_con.execute(  # the fifth quarter loaded again with other bytes
        """UPDATE asof_runs SET quarter_fingerprints =
        list_concat(quarter_fingerprints[1:4], ['other'], quarter_fingerprints[6:])"""
    )
    _same(asof.stored_asof_counts(series_con, kratom, None), fresh)
    assert computed == [m, 4]


def _versions(con: duckdb.DuckDBPyConnection, quarter: str, roles: str | None) -> pd.DataFrame:
    """Each as-of case's surviving version and whether it names kratom (signals' own rule)."""
    run = signals(con, resolve("kratom"), through=quarter, roles=roles, min_cases=1)
    frame = con.execute("SELECT caseid, source, primaryid, quarter FROM _sig_cases").fetchdf()
    return frame.assign(exposed=frame["caseid"].isin(run.exposed))


@pytest.mark.slow
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
        substance=counts.substance,
        roles=counts.roles,
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


_HAND_MADE = (
    "CREATE TABLE quarters (quarter VARCHAR)",
    "INSERT INTO quarters VALUES ('2012Q3'), ('2012Q4'), ('2013Q1'), ('2013Q2')",
    """CREATE TABLE raw_demo (source VARCHAR, quarter VARCHAR, source_line BIGINT,
        caseid VARCHAR, primaryid VARCHAR, caseversion VARCHAR, fda_dt VARCHAR)""",
    # 1: LAERS then FAERS, deleted in 2013Q2. 2: its primaryid republished under caseid 3.
    # 5: version 2 republished without a caseversion, so version 1 is current again. 6: two
    # lines in one quarter, the last counts (the first names case 5); republished with no caseid
    # (ignored). 7: exposed by prod_ai only, with a blank and a missing term.
    """INSERT INTO raw_demo VALUES
        ('LAERS', '2012Q3', 2, '1', '11', NULL, '20120701'),
        ('FAERS', '2012Q4', 2, '1', '12', '1', '20121001'),
        ('FAERS', '2012Q3', 3, '2', '21', '1', '20120702'),
        ('FAERS', '2013Q1', 2, '3', '21', '1', '20130101'),
        ('FAERS', '2012Q3', 4, '5', '51', '1', '20120801'),
        ('FAERS', '2012Q4', 3, '5', '52', '2', '20121101'),
        ('FAERS', '2013Q1', 3, '5', '52', NULL, '20121101'),
        ('FAERS', '2012Q4', 4, '5', '61', '1', '20121102'),
        ('FAERS', '2012Q4', 5, '6', '61', '3', '20121103'),
        ('FAERS', '2013Q2', 2, NULL, '61', '4', '20130401'),
        ('FAERS', '2012Q4', 6, '7', '71', '1', '20121104')""",
    "CREATE TABLE raw_deleted (quarter VARCHAR, caseid VARCHAR)",
    "INSERT INTO raw_deleted VALUES ('2013Q2', '1'), ('2013Q2', '99')",
    """CREATE TABLE raw_drug (source VARCHAR, quarter VARCHAR, primaryid VARCHAR,
        drugname VARCHAR, prod_ai VARCHAR, role_cod VARCHAR)""",
    """INSERT INTO raw_drug VALUES
        ('LAERS', '2012Q3', '11', 'KRATOM', NULL, 'PS'),
        ('FAERS', '2012Q4', '12', 'ASPIRIN', NULL, 'PS'),
        ('FAERS', '2012Q3', '21', 'KRATOM', NULL, 'PS'),
        ('FAERS', '2013Q1', '21', 'KRATOM', NULL, 'PS'),
        ('FAERS', '2012Q3', '51', 'KRATOM', NULL, 'C'),
        ('FAERS', '2012Q4', '52', 'ASPIRIN', NULL, 'PS'),
        ('FAERS', '2013Q1', '52', 'ASPIRIN', NULL, 'PS'),
        ('FAERS', '2012Q4', '61', 'ASPIRIN', NULL, 'PS'),
        ('FAERS', '2012Q4', '71', 'HERBAL', 'MITRAGYNINE', 'SS')""",
    "CREATE TABLE raw_reac (source VARCHAR, quarter VARCHAR, primaryid VARCHAR, pt VARCHAR)",
    # Version 21 of 2012Q3 lists Seizure twice (two spellings): its case counts once.
    """INSERT INTO raw_reac VALUES
        ('LAERS', '2012Q3', '11', 'NAUSEA'), ('FAERS', '2012Q4', '12', 'Seizure'),
        ('FAERS', '2012Q3', '21', 'Seizure'), ('FAERS', '2012Q3', '21', 'SEIZURE '),
        ('FAERS', '2013Q1', '21', 'Vomiting'),
        ('FAERS', '2012Q3', '51', 'Nausea'), ('FAERS', '2012Q4', '52', '  nausea '),
        ('FAERS', '2013Q1', '52', 'Headache'), ('FAERS', '2012Q4', '61', 'Nausea'),
        ('FAERS', '2012Q4', '71', 'Seizure'), ('FAERS', '2012Q4', '71', ' '),
        ('FAERS', '2012Q4', '71', NULL)""",
    "CREATE TABLE substance_strings (substance VARCHAR, field VARCHAR, string VARCHAR)",
    """INSERT INTO substance_strings VALUES
        ('kratom', 'drugname', 'KRATOM'), ('kratom', 'prod_ai', 'MITRAGYNINE')""",
)
# signals' as-of rule, per quarter: its cases, exposure and terms (an independent oracle).
_REFERENCE = """WITH c AS (SELECT * FROM surviving_reports($q)),
exposed AS (
    SELECT DISTINCT c.caseid FROM c JOIN raw_drug g USING (source, primaryid, quarter)
    WHERE (g.drugname IN (SELECT string FROM substance_strings WHERE field = 'drugname')
           OR g.prod_ai IN (SELECT string FROM substance_strings WHERE field = 'prod_ai'))
      AND role_counts(g.role_cod, $roles)),
reac AS (
    SELECT DISTINCT c.caseid, upper(trim(r.pt)) AS pt_key
    FROM c JOIN raw_reac r USING (source, primaryid, quarter) WHERE trim(r.pt) <> '')
SELECT pt_key, count(e.caseid) AS a, count(*) AS n_term
FROM reac LEFT JOIN exposed e USING (caseid) GROUP BY pt_key HAVING a >= 1 ORDER BY pt_key"""


@pytest.mark.parametrize(("roles", "n_exposed"), [(None, [3, 2, 3, 3]), ("PS,SS", [2, 2, 2, 2])])
def test_hand_made_versions_republished_ids_and_deletions(
    roles: str | None, n_exposed: list[int]
) -> None:
    """Case 2 leaves when its primaryid is republished under case 3; case 5's version 1 is
    current again once version 2 is republished without a caseversion; case 1 is deleted."""
    con = duckdb.connect()
    for statement in _HAND_MADE:
        con.execute(statement)
    counts = asof_counts(con, resolve("kratom"), roles)
    full = _counted(con, resolve("kratom"), roles, None)
    for m in (1, 2, 3):  # case 2 is touched by its primaryid republished under case 3
        _same(_counted(con, resolve("kratom"), roles, None, since=full.head(m)), full)
    assert counts.n_cases.tolist() == [3, 5, 5, 4]
    assert counts.n_exposed.tolist() == n_exposed
    for index, quarter in enumerate(counts.quarters):
        want = con.execute(_REFERENCE, {"q": quarter, "roles": roles}).fetchall()
        terms, a, _, c, _ = counts.cells(index)
        assert list(zip(terms, a.tolist(), (a + c).tolist(), strict=True)) == want


@pytest.mark.slow
def test_the_scheduler_s_new_quarter_counts_only_what_it_touched(
    series_db, tmp_path, monkeypatch
) -> None:
    """The series loaded without its latest quarter, the as-of counts stored, then the latest
    quarter loaded as the scheduler does: the counts continue the stored quarters and equal a
    count from scratch."""
    from surveillance import asof
    from surveillance.db import connect
    from surveillance.pipeline import load

    zips = sorted((series_db[1].parent / "zips").glob("*.zip"))
    kratom = resolve("kratom")
    with connect(tmp_path / "db.duckdb") as con:
        load(con, zips[:-1])
        before = asof.stored_asof_counts(con, kratom, None)
        computed = _spy(monkeypatch)
        load(con, zips[-1:])
        after = asof.stored_asof_counts(con, kratom, None)
        assert computed == [len(zips) - 1] and len(after.quarters) == len(zips)
        _same(after, asof.asof_counts(con, kratom, None, groups=event_groups()))
        _same(after.head(len(before.quarters)).reported(), before)  # the earlier ones stand

"""Masking (--remove-maskers K): a drug planted on a term's background cases masks it; its
masking ratio (Maignen 2014) computed here from the formula over the clean layer's cases, the
maskers of every term chosen here by that ratio, and c and d after removing their cases checked
exactly, crude and in strata; a term without a masker keeps its cells; K = 0 is the main run."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pytest

from surveillance.db import connect
from surveillance.design import make_design
from surveillance.errors import UsageError
from surveillance.extract import resolve
from surveillance.masking import masking_ratio, removals
from surveillance.pipeline import load, rebuild
from surveillance.signals import (
    OUTPUT_COLUMNS,
    _asof_counts,
    background_statement,
    masking_drug_rows,
    signals,
)
from surveillance.stats import Prior
from surveillance.synthetic import generate_series

MASKER = "ZZMASKER"
PLANTED = 8
# A given prior is used as it is: the tests count cells, and no run waits for a fit.
PRIOR = Prior(0.2, 0.1, 2.0, 4.0, 0.3, 0.0, True, 0, 0, "fixed for the test", 0.0)


def _exposed(con: duckdb.DuckDBPyConnection) -> set[str]:
    rows = con.execute("SELECT caseid FROM involved_cases('kratom', NULL)").fetchall()
    return {r[0] for r in rows}


def _terms(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    terms: dict[str, set[str]] = {}
    rows = con.execute("SELECT r.caseid, t.pt FROM case_reactions r JOIN pt_terms t USING (pt_key)")
    for caseid, pt in rows.fetchall():
        terms.setdefault(pt, set()).add(caseid)
    return terms


def _drugs(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Each ingredient's cases, as the prior's drug table names them (prod_ai, else drugname,
    upper-cased and trimmed)."""
    drugs: dict[str, set[str]] = {}
    rows = con.execute("SELECT caseid, drugname, prod_ai FROM case_drugs").fetchall()
    for caseid, drugname, prod_ai in rows:
        name = prod_ai if prod_ai is not None else drugname
        if name is not None:
            drugs.setdefault(name.strip().upper(), set()).add(caseid)
    return drugs


def _plant(con: duckdb.DuckDBPyConnection, caseid: str, table: str, values: str) -> None:
    """One more drug or reaction row on a case's latest version (a rebuild makes it count)."""
    insert = {
        "raw_drug": """INSERT INTO raw_drug (source, quarter, source_file, source_line,
            primaryid, caseid, drug_seq, role_cod, drugname, prod_ai)
            SELECT source, quarter, 'planted', 0, primaryid, caseid, '997', 'C', $v, NULL
            FROM cases WHERE caseid = $c""",
        "raw_reac": """INSERT INTO raw_reac (source, quarter, source_file, source_line,
            primaryid, caseid, pt)
            SELECT source, quarter, 'planted', 0, primaryid, caseid, $v
            FROM cases WHERE caseid = $c""",
    }
    con.execute(insert[table], {"c": caseid, "v": values})


@pytest.fixture(scope="module")
def masking_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One generated quarter; one of the substance's terms planted on PLANTED more background
    cases, MASKER (as the lower-case drug name 'zzmasker ') on all of them and on two background
    cases without the term, and once more (as 'ZZMASKER') on the first of them."""
    tmp = tmp_path_factory.mktemp("masking")
    generate_series(["2024Q1"], tmp / "zips", n_cases=120, seed=23)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        exposed = _exposed(con)
        terms = _terms(con)
        target = sorted(t for t, cases in terms.items() if cases & exposed and cases - exposed)[0]
        cases = {r[0] for r in con.execute("SELECT caseid FROM cases").fetchall()}
        free = sorted(cases - exposed - terms[target])
        for caseid in free[:PLANTED]:
            _plant(con, caseid, "raw_reac", target)
        for caseid in free[: PLANTED + 2]:
            _plant(con, caseid, "raw_drug", MASKER.lower() + " ")
        # Listed again under another spelling of the same ingredient: still one case of it.
        _plant(con, free[0], "raw_drug", MASKER)
        rebuild(con)
    yield {"db": db, "target": target, "c_m": PLANTED, "n_m": PLANTED + 2}


@pytest.fixture
def con(masking_db: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(masking_db["db"]) as c:
        yield c


def _expected(con: duckdb.DuckDBPyConnection, k: int) -> dict[str, tuple[Any, ...]]:
    """a, b, c, d and maskers of every PT with a >= 1 after removing its top-k maskers, by
    the formula over sets of cases."""
    exposed = _exposed(con)
    cases = {r[0] for r in con.execute("SELECT caseid FROM cases").fetchall()}
    background = cases - exposed
    drugs = {d: cs & background for d, cs in _drugs(con).items()}
    found = {}
    for pt, having in _terms(con).items():
        a = len(having & exposed)
        if not a:
            continue
        c = len(having & background)
        d = len(background) - c
        ratios = {
            drug: float(masking_ratio(c, d, len(cs & having), len(cs)))
            for drug, cs in drugs.items()
            if cs & having
        }
        ranked = sorted((-r, drug) for drug, r in ratios.items() if r > 1)
        maskers = [drug for _, drug in ranked[:k]]
        removed = set().union(*(drugs[m] for m in maskers))
        c_removed = len(removed & having)
        found[pt] = (
            a,
            len(exposed) - a,
            c - c_removed,
            d - len(removed) + c_removed,
            "; ".join(maskers),
        )
    return found


def _got(run: Any) -> dict[str, tuple[Any, ...]]:
    return {r.term: (r.a, r.b, r.c, r.d, r.maskers) for r in run.table.itertuples()}


def test_masking_ratio_formula() -> None:
    # MR = [c / (c + d)] / [(c - c_M) / (c + d - n_M)] = (10 / 100) / (2 / 80) = 4
    assert masking_ratio(10, 90, 8, 20) == pytest.approx(4.0)
    assert masking_ratio(5, 95, 5, 9) == float("inf")  # every background case with E has M
    assert masking_ratio(10, 90, 1, 10) == pytest.approx(1.0)  # M reports E at the base rate


def test_removals_by_hand() -> None:
    """Two terms masked by two different drugs, a case of each drug with the other's term, an
    exposed case with a masker, two strata; every number below worked out by hand."""
    con = duckdb.connect()
    cases = {"c1": "F", "c2": "F", "c3": "F", "c4": "F", "c5": "F"}
    cases |= {"c6": "M", "c7": "M", "c8": "M", "c9": "M"}
    events = {"c1": "TU", "c2": "T", "c3": "T", "c4": "U", "c5": "U", "c6": "TU", "c9": "T"}
    # c2 lists A twice: a case counts once per drug.
    drugs = {"c1": ["[kratom]", "A"], "c2": ["A", "A"], "c3": ["A"], "c4": ["B"], "c5": ["B"]}
    drugs |= {"c6": ["A", "B"], "c7": ["A"], "c8": ["B"], "c9": ["B"]}
    con.execute(
        "CREATE TEMP TABLE _sig_cases (caseid VARCHAR, source VARCHAR, primaryid VARCHAR, "
        "quarter VARCHAR, stratum VARCHAR)"
    )
    con.executemany("INSERT INTO _sig_cases VALUES (?, NULL, NULL, NULL, ?)", list(cases.items()))
    con.execute("CREATE TEMP TABLE _sig_exposed AS SELECT 'c1' AS caseid")
    con.execute("CREATE TEMP TABLE _sig_events (caseid VARCHAR, stratum VARCHAR, pt_key VARCHAR)")
    rows = [(c, cases[c], t) for c, ts in events.items() for t in ts]
    con.executemany("INSERT INTO _sig_events VALUES (?, ?, ?)", rows)
    con.execute("CREATE TEMP TABLE drug_list (caseid VARCHAR, drug VARCHAR)")
    con.executemany(
        "INSERT INTO drug_list VALUES (?, ?)", [(c, g) for c, gs in drugs.items() for g in gs]
    )

    def drug_rows() -> None:
        con.execute(
            "CREATE TEMP TABLE _mask_drug_ids AS SELECT drug, CAST(row_number() OVER "
            "(ORDER BY drug) - 1 AS INTEGER) AS drug_id FROM (SELECT DISTINCT drug FROM "
            "drug_list WHERE drug <> '[kratom]')"
        )
        con.execute(
            "CREATE TEMP TABLE _mask_drugs AS SELECT DISTINCT m.ci, i.drug_id FROM drug_list d "
            "JOIN _mask_cases m USING (caseid) JOIN _mask_drug_ids i USING (drug)"
        )

    # Background c2..c9 (N = 8). T: c = 4 (c2, c3, c6, c9); A has 3 of them in its 4 cases:
    # MR = (4/8) / (1/4) = 2; B has 2 in 5: (4/8) / (2/3) = 0.75, no masker. U: c = 3 (c4, c5,
    # c6), all B's: MR infinite; A has 1 in 4: (3/8) / (2/4) = 0.75.
    for k in (1, 2):
        removed, maskers = removals(con, k, drug_rows)
        assert maskers == {"T": "A", "U": "B"}
        got = {(r.pt_key, r.stratum): (r.c_removed, r.d_removed) for r in removed.itertuples()}
        # T loses A's background cases c2, c3 (F), c6 with T and c7 without (M); U loses B's
        # c4, c5 (F), c6 with U and c8, c9 without (M). c9 (B, with T) stays in T's c.
        assert got == {
            ("T", "F"): (2, 0),
            ("T", "M"): (1, 1),
            ("U", "F"): (2, 0),
            ("U", "M"): (1, 2),
        }


def test_planted_masker_removed(con, masking_db) -> None:
    target = masking_db["target"]
    run = signals(con, resolve("kratom"), min_cases=1, prior=PRIOR, remove_maskers=1)
    main = signals(con, resolve("kratom"), min_cases=1, prior=PRIOR)
    before = main.table.set_index("term").loc[target]
    c, d, c_m, n_m = int(before.c), int(before.d), masking_db["c_m"], masking_db["n_m"]
    assert c > c_m  # the term's other background cases keep c above 0
    ratio = (c / (c + d)) / ((c - c_m) / (c + d - n_m))
    assert ratio > 1
    row = run.table.set_index("term").loc[target]
    assert row.maskers == MASKER
    assert (row.a, row.b, row.c, row.d) == (before.a, before.b, c - c_m, d - (n_m - c_m))
    assert _got(run) == _expected(con, 1)
    unmasked = [t for t, cells in _expected(con, 1).items() if not cells[4]]
    assert unmasked  # a term without a drug of ratio above 1 keeps its cells
    for term in unmasked:
        assert (
            run.table.set_index("term").loc[term, "c"]
            == main.table.set_index("term").loc[term, "c"]
        )
    others = [t for t, cells in _expected(con, 1).items() if cells[4] and MASKER not in cells[4]]
    assert others  # terms masked by other drugs, which the planted one does not touch
    stored = con.execute(
        "SELECT remove_maskers FROM signal_runs WHERE run_id = $r", {"r": run.run_id}
    ).fetchone()
    assert stored == (1,)
    maskers = con.execute(
        "SELECT maskers FROM signals WHERE run_id = $r AND term = $t",
        {"r": run.run_id, "t": target},
    ).fetchone()
    assert maskers == (MASKER,)


def test_two_maskers_and_strata(con) -> None:
    kratom = resolve("kratom")
    run = signals(con, kratom, min_cases=1, prior=PRIOR, remove_maskers=2)
    assert _got(run) == _expected(con, 2)
    stratified = signals(con, kratom, min_cases=1, prior=PRIOR, remove_maskers=2, stratify="sex")
    assert _got(stratified) == _got(run)
    # Per stratum (the run's temp tables are still there): each sex loses its own cases.
    removed, _ = removals(con, 2, lambda: masking_drug_rows(con, kratom, True, None))
    sex = dict(con.execute("SELECT caseid, sex FROM cases").fetchall())
    names = dict(con.execute("SELECT pt_key, pt FROM pt_terms").fetchall())
    drugs, terms, exposed = _drugs(con), _terms(con), _exposed(con)
    want = {}
    for pt, (*_, maskers) in _expected(con, 2).items():
        for caseid in set().union(*(drugs[m] for m in maskers.split("; ") if m)) - exposed:
            key = (pt, sex[caseid])
            c_removed, d_removed = want.get(key, (0, 0))
            want[key] = (c_removed + (caseid in terms[pt]), d_removed + (caseid not in terms[pt]))
    got = {(names[r.pt_key], r.stratum): (r.c_removed, r.d_removed) for r in removed.itertuples()}
    assert got == want and len({s for _, s in got}) > 1


def test_the_raw_layer_masks_as_the_clean_layer(con) -> None:
    """As of a quarter the drugs come from raw_drug by each case's version then: with one quarter
    loaded those are the clean layer's rows, so the removals and maskers are the same."""
    kratom = resolve("kratom")
    design = make_design(masking=2)
    found = [
        _asof_counts(con, kratom, "2024Q1", latest, None, ("sex",), design)
        for latest in (True, False)
    ]
    clean, raw = (
        (f.removed.sort_values(["pt_key", "stratum"]).reset_index(drop=True), f.maskers)
        for f in found
    )
    assert not clean[0].empty and clean[1]
    assert clean[0].equals(raw[0]) and clean[1] == raw[1]


def test_zero_maskers_is_the_main_run(con) -> None:
    kratom = resolve("kratom")
    main = signals(con, kratom, min_cases=1, prior=PRIOR)
    none = signals(con, kratom, min_cases=1, prior=PRIOR, remove_maskers=0)
    assert none.table[OUTPUT_COLUMNS].equals(main.table)
    assert (none.table["maskers"] == "").all()
    assert list(none.table.columns)[-2:] == ["background", "maskers"]
    assert (
        "Masking: each term's c and d leave out the cases of its 0 drugs"
        in background_statement(none.design)
    )
    assert none.design.prior_key() == main.design.prior_key()  # masking keeps the prior
    with pytest.raises(UsageError, match="--remove-maskers must be 0 or more"):
        signals(con, kratom, prior=PRIOR, remove_maskers=-1)


@pytest.mark.slow
def test_library_door_takes_the_options(masking_db) -> None:
    from surveillance import Database

    options = {"min_cases": 1, "remove_maskers": 1, "exclude_window": 6, "era": "2018-on"}
    with Database(masking_db["db"]) as db:
        table = db.signals(**options)
    with connect(masking_db["db"]) as c:
        run = signals(c, resolve("kratom"), **options)
    assert table.equals(run.table) and "maskers" in table

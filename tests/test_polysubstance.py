"""Polysubstance: the co-suspect profile by drug class and signals on subsets of the substance's
cases, against a generated quarter whose kratom cases keep only their kratom rows and are then
given planted co-reported drugs (an opioid as PS, as SS in a combination, as concomitant only;
a benzodiazepine; both; alcohol and benzyl alcohol; a stimulant on a case where kratom is only
concomitant). Expected counts come from the plan below and set arithmetic over the clean
layer's reactions, not from the module's SQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner
from test_background import hand_counted

from surveillance import signals as signals_module
from surveillance import stats
from surveillance.api import Database
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.design import make_design
from surveillance.errors import NoDataError, UsageError
from surveillance.extract import resolve
from surveillance.output import render
from surveillance.pipeline import load, rebuild
from surveillance.polysubstance import (
    SUBSETS,
    class_names,
    classes_of,
    co_suspect_profile,
    drug_class,
    subset_shares,
)
from surveillance.report import opioids
from surveillance.signals import signals
from surveillance.synthetic import generate_series

HOSTILE = '=HYPERLINK("http://x.example")\x1b[2J'  # a formula and a terminal escape
# Planted on kratom-suspect cases S[i] (drugname, prod_ai, role), and the classes each case's
# co-suspects then fall in ("only": no co-suspect).
PLANTS: list[tuple[list[tuple[str, str | None, str]], set[str]]] = [
    ([("OXYCONTIN", "OXYCODONE HYDROCHLORIDE", "PS")], {"opioids"}),
    ([("VICODIN", "HYDROCODONE BITARTRATE\\ACETAMINOPHEN", "SS")], {"opioids"}),
    ([("FENTANYL PATCH", "FENTANYL", "C")], set()),  # concomitant: not a co-suspect
    ([("XANAX", "ALPRAZOLAM", "SS")], {"benzodiazepines"}),
    ([("OXYCODONE", None, "SS"), ("KLONOPIN", "CLONAZEPAM", "PS")], {"opioids", "benzodiazepines"}),
    ([("METFORMIN", "METFORMIN HYDROCHLORIDE", "SS"), (HOSTILE, None, "PS")], {"others"}),
    ([("ALCOHOLIC BEVERAGE", None, "SS")], {"alcohol"}),
    ([("BACTERIOSTATIC SALINE", "BENZYL ALCOHOL", "SS")], {"others"}),
]
# On a case where kratom is only concomitant: counts when every role of kratom does.
CONCOMITANT_PLANT = ("DESOXYN", "METHAMPHETAMINE HYDROCHLORIDE", "SS")
# The cells do not depend on the prior: a fixed one spares a fit per subset.
PRIOR = stats.Prior(3.254, 0.400, 2.026, 1.908, 0.0653, float("nan"), True, 0, 0, "fixed")


def _plant(con: duckdb.DuckDBPyConnection, caseid: str, rows: list[tuple[str, str | None, str]]):
    for n, (drugname, prod_ai, role) in enumerate(rows):
        con.execute(
            """INSERT INTO raw_drug (source, quarter, source_file, source_line, primaryid,
                caseid, drug_seq, role_cod, drugname, prod_ai)
            SELECT source, quarter, 'planted', 0, primaryid, caseid, $seq, $role, $d, $p
            FROM cases WHERE caseid = $c""",
            {"c": caseid, "d": drugname, "p": prod_ai, "role": role, "seq": str(990 + n)},
        )


def _involved(con: duckdb.DuckDBPyConnection, roles: str | None) -> set[str]:
    rows = con.execute("SELECT caseid FROM involved_cases('kratom', $r)", {"r": roles})
    return {r[0] for r in rows.fetchall()}


@pytest.fixture(scope="module")
def poly_db(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One generated quarter; kratom cases stripped to their kratom rows, then planted."""
    tmp = tmp_path_factory.mktemp("poly")
    generate_series(["2024Q1"], tmp / "zips", n_cases=60, seed=5, kratom_rate=0.3)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        every = sorted(_involved(con, None))
        con.execute(
            """DELETE FROM raw_drug d WHERE caseid IN (SELECT caseid FROM cases c
                JOIN involved_cases('kratom', NULL) USING (caseid))
            AND NOT EXISTS (SELECT 1 FROM substance_strings s WHERE s.substance = 'kratom'
                AND ((s.field = 'drugname' AND s.string = d.drugname)
                  OR (s.field = 'prod_ai' AND s.string = d.prod_ai)))"""
        )
        suspect = sorted(_involved(con, "PS,SS"))
        concomitant = sorted(set(every) - set(suspect))
        assert len(suspect) >= len(PLANTS) and concomitant
        for caseid, (rows, _) in zip(suspect, PLANTS, strict=False):
            _plant(con, caseid, rows)
        _plant(con, concomitant[0], [CONCOMITANT_PLANT])
        rebuild(con)
        assert sorted(_involved(con, None)) == every
    classes = {c: found for c, (_, found) in zip(suspect, PLANTS, strict=False)}
    classes[concomitant[0]] = {"stimulants"}
    for caseid in every:
        classes.setdefault(caseid, set())
    return {"db": db, "classes": classes, "suspect": set(suspect), "every": set(every)}


@pytest.fixture
def con(poly_db: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(poly_db["db"]) as c:
        yield c


def _in(subset: str, found: set[str]) -> bool:
    """The planted truth of subset membership, spelled out per subset kind."""
    if subset == "only":
        return not found
    if subset.startswith("with-"):
        return subset.removeprefix("with-") in found
    return subset.removeprefix("without-") not in found


def _truth(
    con: duckdb.DuckDBPyConnection, poly_db: dict[str, Any], subset: str, roles: str | None
) -> dict[str, tuple[int, int, int, int]]:
    """a, b, c, d per PT with a >= 1: the subset's cases exposed, the substance's other cases
    out of the analysis, every other case background."""
    exposed = poly_db["suspect"] if roles else poly_db["every"]
    kept = {c for c in exposed if _in(subset, poly_db["classes"][c])}
    everyone = {r[0] for r in con.execute("SELECT caseid FROM cases").fetchall()}
    return hand_counted(con, kept, everyone - exposed)


def test_class_rule_on_real_spellings() -> None:
    expected = {
        "OXYCODONE HYDROCHLORIDE": "opioids",
        "HYDROCODONE BITARTRATE\\ACETAMINOPHEN": "opioids",
        "BUPRENORPHINE\\NALOXONE": "opioids",
        "LOPERAMIDE HYDROCHLORIDE": "others",
        "NALOXONE": "others",
        "ALPRAZOLAM": "benzodiazepines",
        "CLONAZEPAM": "benzodiazepines",
        "ETIZOLAM": "benzodiazepines",
        "FLUALPRAZOLAM": "benzodiazepines",
        "ZOLPIDEM TARTRATE": "others",
        "METHAMPHETAMINE": "stimulants",
        "AMPHETAMINE ASPARTATE\\AMPHETAMINE SULFATE\\DEXTROAMPHETAMINE": "stimulants",
        "COCAINE HYDROCHLORIDE": "stimulants",
        "METHYLPHENIDATE HYDROCHLORIDE": "stimulants",
        "MDMA": "stimulants",
        "ACETAMINOPHEN\\ASPIRIN\\CAFFEINE": "others",
        "ETHANOL": "alcohol",
        "ALCOHOL": "alcohol",
        "ALCOHOLIC BEVERAGE": "alcohol",
        "BENZYL ALCOHOL": "others",
        "ISOPROPYL ALCOHOL": "others",
        "CANNABIS SATIVA WHOLE": "cannabis",
        "MARIJUANA": "cannabis",
        "DRONABINOL": "cannabis",
        "TETRAHYDROCANNABINOL": "cannabis",
        "DELTA-9-THC": "cannabis",
        "CANNABIDIOL": "cannabis",
        "MITRAGYNINE": "others",
    }
    assert {drug: drug_class(drug) for drug in expected} == expected
    assert drug_class("oxycodone") == "opioids"  # upper-cased before the words are compared
    assert drug_class("OXYCODONEX") == "others"  # a word, not a prefix
    assert classes_of("ALPRAZOLAM\\OXYCODONE") == ("opioids", "benzodiazepines")
    assert class_names() == (
        "opioids",
        "benzodiazepines",
        "stimulants",
        "alcohol",
        "cannabis",
        "others",
    )
    assert "only" in SUBSETS and "with-opioids" in SUBSETS and "without-opioids" in SUBSETS
    # The report's opioid rows read the same class.
    assert opioids().has("FENTANYL CITRATE") and not opioids().has("LOPERAMIDE")


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_co_suspect_profile_counts(con, poly_db, roles: str | None) -> None:
    profile = co_suspect_profile(con, resolve("kratom"), roles)
    n = len(poly_db["suspect"] if roles else poly_db["every"])
    want = {"opioids": 3, "benzodiazepines": 2, "stimulants": 0 if roles else 1, "alcohol": 1}
    want |= {"cannabis": 0, "others": 2}
    assert list(profile.columns) == ["class", "n_cases", "pct", "top_drugs"]
    assert dict(zip(profile["class"], profile["n_cases"], strict=True)) == want
    assert list(profile["pct"]) == [round(100 * want[c] / n, 1) for c in profile["class"]]
    top = dict(zip(profile["class"], profile["top_drugs"], strict=True))
    assert top["opioids"] == (
        "HYDROCODONE BITARTRATE\\ACETAMINOPHEN (1); OXYCODONE (1); OXYCODONE HYDROCHLORIDE (1)"
    )
    assert top["alcohol"] == "ALCOHOLIC BEVERAGE (1)"
    assert top["others"] == (
        f"{HOSTILE.upper()} (1); BENZYL ALCOHOL (1); METFORMIN HYDROCHLORIDE (1)"
    )


@pytest.mark.parametrize(
    ("subset", "roles"),
    [
        ("only", None),
        ("with-opioids", None),
        ("without-opioids", "PS,SS"),
        ("with-benzodiazepines", "PS,SS"),
        ("with-stimulants", None),
    ],
)
def test_subset_cells(con, poly_db, subset: str, roles: str | None) -> None:
    run = signals(con, resolve("kratom"), roles=roles, min_cases=1, subset=subset, prior=PRIOR)
    got = {r.term: (r.a, r.b, r.c, r.d) for r in run.table.itertuples()}
    assert got == _truth(con, poly_db, subset, roles)
    exposed = poly_db["suspect"] if roles else poly_db["every"]
    kept = {c for c in exposed if _in(subset, poly_db["classes"][c])}
    assert run.exposed == kept
    assert run.n_cases == con.execute("SELECT count(*) FROM cases").fetchone()[0] - len(
        exposed - kept
    )
    assert (run.table["subset"] == subset).all()
    stored = con.execute(
        "SELECT subset FROM signal_runs WHERE run_id = $r", {"r": run.run_id}
    ).fetchone()
    assert stored == (subset,)


def test_subset_changes_the_run_and_prior_key(con) -> None:
    kratom = resolve("kratom")
    design = make_design(subset="only")
    assert not design.is_default and "only" in design.prior_key()
    assert make_design(subset="only").key() != make_design(subset="with-opioids").key()
    with pytest.raises(NoDataError, match=r"^no kratom cases in --subset with-cannabis"):
        signals(con, kratom, subset="with-cannabis")
    with pytest.raises(UsageError, match=r"^--subset: 'with-tea': use one of only, with-opioids"):
        signals(con, kratom, subset="with-tea")


def test_as_of_path_equals_latest(con) -> None:
    """The raw-layer (as-of) subset agrees with the clean layer's on the latest quarter, where
    nothing changed after it."""
    kratom = resolve("kratom")
    through = con.execute("SELECT max(quarter) FROM quarters").fetchone()[0]
    for subset in ("only", "with-opioids", "without-benzodiazepines"):
        design = make_design(subset=subset)
        found = []
        for latest in (True, False):
            counts = signals_module._asof_counts(con, kratom, through, latest, "PS,SS", (), design)
            cells = counts.cells.sort_values("pt_key").reset_index(drop=True)
            found.append((counts.strata, cells, counts.exposed))
        pd.testing.assert_frame_equal(found[0][0], found[1][0])
        pd.testing.assert_frame_equal(found[0][1], found[1][1])
        assert found[0][2] == found[1][2] and found[0][2]


def test_subset_shares_per_year(con, poly_db) -> None:
    shares = subset_shares(con, resolve("kratom"))
    assert list(shares.columns) == ["year", "n_cases", *SUBSETS]
    years = dict(
        con.execute(
            "SELECT caseid, left(initial_quarter, 4) FROM cases WHERE caseid IN "
            "(SELECT caseid FROM involved_cases('kratom', NULL))"
        ).fetchall()
    )
    assert sorted(shares["year"]) == sorted(set(years.values()))
    for row in shares.to_dict("records"):
        cases = [c for c, y in years.items() if y == row["year"]]
        assert row["n_cases"] == len(cases)
        for subset in ("only", "with-opioids", "without-opioids", "with-alcohol"):
            n = sum(_in(subset, poly_db["classes"][c]) for c in cases)
            assert row[subset] == round(100 * n / len(cases), 1)
    assert (shares["with-opioids"] + shares["without-opioids"]).round(1).eq(100.0).all()


def test_cli(poly_db, tmp_path) -> None:
    runner = CliRunner()
    db = ["--db", str(poly_db["db"])]
    ok = runner.invoke(
        cli, ["signals", *db, "--subset", "with-opioids", "--min-cases", "1", "--format", "table"]
    )
    assert ok.exit_code == 0, ok.output
    assert "Subset with-opioids:" in ok.stdout
    csv = runner.invoke(
        cli, ["signals", *db, "--subset", "with-opioids", "--min-cases", "1", "--format", "csv"]
    )
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].endswith(",background,subset")
    with Database(poly_db["db"]) as library:
        table = library.signals(subset="with-opioids", min_cases=1)
    assert csv.stdout.splitlines()[1:] == render(table, "csv").splitlines()[1:]
    bad = runner.invoke(cli, ["signals", *db, "--subset", "with-tea"])
    assert bad.exit_code == 2 and "with-tea" in bad.stderr
    spark = runner.invoke(
        cli, ["signals", "--engine", "spark", "--parquet", str(tmp_path), "--subset", "only"]
    )
    assert spark.exit_code == 2
    assert "--subset is not supported with --engine spark" in spark.stderr
    profile = runner.invoke(cli, ["cases", *db, "--co-suspects", "--format", "csv"])
    assert profile.exit_code == 0, profile.output
    assert profile.stdout.splitlines()[0] == "class,n_cases,pct,top_drugs"
    assert profile.stdout.splitlines()[1].startswith("opioids,3,")
    assert "\x1b" not in profile.stdout and "\n=" not in profile.stdout
    assert ",'=HYPERLINK" in profile.stdout.replace('"', "")
    table = runner.invoke(cli, ["cases", *db, "--co-suspects", "--format", "table"])
    assert table.exit_code == 0 and "\x1b" not in table.stdout
    mixed = runner.invoke(cli, ["cases", *db, "--co-suspects", "--since", "2024Q1"])
    assert mixed.exit_code == 2 and "--co-suspects" in mixed.stderr

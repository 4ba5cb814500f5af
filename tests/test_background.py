"""Comparators (--background): the substance's cases always count, c and d count only the
cases matching the comparator's term file and not the substance; checked against set arithmetic
over the clean layer with planted herbal products (one on an exposed case, one in a role that
--roles leaves out) and a user's term file; the comparator is stated in every output."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import signals as signals_module
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.design import load_background, make_design
from surveillance.errors import NoDataError, UsageError
from surveillance.extract import resolve
from surveillance.pipeline import load, rebuild
from surveillance.signals import OUTPUT_COLUMNS, signals
from surveillance.substances import Substance
from surveillance.synthetic import generate_series

COMPARATOR = """[substance]
name = "zz-comparator"
version = "0.1"
description = "a test comparator"
[rules]
tokens = ["zzcompdrug"]
"""
# (drugname, prod_ai, role) planted on non-exposed cases, in this order
HERBAL = [
    ("GINKGO BILOBA", "HERBALS\\GINKGO", "SS"),
    ("GINKGO", "HERBALS\\GINKGO", "PS"),
    ("ST. JOHN'S WORT 300MG", None, "SS"),
    ("VALERIAN ROOT", None, "PS"),
    ("ASHWAGANDHA", None, "C"),  # background only when every role counts
    ("ZZCOMPDRUG", None, "SS"),
    ("ZZCOMPDRUG TABLETS", None, "SS"),
]


def plant_drug(
    con: duckdb.DuckDBPyConnection, caseid: str, drugname: str, prod_ai: str | None, role: str
) -> None:
    """One more drug row on a case's latest version (a rebuild makes it count)."""
    con.execute(
        """INSERT INTO raw_drug (source, quarter, source_file, source_line, primaryid, caseid,
            drug_seq, role_cod, drugname, prod_ai)
        SELECT source, quarter, 'planted', 0, primaryid, caseid, '998', $role, $d, $p
        FROM cases WHERE caseid = $c""",
        {"c": caseid, "d": drugname, "p": prod_ai, "role": role},
    )


@pytest.fixture(scope="module")
def background_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One generated quarter with herbal products and the test comparator's drug planted."""
    tmp = tmp_path_factory.mktemp("background")
    generate_series(["2024Q1"], tmp / "zips", n_cases=100, seed=17)
    db = tmp / "db.duckdb"
    comparator = tmp / "comparator.toml"
    comparator.write_text(COMPARATOR, encoding="utf-8")
    with connect(db) as con:
        load(con, [tmp / "zips"])
        exposed = sorted(_involved(con, "kratom", None))
        others = sorted(
            {r[0] for r in con.execute("SELECT caseid FROM cases").fetchall()} - set(exposed)
        )
        for caseid, (drugname, prod_ai, role) in zip(others, HERBAL, strict=False):
            plant_drug(con, caseid, drugname, prod_ai, role)
        plant_drug(con, exposed[0], "GINSENG", None, "SS")  # exposed: never background
        rebuild(con)
    yield {
        "db": db,
        "comparator": comparator,
        "planted": others[: len(HERBAL)],
        "exposed_herbal": exposed[0],
    }


@pytest.fixture
def con(background_db: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(background_db["db"]) as c:
        yield c


def _involved(con: duckdb.DuckDBPyConnection, name: str, roles: str | None) -> set[str]:
    rows = con.execute("SELECT caseid FROM involved_cases($n, $r)", {"n": name, "r": roles})
    return {r[0] for r in rows.fetchall()}


def _matching(con: duckdb.DuckDBPyConnection, comparator: Substance, roles: str | None) -> set[str]:
    """Cases with a drug row the comparator's rules match, in a counted role: by the matcher in
    Python over the clean layer's drug rows, not by the SQL the signals use."""
    counted = None if roles is None else set(roles.split(","))
    rows = con.execute("SELECT caseid, drugname, prod_ai, role_cod FROM case_drugs").fetchall()
    return {
        caseid
        for caseid, drugname, prod_ai, role in rows
        if (counted is None or (role or "").strip().upper() in counted)
        and comparator.match(drugname, prod_ai) is not None
    }


def _truth(
    con: duckdb.DuckDBPyConnection, comparator: Substance, roles: str | None
) -> tuple[dict[str, tuple[int, int, int, int]], set[str]]:
    """a, b, c, d per PT with a >= 1 under the comparator, and the background cases."""
    exposed = _involved(con, "kratom", roles)
    background = _matching(con, comparator, roles) - exposed
    return hand_counted(con, exposed, background), background


def hand_counted(
    con: duckdb.DuckDBPyConnection, exposed: set[str], background: set[str]
) -> dict[str, tuple[int, int, int, int]]:
    """a, b, c, d per PT with a >= 1, counted in Python over the clean layer's reactions: the
    exposed cases against the background's (every other case is out of the analysis)."""
    terms: dict[str, set[str]] = {}
    rows = con.execute("SELECT r.caseid, t.pt FROM case_reactions r JOIN pt_terms t USING (pt_key)")
    for caseid, pt in rows.fetchall():
        terms.setdefault(pt, set()).add(caseid)
    tables = {}
    for pt, cases in terms.items():
        a = len(cases & exposed)
        c = len(cases & background)
        if a:
            tables[pt] = (a, len(exposed) - a, c, len(background) - c)
    return tables


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_natural_products_counts(con, background_db, roles: str | None) -> None:
    comparator = load_background("natural-products")
    assert comparator is not None
    want, background = _truth(con, comparator, roles)
    planted = background_db["planted"]
    assert set(planted[:4]) <= background  # the four herbal products in PS/SS
    assert (planted[4] in background) == (roles is None)  # ASHWAGANDHA is concomitant
    assert background_db["exposed_herbal"] not in background
    run = signals(con, resolve("kratom"), roles=roles, min_cases=1, background="natural-products")
    got = {r.term: (r.a, r.b, r.c, r.d) for r in run.table.itertuples()}
    assert got == want
    assert run.n_cases == run.n_substance_cases + len(background)
    assert (run.table["background"] == "natural-products 1.0.0").all()
    assert (run.table["term_kind"] == "pt").all()


def test_user_comparator_file(con, background_db) -> None:
    path = background_db["comparator"]
    comparator = load_background(path)
    assert comparator is not None
    want, background = _truth(con, comparator, None)
    assert background == set(background_db["planted"][5:7])
    run = signals(con, resolve("kratom"), min_cases=1, background=path)
    assert {r.term: (r.a, r.b, r.c, r.d) for r in run.table.itertuples()} == want
    stored = con.execute(
        "SELECT background, background_version FROM signal_runs WHERE run_id = $r",
        {"r": run.run_id},
    ).fetchone()
    assert stored == ("zz-comparator", "0.1")


@pytest.mark.slow
def test_background_all_is_the_default_run(con) -> None:
    kratom = resolve("kratom")
    default = signals(con, kratom, min_cases=1)
    explicit = signals(con, kratom, min_cases=1, background="all")
    assert list(explicit.table.columns) == OUTPUT_COLUMNS
    assert explicit.run_id == default.run_id
    assert explicit.table.equals(default.table)
    narrowed = signals(con, kratom, min_cases=1, background="natural-products")
    assert narrowed.prior != default.prior  # fitted on the narrowed cases


def test_bad_comparators(con, background_db, tmp_path) -> None:
    kratom = resolve("kratom")
    with pytest.raises(UsageError, match=r"^--background: nonsense: not all, natural-products"):
        signals(con, kratom, background="nonsense")
    itself = tmp_path / "itself.toml"
    itself.write_text(COMPARATOR.replace("zz-comparator", "kratom"), encoding="utf-8")
    with pytest.raises(UsageError, match="is the substance itself"):
        signals(con, kratom, background=itself)
    nobody = tmp_path / "nobody.toml"
    nobody.write_text(COMPARATOR.replace("zzcompdrug", "qqnothing"), encoding="utf-8")
    with pytest.raises(NoDataError, match=r"^no zz-comparator cases besides the substance's"):
        signals(con, kratom, background=nobody)


def test_cli_states_the_comparator(background_db, tmp_path) -> None:
    runner = CliRunner()
    args = ["signals", "--db", str(background_db["db"]), "--min-cases", "1"]
    table = runner.invoke(cli, [*args, "--background", "natural-products", "--format", "table"])
    assert table.exit_code == 0, table.output
    stated = "Background (c, d): only the natural-products 1.0.0 cases without the substance."
    assert stated in " ".join(table.stdout.split())
    csv = runner.invoke(cli, [*args, "--background", "natural-products", "--format", "csv"])
    header, first = csv.stdout.splitlines()[:2]
    assert header.endswith(",background") and first.endswith(",natural-products 1.0.0")
    spark = runner.invoke(
        cli, ["signals", "--engine", "spark", "--parquet", str(tmp_path), "--groups"]
    )
    assert spark.exit_code == 2
    assert "not supported with --engine spark" in spark.stderr
    assert spark.stderr.count("\n") == 1


@pytest.mark.slow
def test_as_of_path_finds_the_same_background(con) -> None:
    """The raw-layer (as-of) rule for "case matches the comparator" agrees with the clean
    layer's on the latest quarter, where both describe the same cases."""
    kratom = resolve("kratom")
    signals(con, kratom, background="natural-products")  # extracts the comparator
    design = make_design(background="natural-products")
    through = con.execute("SELECT max(quarter) FROM quarters").fetchone()[0]
    found = []
    for latest in (True, False):
        counts = signals_module._asof_counts(con, kratom, through, latest, "PS,SS", (), design)
        cells = counts.cells.sort_values("pt_key").reset_index(drop=True)
        found.append((counts.strata, cells, counts.exposed))
    pd.testing.assert_frame_equal(found[0][0], found[1][0])
    pd.testing.assert_frame_equal(found[0][1], found[1][1])
    assert found[0][2] == found[1][2]
    n_background = int((found[0][0]["n"] - found[0][0]["n_exposed"]).sum())
    assert n_background == len(_matching(con, design.background, "PS,SS") - found[0][2])


@pytest.mark.slow
def test_hostile_comparator_name_is_shown_harmless(background_db, tmp_path) -> None:
    hostile = tmp_path / "hostile.toml"
    hostile.write_text(COMPARATOR.replace("zz-comparator", "zz\\u001b[31mred"), encoding="utf-8")
    args = ["signals", "--db", str(background_db["db"]), "--background", str(hostile)]
    result = CliRunner().invoke(cli, [*args, "--min-cases", "1", "--format", "table"])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.stdout
    assert "zz^[[31mred 0.1 cases" in " ".join(result.stdout.split())


def test_natural_products_term_file() -> None:
    """The shipped comparator matches FAERS's herbal coding and botanical names, not vitamins or
    ordinary drugs; kratom's own strings match too (they count as exposed, never background)."""
    comparator = load_background("natural-products")
    assert comparator is not None and comparator.name == "natural-products"
    for drugname, prod_ai in [
        ("GINKGO", "HERBALS\\GINKGO"),
        (None, "HERBALS\\ECHINACEA PURPUREA"),
        ("ST. JOHN'S WORT 300MG", None),
        ("KAVA KAVA ROOT EXTRACT", None),
        ("ASHWAGANDHA CAPSULES", None),
        ("MILK THISTLE", None),
        ("KRATOM", "HERBALS\\MITRAGYNINE"),
    ]:
        assert comparator.match(drugname, prod_ai) is not None, (drugname, prod_ai)
    for drugname in ("VITAMIN D3", "ASPIRIN", "FISH OIL", "MELATONIN", "SENNA"):
        assert comparator.match(drugname, None) is None, drugname

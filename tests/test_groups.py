"""Event groups: a group is one event (a case counts once if it has any PT of the group), beside
the single PTs, from the shipped files, a user's files and a MedDRA ASCII folder; a, b, c, d are
checked against set arithmetic over the clean layer, with planted cases: two PTs of one group on
one exposed case, a group no exposed case has, a PT on a secondary MedDRA path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.design import load_group_file, make_design, meddra_groups, shipped_group_files
from surveillance.errors import InputError, UsageError
from surveillance.extract import resolve
from surveillance.pipeline import load, rebuild
from surveillance.signals import OUTPUT_COLUMNS, signals
from surveillance.synthetic import generate_series

QUARTERS = ["2023Q4", "2024Q1"]
BACKGROUND_ONLY = "Zzplanted background-only reaction"
LLT_NAME = "Zzplanted liver LLT"  # reported in place of its PT, Hepatotoxicity (llt.asc below)
SHIPPED = {
    "dependence and withdrawal",
    "liver injury",
    "seizure",
    "respiratory depression",
    "death and overdose",
    "serotonin syndrome",
    "cardiac arrhythmia",
}


def plant_reaction(con: duckdb.DuckDBPyConnection, caseid: str, pt: str) -> None:
    """One more reaction row on a case's latest version (a rebuild makes it count)."""
    con.execute(
        """INSERT INTO raw_reac (source, quarter, source_file, source_line, primaryid, caseid, pt)
        SELECT source, quarter, 'planted', 0, primaryid, caseid, $pt FROM cases
        WHERE caseid = $c""",
        {"pt": pt, "c": caseid},
    )


def exposed_cases(con: duckdb.DuckDBPyConnection, roles: str | None = None) -> set[str]:
    """The kratom cases, from the extraction (the definition the signals count with)."""
    rows = con.execute("SELECT caseid FROM involved_cases('kratom', $r)", {"r": roles})
    return {r[0] for r in rows.fetchall()}


def case_terms(con: duckdb.DuckDBPyConnection) -> dict[str, set[str]]:
    """Each surviving case's PT keys (upper-cased, trimmed)."""
    terms: dict[str, set[str]] = {
        c[0]: set() for c in con.execute("SELECT caseid FROM cases").fetchall()
    }
    for caseid, pt_key in con.execute("SELECT caseid, pt_key FROM case_reactions").fetchall():
        terms[caseid].add(pt_key)
    return terms


def truth(
    terms: dict[str, set[str]], exposed: set[str], pts: set[str] | tuple[str, ...]
) -> tuple[int, int, int, int]:
    """a, b, c, d of the event 'has any of pts', by set arithmetic over the cases."""
    keys = {p.strip().upper() for p in pts}
    with_event = {c for c, found in terms.items() if found & keys}
    a = len(with_event & exposed)
    c = len(with_event - exposed)
    return a, len(exposed) - a, c, len(terms) - len(exposed) - c


@pytest.fixture(scope="module")
def groups_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two generated quarters; an exposed case given two liver-injury PTs, another a
    dependence PT and a neonatal withdrawal PT, a non-exposed case a PT no exposed case has."""
    tmp = tmp_path_factory.mktemp("groups")
    generate_series(QUARTERS, tmp / "zips", n_cases=100, seed=13)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        exposed = sorted(exposed_cases(con))
        others = sorted(
            {r[0] for r in con.execute("SELECT caseid FROM cases").fetchall()} - set(exposed)
        )
        for pt in ("Hepatotoxicity", "Jaundice"):
            plant_reaction(con, exposed[0], pt)
        for pt in ("Drug dependence", "Drug withdrawal syndrome neonatal"):
            plant_reaction(con, exposed[1], pt)
        plant_reaction(con, exposed[2], LLT_NAME)
        plant_reaction(con, others[0], BACKGROUND_ONLY)
        rebuild(con)
    yield {"db": db, "tmp": tmp, "twice": exposed[0], "llt": exposed[2], "other": others[0]}


@pytest.fixture
def con(groups_db: dict[str, Any]) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(groups_db["db"]) as c:
        yield c


def _rows(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    return table[table["term_kind"] == kind].set_index("term")


def test_shipped_groups_count_a_case_once(con, groups_db) -> None:
    run = signals(con, resolve("kratom"), min_cases=1, groups=True)
    terms, exposed = case_terms(con), exposed_cases(con)
    liver = {"HEPATOTOXICITY", "JAUNDICE"}
    assert liver <= terms[groups_db["twice"]] and groups_db["twice"] in exposed
    groups = _rows(run.table, "group")
    assert set(groups.index) <= SHIPPED and "liver injury" in groups.index
    for file in shipped_group_files():
        group = load_group_file(file)
        want = truth(terms, exposed, group.pts)
        if want[0] == 0:
            assert group.name not in groups.index
            continue
        got = tuple(int(v) for v in groups.loc[group.name, ["a", "b", "c", "d"]])
        assert got == want, group.name
    # The planted case has two liver PTs and counts once: a is below the sum of the PTs' a.
    pts = _rows(run.table, "pt")
    liver_pts = [p for p in pts.index if p.upper() in {k.upper() for k in _liver_pts()}]
    assert groups.loc["liver injury", "a"] < pts.loc[liver_pts, "a"].sum()


def _liver_pts() -> tuple[str, ...]:
    return next(
        g.pts for g in map(load_group_file, shipped_group_files()) if g.name == "liver injury"
    )


def test_groups_leave_every_pt_row_unchanged(con) -> None:
    kratom = resolve("kratom")
    plain = signals(con, kratom, min_cases=1)
    grouped = signals(con, kratom, min_cases=1, groups=True)
    assert list(plain.table.columns) == OUTPUT_COLUMNS
    assert list(grouped.table.columns) == ["term", "term_kind", *OUTPUT_COLUMNS[1:], "background"]
    pts = grouped.table[grouped.table["term_kind"] == "pt"][OUTPUT_COLUMNS]
    pd.testing.assert_frame_equal(
        pts.sort_values("term").reset_index(drop=True),
        plain.table.sort_values("term").reset_index(drop=True),
    )
    assert grouped.prior == plain.prior and grouped.run_id != plain.run_id
    assert (grouped.table["background"] == "all").all()
    stored = con.execute(
        "SELECT background, groups FROM signal_runs WHERE run_id = $r", {"r": grouped.run_id}
    ).fetchone()
    assert stored[0] == "all"
    assert {g["name"] for g in json.loads(stored[1])} == SHIPPED
    kinds = con.execute(
        "SELECT term_kind, count(*) FROM signals WHERE run_id = $r GROUP BY ALL ORDER BY 1",
        {"r": grouped.run_id},
    ).fetchall()
    assert dict(kinds) == grouped.table["term_kind"].value_counts().to_dict()
    assert con.execute(
        "SELECT DISTINCT term_kind FROM signals WHERE run_id = $r", {"r": plain.run_id}
    ).fetchall() == [("pt",)]


def _group_file(path: Path, name: str, pts: list[str], extra: str = "") -> Path:
    listed = ", ".join(json.dumps(p) for p in pts)
    path.write_text(
        f'[group]\nname = "{name}"\nversion = "0.1"\n{extra}\n[terms]\npts = [{listed}]\n',
        encoding="utf-8",
    )
    return path


def test_user_group_file_and_a_group_no_exposed_case_has(con, groups_db, tmp_path) -> None:
    mine = _group_file(tmp_path / "mine.toml", "my liver", ["Hepatotoxicity", " jaundice "])
    nobody = _group_file(tmp_path / "nobody.toml", "background only", [BACKGROUND_ONLY])
    run = signals(con, resolve("kratom"), min_cases=1, group_files=[mine, nobody])
    groups = _rows(run.table, "group")
    terms, exposed = case_terms(con), exposed_cases(con)
    want = truth(terms, exposed, ("Hepatotoxicity", "Jaundice"))
    assert tuple(int(v) for v in groups.loc["my liver", ["a", "b", "c", "d"]]) == want
    assert want[0] >= 1
    assert truth(terms, exposed, (BACKGROUND_ONLY,))[2] == 1  # one background case has it
    assert "background only" not in groups.index  # no exposed case: no row, as for a PT


@pytest.mark.slow
def test_groups_as_of_an_earlier_quarter_and_in_strata(con) -> None:
    kratom = resolve("kratom")
    for options in ({"through": QUARTERS[0]}, {"stratify": "sex"}):
        plain = signals(con, kratom, min_cases=1, **options)
        grouped = signals(con, kratom, min_cases=1, groups=True, **options)
        pts = grouped.table[grouped.table["term_kind"] == "pt"]
        assert sorted(pts["term"]) == sorted(plain.table["term"])
        assert pts.set_index("term")["a"].to_dict() == plain.table.set_index("term")["a"].to_dict()
    crude = _rows(signals(con, kratom, min_cases=1, groups=True).table, "group")
    strata = _rows(grouped.table, "group")
    assert strata[["a", "b", "c", "d"]].equals(crude.loc[strata.index, ["a", "b", "c", "d"]])


# A MedDRA ASCII hierarchy file in the real layout (12 '$'-separated fields and a trailing '$':
# pt_code, hlt_code, hlgt_code, soc_code, pt_name, hlt_name, hlgt_name, soc_name, soc_abbrev,
# null_field, pt_soc_code, primary_soc_fg), generated for the test: the codes and the links are
# invented, the term names are public PT names. Jaundice has a secondary path (flag N) to SOC
# "Investigations" through an invented HLT.
MDHIER = """\
1001$2001$3001$4001$Hepatotoxicity$Hepatic injuries$Hepatic disorders$Hepatobiliary disorders$Hepat$$4001$Y$
1002$2002$3001$4001$Jaundice$Cholestasis and jaundice$Hepatic disorders$Hepatobiliary disorders$Hepat$$4001$Y$
1002$2003$3002$4002$Jaundice$Skin colour findings$Physical findings$Investigations$Inv$$4001$N$
1003$2004$3003$4003$Drug dependence$Substance dependence$Substance-related disorders$Psychiatric disorders$Psych$$4003$Y$
"""  # noqa: E501
# llt.asc in the real layout (11 fields: llt_code, llt_name, pt_code, llt_whoart_code,
# llt_harts_code, llt_costart_sym, llt_icd9_code, llt_icd9cm_code, llt_icd10_code,
# llt_currency, llt_jart_code), generated: the PT's own LLT and an invented non-current one.
LLT = f"""\
5001$Hepatotoxicity$1001$$$$$$$Y$$
5002${LLT_NAME}$1001$$$$$$$N$$
"""


def write_meddra(folder: Path) -> Path:
    folder.mkdir()
    (folder / "mdhier.asc").write_bytes(MDHIER.replace("\n", "\r\n").encode("ascii"))
    (folder / "llt.asc").write_bytes(LLT.replace("\n", "\r\n").encode("ascii"))
    (folder / "meddra_release.asc").write_text("99.0$English$$$\r\n", encoding="ascii")
    return folder


def test_meddra_hlt_hlgt_soc_groups(con, groups_db, tmp_path) -> None:
    folder = write_meddra(tmp_path / "MedAscii")
    groups = {(g.kind, g.name): g for g in meddra_groups(folder)}
    assert set(groups[("hlgt", "Hepatic disorders")].pts) == {
        "Hepatotoxicity",
        "Jaundice",
        LLT_NAME,
    }
    assert groups[("hlt", "Skin colour findings")].pts == ("Jaundice",)
    assert groups[("hlt", "Hepatic injuries")].pts == ("Hepatotoxicity", LLT_NAME)
    assert ("soc", "Investigations") not in groups  # Jaundice's secondary SOC does not count
    assert groups[("soc", "Hepatobiliary disorders")].version == "99.0"
    run = signals(con, resolve("kratom"), min_cases=1, meddra=folder)
    terms, exposed = case_terms(con), exposed_cases(con)
    for (kind, name), group in groups.items():
        want = truth(terms, exposed, group.pts)
        rows = run.table[(run.table["term_kind"] == kind) & (run.table["term"] == name)]
        if want[0] == 0:
            assert rows.empty
            continue
        assert tuple(int(v) for v in rows.iloc[0][["a", "b", "c", "d"]]) == want, (kind, name)
    assert {"hlt", "hlgt", "soc"} <= set(run.table["term_kind"])
    assert LLT_NAME.upper() in terms[groups_db["llt"]]
    assert not {"HEPATOTOXICITY", "JAUNDICE"} & terms[groups_db["llt"]]  # only by its LLT


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[group\n", "not valid TOML"),
        ('[terms]\npts = ["Seizure"]\n', "no [group] table"),
        (
            '[group]\nname = "x"\nversion = "1"\n[terms]\npts = []\n',
            "[terms] pts must be a non-empty list",
        ),
        (
            '[group]\nname = "x"\nversion = "1"\n[terms]\npt = ["Seizure"]\n',
            "unknown key 'pt' in [terms]",
        ),
        (
            '[group]\nname = "x"\nversion = "1"\n[terms]\npts = ["Seizure", 3]\n',
            "[terms] pts: 3 is not a PT name",
        ),
        (
            '[group]\nname = ""\nversion = "1"\n[terms]\npts = ["Seizure"]\n',
            "[group] name must be a non-empty string",
        ),
        (
            '[group]\nname = "x\\u001b[31m"\nversion = "1"\n[terms]\npts = ["Seizure"]\n',
            "[group] name has control characters",
        ),
    ],
)
def test_bad_group_file_names_file_and_problem(tmp_path, text: str, problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as raised:
        make_design(group_files=[path])
    assert str(raised.value).startswith(f"{path}: {problem}")


def test_bad_group_file_is_one_line_in_the_cli(groups_db, tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[group]\nname = "x"\nversion = "1"\n[terms]\npts = []\n', encoding="utf-8")
    result = CliRunner().invoke(
        cli, ["signals", "--db", str(groups_db["db"]), "--group-file", str(path)]
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {path}: [terms] pts must be a non-empty list of PT names\n"


def test_duplicate_group_and_bad_meddra_are_one_line(groups_db, tmp_path) -> None:
    twice = _group_file(tmp_path / "seizure.toml", "seizure", ["Seizure"])
    runner = CliRunner()
    result = runner.invoke(
        cli, ["signals", "--db", str(groups_db["db"]), "--groups", "--group-file", str(twice)]
    )
    assert result.exit_code == 1 and result.stderr.count("\n") == 1
    assert f"{twice}: group 'seizure' is already defined by " in result.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(cli, ["signals", "--db", str(groups_db["db"]), "--meddra", str(empty)])
    assert result.exit_code == 1
    assert result.stderr == f"Error: {empty}: no mdhier.asc (the MedDRA ASCII hierarchy file)\n"
    (empty / "mdhier.asc").write_text("1$2$3$\n", encoding="ascii")
    with pytest.raises(InputError, match=r"mdhier.asc, line 1: expected 12"):
        make_design(meddra=empty)
    with pytest.raises(InputError, match=r"missing.toml: no such group file$"):
        make_design(group_files=[tmp_path / "missing.toml"])


def test_cli_marks_group_rows(groups_db) -> None:
    runner = CliRunner()
    args = ["signals", "--db", str(groups_db["db"]), "--groups", "--min-cases", "1"]
    table = runner.invoke(cli, [*args, "--format", "table"])
    assert table.exit_code == 0, table.output
    assert (
        "[group] liver injury" in table.output
        and "Background (c, d): all cases without the substance." in table.output
    )
    csv = runner.invoke(cli, [*args, "--format", "csv"])
    assert csv.stdout.splitlines()[0].startswith("term,term_kind,a,b,c,d,")
    assert csv.stdout.splitlines()[0].endswith(",background")


def test_shipped_group_files_name_their_sources() -> None:
    groups = [load_group_file(f) for f in shipped_group_files()]
    assert {g.name for g in groups} == SHIPPED
    for file in shipped_group_files():
        import tomllib

        doc = tomllib.loads(file.read_text(encoding="utf-8"))
        assert doc["group"]["sources"] and doc["group"]["description"], file


@pytest.mark.slow
def test_library_door_takes_the_same_options(groups_db, tmp_path) -> None:
    from surveillance import Database

    mine = _group_file(tmp_path / "mine.toml", "my liver", ["Hepatotoxicity", "Jaundice"])
    with Database(groups_db["db"]) as db:
        table = db.signals(min_cases=1, groups=True, group_files=[mine])
    with connect(groups_db["db"]) as c:
        run = signals(c, resolve("kratom"), min_cases=1, groups=True, group_files=[mine])
    pd.testing.assert_frame_equal(table, run.table)
    assert {"group"} == set(table.loc[table["term"] == "my liver", "term_kind"])


@pytest.mark.slow
def test_a_design_made_once_gives_the_same_run(con) -> None:
    kratom = resolve("kratom")
    design = make_design(groups=True)
    by_options = signals(con, kratom, min_cases=1, groups=True)
    by_design = signals(con, kratom, min_cases=1, design=design)
    assert by_design.run_id == by_options.run_id
    pd.testing.assert_frame_equal(by_design.table, by_options.table)
    with pytest.raises(UsageError, match="not both"):
        signals(con, kratom, design=design, groups=True)

"""`surveillance terms` prints the dictionary; `terms discover` finds unmatched look-alike
strings in a database, with case counts, and never the known decoys."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.pipeline import load, rebuild
from surveillance.synthetic import DECOY_DRUGNAMES, generate_series


def test_terms_prints_the_dictionary() -> None:
    result = CliRunner().invoke(cli, ["terms", "--substance", "kratom"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("kratom ")
    for section in ("terms", "tokens", "patterns", "exclusions"):
        assert f"\n{section} (" in result.output


def test_discover_lists_planted_misspellings(tmp_path: Path) -> None:
    generate_series(["2024Q1"], tmp_path / "zips", n_cases=80, seed=4, damage=False)
    db = tmp_path / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp_path / "zips"])
        caseids = [r[0] for r in con.execute("SELECT caseid FROM cases LIMIT 4").fetchall()]
        for caseid, name in zip(
            caseids, ["KRATIM POWDER", "Mitragynien extract", "KRAT0M", "KETUM GEL"], strict=False
        ):
            con.execute(
                "INSERT INTO raw_drug (source, quarter, source_file, source_line, primaryid, "
                "caseid, drug_seq, role_cod, drugname) SELECT source, quarter, 'test', 0, "
                "primaryid, caseid, '99', 'C', $name FROM raw_demo WHERE caseid = $caseid",
                {"name": name, "caseid": caseid},
            )
        rebuild(con)
    result = CliRunner().invoke(cli, ["terms", "discover", "--db", str(db), "--format", "csv"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "string,n_cases,score,nearest_term,note"
    rows = {line.split(",")[0]: line for line in lines[1:]}
    assert {"KRATIM POWDER", "Mitragynien extract", "KRAT0M", "KETUM GEL"} <= set(rows)
    assert rows["KETUM GEL"].endswith("ambiguous name 'ketum' beside 'gel': not counted")
    assert rows["KRAT0M"].endswith(",")
    assert not set(rows) & set(DECOY_DRUGNAMES)


def test_discover_says_what_it_looked_at_when_it_finds_nothing(tmp_path: Path) -> None:
    generate_series(["2024Q1"], tmp_path / "zips", n_cases=40, seed=4, damage=False)
    db = tmp_path / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp_path / "zips"])
        (n_strings,) = con.execute(
            "SELECT count(DISTINCT s) FROM (SELECT drugname AS s FROM case_drugs UNION ALL "
            "SELECT prod_ai FROM case_drugs) WHERE s IS NOT NULL AND s NOT IN "
            "(SELECT matched_string FROM substance_hits WHERE substance = 'kratom')"
        ).fetchone()
    result = CliRunner().invoke(cli, ["terms", "discover", "--db", str(db), "--format", "table"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == (
        f"looked at {n_strings:,} distinct unmatched drug strings; "
        "none within similarity 80 of a kratom term"
    )


def test_terms_lists_ambiguous_names() -> None:
    result = CliRunner().invoke(cli, ["terms", "--substance", "kratom"])
    assert "\nambiguous (only beside a context word, never beside a blocker) (1):\n  ketum\n" in (
        result.output
    )
    assert "\nblockers (" in result.output and "\n  gel\n" in result.output

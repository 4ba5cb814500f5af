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
        caseids = [r[0] for r in con.execute("SELECT caseid FROM cases LIMIT 3").fetchall()]
        for caseid, name in zip(
            caseids, ["KRATIM POWDER", "Mitragynien extract", "KRAT0M"], strict=True
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
    assert lines[0] == "string,n_cases,score,nearest_term"
    found = {line.split(",")[0] for line in lines[1:]}
    assert {"KRATIM POWDER", "Mitragynien extract", "KRAT0M"} <= found
    assert not found & set(DECOY_DRUGNAMES)

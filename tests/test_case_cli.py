"""`surveillance case` prints a summary a person reads (header, patient, versions with what
changed, drugs with the matched substance marked), JSON keeps every field, and no
human-facing output shows NaN, None, NaT or <NA>."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect

MISSING = re.compile(r"\b(NaN|None|NaT|nan)\b|<NA>")


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _case(db: Path, caseid: str) -> str:
    code, out = _run("case", caseid, "--db", str(db))
    assert code == 0, out
    return out


def _read(db: Path, sql: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(sql).fetchall()


def test_header_names_version_dates_type_reporter_country(series_db) -> None:
    db = series_db[1]
    caseid, version, init_dt, fda_dt, rept, country = _read(
        db,
        "SELECT caseid, caseversion, init_fda_dt, fda_dt, report_type, country FROM cases "
        "WHERE source = 'FAERS' AND init_fda_dt IS NOT NULL AND length(fda_dt) = 8 "
        "AND country IS NOT NULL AND report_type IS NOT NULL ORDER BY caseid LIMIT 1",
    )[0]
    header = _case(db, caseid).splitlines()[0]
    iso = f"{fda_dt[:4]}-{fda_dt[4:6]}-{fda_dt[6:]}"
    assert header.startswith(f"case {caseid} version {version} | ")
    assert f"initial receipt {init_dt[:4]}-{init_dt[4:6]}-{init_dt[6:]}" in header
    assert f"latest FDA date {iso}" in header
    assert f"report type {rept}" in header and f"country {country}" in header
    assert fda_dt not in _case(db, caseid)  # dates are ISO, never raw YYYYMMDD


def test_versions_name_drugs_and_reactions_added_and_removed(series_db) -> None:
    db = series_db[1]
    rows = _read(
        db,
        "SELECT r.caseid, r.source, r.primaryid, r.caseversion, r.fda_dt, "
        "list(DISTINCT upper(trim(coalesce(g.drugname, g.prod_ai)))) "
        "FROM reports r JOIN raw_drug g ON g.source = r.source AND g.primaryid = r.primaryid "
        "AND g.quarter = r.quarter WHERE r.source = 'FAERS' AND r.caseid IN "
        "(SELECT caseid FROM cases) GROUP BY ALL",
    )
    by_case: dict[str, list[tuple]] = {}
    for caseid, _, _, version, fda_dt, drugs in rows:
        by_case.setdefault(caseid, []).append((int(version), fda_dt, set(drugs)))
    changed = {
        caseid: sorted(versions)
        for caseid, versions in by_case.items()
        if len(versions) == 2 and sorted(versions)[0][2] != sorted(versions)[1][2]
    }
    assert changed, "the series has follow-ups whose drugs change"
    for caseid, (old, new) in list(changed.items())[:5]:
        out = _case(db, caseid)
        section = out[out.index("== versions") : out.index("== drugs")]
        if new[2] - old[2]:
            assert f"drugs added: {'; '.join(sorted(new[2] - old[2]))}" in section
        if old[2] - new[2]:
            assert f"drugs removed: {'; '.join(sorted(old[2] - new[2]))}" in section
        assert f"v{new[0]} " in section and "current" in section


def test_matched_substance_is_marked_with_its_string_and_rule(series_db) -> None:
    db = series_db[1]
    caseid, drug_seq, string, rule = _read(
        db,
        "SELECT caseid, drug_seq, matched_string, rule FROM substance_hits "
        "WHERE substance = 'kratom' ORDER BY caseid LIMIT 1",
    )[0]
    lines = _case(db, caseid).splitlines()
    drug_line = next(i for i, line in enumerate(lines) if re.match(rf"^\*\s+{drug_seq} ", line))
    follow = " ".join(line.strip() for line in lines[drug_line + 1 : drug_line + 6])
    assert f"matched kratom: '{string}' ({rule} rule" in follow
    unmarked = [line for line in lines if re.match(r"^ \s+\d+ (PS|SS|C|I)\b", line)]
    assert all(not line.startswith("*") for line in unmarked)


def test_json_keeps_the_full_structure(series_db) -> None:
    db = series_db[1]
    caseid = _read(db, "SELECT caseid FROM substance_hits ORDER BY caseid LIMIT 1")[0][0]
    code, out = _run("case", caseid, "--db", str(db), "--format", "json")
    assert code == 0, out
    detail = json.loads(out)
    assert {"caseid", "case", "versions", "drugs", "reactions", "outcomes", "matches"} <= set(
        detail
    )
    assert {"changes", "quarters", "primaryid"} <= set(detail["versions"][0])
    assert "dose_amt" in detail["drugs"][0]


def test_unknown_case_and_empty_database_are_one_line_errors(series_db, tmp_path) -> None:
    code, out = _run("case", "1", "--db", str(series_db[1]))
    assert (code, out.strip()) == (1, "Error: no case 1 in the database")
    empty = tmp_path / "empty.duckdb"
    connect(empty).close()
    code, out = _run("case", "1", "--db", str(empty))
    assert code == 1 and len(out.strip().splitlines()) == 1
    assert out.strip() == f"Error: {empty}: no quarters loaded; run 'surveillance load' first"


@pytest.mark.slow
def test_no_missing_value_markers_in_human_output(series_db) -> None:
    db = series_db[1]
    caseids = [
        r[0]
        for r in _read(
            db,
            "(SELECT caseid FROM cases WHERE source = 'LAERS' LIMIT 5) UNION ALL "
            "(SELECT caseid FROM substance_hits LIMIT 5) UNION ALL "
            "(SELECT caseid FROM raw_deleted WHERE caseid IN (SELECT caseid FROM reports) LIMIT 3) "
            "UNION ALL "
            "(SELECT caseid FROM cases WHERE age_years IS NULL OR event_dt IS NULL LIMIT 5)",
        )
    ]
    outputs = [_case(db, c) for c in caseids]
    for args in (
        ["cases", "--db", str(db), "--format", "table"],
        ["signals", "--db", str(db), "--format", "table", "--min-cases", "1"],
        ["schema", "cases", "--db", str(db), "--format", "table"],
        [
            "sql",
            "SELECT caseid, age_years, event_date FROM cases",
            "--db",
            str(db),
            "--format",
            "table",
        ],
    ):
        code, out = _run(*args)
        assert code == 0, out
        outputs.append(out)
    for out in outputs:
        assert not MISSING.search(out), MISSING.search(out)


@pytest.mark.parametrize("fmt", ["table", "csv"])
def test_schema_shows_whole_descriptions(series_db, fmt: str) -> None:
    from surveillance import schema_docs

    code, out = _run("schema", "cases", "--db", str(series_db[1]), "--format", fmt)
    assert code == 0, out
    longest = max(schema_docs.COLUMNS["cases"].values(), key=len)
    assert len(longest) > 40
    flowing = " ".join(" ".join(line.split()) for line in out.splitlines())
    assert " ".join(longest.split()) in flowing
    if fmt == "table":
        assert max(map(len, out.splitlines())) <= 80

"""One definition per concept: every label and rule of the registry (`surveillance.definitions`)
is written in one place; other modules and queries read it instead of spelling it again."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pytest

from surveillance import definitions
from surveillance.clean import ensure_macros

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted(
    [
        *(ROOT / "surveillance").rglob("*.py"),
        *(ROOT / "surveillance" / "templates").glob("*.j2"),
        *(ROOT / "queries").glob("*.sql"),
    ]
)
# A quoted age band such as '18-44' or "65+": how a second set of age groups gives itself away.
AGE_BAND = re.compile(r"""['"](\d{1,2}-\d{1,3}|\d{1,3}\+)['"]""")
# Other engineers' files that still spell a registry definition, until their branches land.
PENDING: dict[str, str] = {}
# Files whose matches are other things by the same name (the MedDRA term "Death" in the
# generator's reaction terms is a reaction, not an outcome label).
NOT_DEFINITIONS = {"surveillance/synthetic.py": {"Death"}}


def registry_literals() -> set[str]:
    """Labels and rule texts the registry defines (outcome labels equal to a flag column's name,
    such as 'death', are column names elsewhere and left out)."""
    flags = {o.flag for o in definitions.OUTCOME_CODES}
    labels = {
        *definitions.AGE_GROUPS,
        *(label for label in definitions.OUTCOMES if label not in flags),
        *(o.label for o in definitions.OUTCOME_CODES),
        *(c.rule for c in definitions.CRITERIA),
        definitions.NEW_CASE,
    }
    return {label for label in labels if len(label) > 2}


def repeated_definitions(path: Path) -> list[str]:
    """Quoted literals in a source file that spell a registry label or an age band."""
    text = path.read_text(encoding="utf-8")
    found = {label for label in registry_literals() if f'"{label}"' in text or f"'{label}'" in text}
    name = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.name
    return sorted({*found, *AGE_BAND.findall(text)} - NOT_DEFINITIONS.get(name, set()))


def _params() -> list:
    out = []
    for path in SOURCES:
        name = path.relative_to(ROOT).as_posix()
        if name == "surveillance/definitions.py":
            continue
        marks = [pytest.mark.xfail(strict=True, reason=PENDING[name])] if name in PENDING else []
        out.append(pytest.param(path, id=name, marks=marks))
    return out


@pytest.mark.parametrize("path", _params())
def test_no_second_definition(path: Path) -> None:
    assert repeated_definitions(path) == []


def test_the_check_finds_a_second_definition(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text("GROUPS = ('0-17', '18-44')\nLABEL = \"Life-threatening\"\n")
    assert repeated_definitions(planted) == ["0-17", "18-44", "Life-threatening"]


def test_age_groups_follow_the_bounds_in_python_and_sql() -> None:
    bounds, groups = definitions.AGE_BOUNDS, definitions.AGE_GROUPS
    assert len(groups) == len(bounds) + 1 and groups[0] == f"0-{bounds[0] - 1}"
    con = duckdb.connect()
    con.execute("CREATE TABLE raw_demo (caseid VARCHAR, quarter VARCHAR, init_fda_dt VARCHAR)")
    ensure_macros(con)
    ages = [None, 0.0, 17.99, *(float(b) for b in bounds), 64.5, 120.0]
    got = [con.execute("SELECT age_group($a::DOUBLE)", {"a": a}).fetchone()[0] for a in ages]
    want = [definitions.AGE_UNKNOWN, groups[0], groups[0], *groups[1:], groups[-2], groups[-1]]
    assert got == want


def test_outcome_macros_follow_the_registry() -> None:
    con = duckdb.connect()
    con.execute("CREATE TABLE raw_demo (caseid VARCHAR, quarter VARCHAR, init_fda_dt VARCHAR)")
    ensure_macros(con)
    for o in definitions.OUTCOME_CODES:
        assert con.execute("SELECT outcome_label($c)", {"c": o.code}).fetchone() == (o.label,)
    flags = ("death", "life_threatening", "hospitalization", "serious")
    cases = [(True, True, True, True), (False, True, True, True), (False, False, True, True)]
    cases += [(False, False, False, True), (False, False, False, False)]
    got = [
        con.execute(f"SELECT worst_outcome({', '.join(map(str, row))})").fetchone()[0]
        for row in cases
    ]
    assert got == list(definitions.OUTCOMES)
    assert [flag for _, flag in definitions.WORST_OUTCOME_RULE[:4]] == list(flags)


def test_one_definition_of_a_case_involving_a_substance_in_roles() -> None:
    """The role rule lives in clean's role_counts macro and "case involves S in roles R" in
    extract's involved_cases macro; no module or query spells out a role filter of its own."""
    root = Path(__file__).resolve().parent.parent
    sources = [
        *sorted((root / "surveillance").glob("*.py")),
        *sorted((root / "queries").glob("*.sql")),
    ]
    role_filter = re.compile(r"string_split\([^)]*roles")
    spelled = [p.name for p in sources if role_filter.search(p.read_text(encoding="utf-8"))]
    assert spelled == ["clean.py"]
    using = [p.name for p in sources if "involved_cases(" in p.read_text(encoding="utf-8")]
    assert {"signals.py", "trends.py", "extract.py", "co_reported_substances.sql"} <= set(using)


def test_one_role_parser_for_every_command(series_db) -> None:
    from click.testing import CliRunner

    from surveillance.cli import cli
    from surveillance.definitions import parse_roles

    assert parse_roles(" ss, ps ,PS") == "PS,SS" and parse_roles(None) is None
    with pytest.raises(ValueError, match="unknown role"):
        parse_roles(",")
    errors = set()
    for command in ("cases", "signals"):
        result = CliRunner().invoke(cli, [command, "--db", str(series_db[1]), "--roles", "PS,XX"])
        assert result.exit_code == 2, result.output
        errors.add(result.output.strip().splitlines()[-1])
    assert errors == {"Error: --roles: unknown role(s) XX; use PS,SS,C,I"}

"""CAERS beside FAERS: accounting, header-by-name mapping on both layouts, substance matching
against the generator's truth, the 2x2 cells by hand, the side-by-side counts, an all-or-nothing
load, and hostile strings escaped in every output."""

from __future__ import annotations

import csv
import io
import json
import shutil
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import caers, schema_docs
from surveillance.caers_synthetic import LAYOUT_2017, LAYOUT_LATER, CaersSeries, generate
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.errors import InputError, NoDataError
from surveillance.extract import resolve
from surveillance.query import schema
from surveillance.synthetic import Series

HEADER_2017 = (
    "RA_Report #,RA_CAERS Created Date,AEC_Event Start Date,PRI_Product Role,"
    "PRI_Reported Brand/Product Name,PRI_FDA Industry Code,PRI_FDA Industry Name,"
    "CI_Age at Adverse Event,CI_Age Unit,CI_Gender\r\n,AEC_One Row Outcomes,"
    "SYM_One Row Coded Symptoms\r\n"
)
TABLES = (
    "caers_raw caers_quarantine caers_load_log caers_cases caers_products caers_reactions "
    "caers_outcomes caers_substance_hits caers_substance_runs"
).split()


def _row(*fields: str) -> str:
    return ",".join('"' + f.replace('"', '""') + '"' for f in fields) + "\r\n"


def _report(rid: str, product: str, role: str, symptoms: str, day: str = "3/4/2016") -> str:
    """One 2004-2017Q2 row: a report's product with the report's fields repeated."""
    return _row(rid, day, "", role, product, "54", "Vit/Min/Prot", "30", "Year(s)", "Female",
                "HOSPITALIZATION", symptoms)  # fmt: skip


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8", newline="")
    return path


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory) -> CaersSeries:
    return generate(
        tmp_path_factory.mktemp("caers") / "exports", n_reports=150, seed=3, kratom_rate=0.1
    )


@pytest.fixture(scope="module")
def loaded(series: CaersSeries, tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("caers-db") / "caers.duckdb"
    with connect(db) as con:
        caers.load(con, [series.folder])
    return db


def test_rows_read_equal_loaded_plus_quarantined(series: CaersSeries, loaded: Path) -> None:
    with connect(loaded, read_only=True) as con:
        log = {r[0]: r[1:] for r in con.execute(
            "SELECT file, rows_read, rows_loaded, rows_quarantined, layout, synthetic "
            "FROM caers_load_log").fetchall()}  # fmt: skip
        for truth in series.files:
            read, n_loaded, n_quarantined, layout, synthetic = log[truth.path.name]
            assert (read, n_loaded, n_quarantined) == (
                truth.rows_read,
                truth.rows_loaded,
                len(truth.quarantined),
            )
            assert read == n_loaded + n_quarantined
            assert layout == truth.layout and synthetic
            found = dict(con.execute(
                "SELECT line_number, reason FROM caers_quarantine WHERE file = $f",
                {"f": truth.path.name}).fetchall())  # fmt: skip
            assert sorted(found) == sorted(truth.quarantined)  # the very lines planted
            for line, word in truth.quarantined.items():
                assert word in found[line]
            raw = con.execute(
                "SELECT count(*) FROM caers_raw WHERE source_file = $f", {"f": truth.path.name}
            ).fetchone()
            assert raw == (truth.rows_loaded,)
        blank = con.execute(
            "SELECT raw_text FROM caers_quarantine WHERE reason = 'blank line'"
        ).fetchall()
        assert blank and all(r == ("",) for r in blank)


def test_clean_tables_match_the_truth(series: CaersSeries, loaded: Path) -> None:
    truth = series.reports
    with connect(loaded, read_only=True) as con:
        cases = {r[0]: r[1:] for r in con.execute(
            "SELECT report_id, created_date, age_years, sex, n_products FROM caers_cases"
        ).fetchall()}  # fmt: skip
        assert set(cases) == set(truth)
        for rid, report in truth.items():
            created, age, sex, n_products = cases[rid]
            assert created == report.created
            assert sex == report.sex
            assert (age is None) == (report.age_years is None)
            if age is not None:
                assert age == pytest.approx(report.age_years, abs=0.01)
            assert n_products == len(report.products)  # duplicate rows collapse
        terms = con.execute(
            "SELECT report_id, list(pt_key ORDER BY pt_key) FROM caers_reactions GROUP BY ALL"
        ).fetchall()
        assert {rid: set(t) for rid, t in terms} == {r: t.symptoms for r, t in truth.items()}
        outcomes = con.execute(
            "SELECT report_id, list(outcome) FROM caers_outcomes GROUP BY ALL"
        ).fetchall()
        assert {rid: set(o) for rid, o in outcomes} == {r: t.outcomes for r, t in truth.items()}
        names = con.execute("SELECT product_name FROM caers_products").fetchall()
        assert ("PROTEIN POWDER\nVANILLA",) in names  # a quoted field across two lines


def test_both_layouts_map_by_header_name(tmp_path: Path) -> None:
    early = _write(
        tmp_path / "early.csv", HEADER_2017 + _report("1", "KRATOM", "Suspect", "NAUSEA")
    )
    # The later layout: renamed, reordered (symptoms before outcomes), upper-case roles.
    later = _write(
        tmp_path / "later.csv",
        "Sex,Report ID,Product,Product Type,CAERS Created Date,Date of Event,Product Code,"
        "Description,Patient Age,Age Units,MedDRA Preferred Terms,Outcomes\r\n"
        + _row("Male", "2019-CFS-000001", "MIT 45 kratom", "SUSPECT", "07/08/2019",
               "07/01/2019", "54", "Vit/Min/Prot", "3", "Decade(s)", "SEIZURE, VOMITING",
               "DEATH"),
    )  # fmt: skip
    one_line = _write(tmp_path / "one-line.csv", HEADER_2017.replace("\r\n,", ",", 1))
    with connect(tmp_path / "db.duckdb") as con:
        loads = caers.load(con, [early, later, one_line])
        assert [(c.layout, c.rows_loaded) for c in loads] == [
            (LAYOUT_2017, 1),
            (LAYOUT_LATER, 1),
            (LAYOUT_2017, 0),
        ]
        row = con.execute(
            "SELECT report_id, product_name, product_role, sex, age, age_unit, symptoms, "
            "outcomes, created_date, event_start_date FROM caers_raw WHERE source_file = "
            "'later.csv'"
        ).fetchone()
        assert row == (
            "2019-CFS-000001", "MIT 45 kratom", "SUSPECT", "Male", "3", "Decade(s)",
            "SEIZURE, VOMITING", "DEATH", "07/08/2019", "07/01/2019",
        )  # fmt: skip
        case = con.execute(
            "SELECT age_years, sex, death, serious, created_year FROM caers_cases "
            "WHERE report_id = '2019-CFS-000001'"
        ).fetchone()
        assert case == (30.0, "M", True, True, 2019)
        first = con.execute(
            "SELECT source_line, outcomes, symptoms FROM caers_raw WHERE source_file = 'early.csv'"
        ).fetchone()
        assert first == (3, "HOSPITALIZATION", "NAUSEA")  # the header took lines 1-2


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "empty file"),
        ("Report ID,Product,Colour\r\n", "unknown CAERS header columns ['Colour']"),
        ("Report ID,Sex,MedDRA Preferred Terms\r\n", "no column ['PRI_Reported Brand/Product"),
        ("Report ID,Product,Product,MedDRA Preferred Terms\r\n", "twice"),
    ],
)
def test_a_bad_header_is_one_line_naming_file_and_line(
    tmp_path: Path, text: str, problem: str
) -> None:
    bad = _write(tmp_path / "bad.csv", text)
    result = CliRunner().invoke(
        cli, ["load", "--source", "caers", str(bad), "--db", str(tmp_path / "db.duckdb")]
    )
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and f"{bad}, line 1: " in lines[0] and problem in lines[0]


def test_substances_match_the_truth(series: CaersSeries, loaded: Path) -> None:
    with connect(loaded, read_only=True) as con:
        for name, flag in (("kratom", "kratom"), ("7-oh", "seven_oh")):
            hits = {r[0] for r in con.execute(
                "SELECT DISTINCT report_id FROM caers_substance_hits WHERE substance = $s",
                {"s": name}).fetchall()}  # fmt: skip
            expected = {r for r, t in series.reports.items() if getattr(t, flag)}
            assert expected and hits == expected
        look_alikes = con.execute(
            "SELECT count(*) FROM caers_substance_hits h JOIN caers_products p "
            "USING (report_id, product_seq) WHERE p.product_name IN "
            "('LAGERSTROEMIA SPECIOSA (BANABA) LEAF', 'MITRAGYNA PARVIFOLIA', 'KETUM GEL')"
        ).fetchone()
        assert look_alikes == (0,)
        n_look_alikes = con.execute(
            "SELECT count(*) FROM caers_products WHERE product_name IN "
            "('LAGERSTROEMIA SPECIOSA (BANABA) LEAF', 'MITRAGYNA PARVIFOLIA', 'KETUM GEL')"
        ).fetchone()
        assert n_look_alikes is not None and n_look_alikes[0] > 0


def _hand_file(tmp_path: Path) -> Path:
    """Seven reports: kratom in 1 and 2 as Suspect, in 3 as Concomitant only; report 1's kratom
    row is duplicated and report 2 has a second product (so it is on two rows)."""
    return _write(
        tmp_path / "hand.csv",
        HEADER_2017
        + _report("1", "KRATOM", "Suspect", "NAUSEA, SEIZURE")
        + _report("1", "KRATOM", "Suspect", "NAUSEA, SEIZURE")
        + _report("2", "Red Vein Kratom Powder", "Suspect", "SEIZURE")
        + _report("2", "COFFEE", "Concomitant", "SEIZURE")
        + _report("3", "PEANUT BUTTER", "Suspect", "NAUSEA")
        + _report("3", "MIT 45 kratom", "Concomitant", "NAUSEA")
        + _report("4", "PEANUT BUTTER", "Suspect", "NAUSEA")
        + _report("5", "PEANUT BUTTER", "Suspect", "RASH")
        + _report("6", "ENERGY DRINK", "Suspect", "SEIZURE, RASH")
        + _report("7", "HAIR DYE", "Suspect", "RASH"),
    )


def _signals_csv(db: Path, *extra: str) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(
        cli,
        [
            "signals",
            "--source",
            "caers",
            "--min-cases",
            "1",
            "--format",
            "csv",
            "--db",
            str(db),
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    start = result.output.index("term,")  # after the lines stderr adds to the mixed output
    return {r["term"]: r for r in csv.DictReader(io.StringIO(result.output[start:]))}


def test_signals_cells_by_hand(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    loaded = CliRunner().invoke(
        cli, ["load", "--source", "caers", str(_hand_file(tmp_path)), "--db", str(db)]
    )
    assert loaded.exit_code == 0, loaded.output
    assert "CAERS hand.csv: 10 rows read, 10 loaded, 0 quarantined (2004-2017Q2 layout" in (
        loaded.output
    )
    # Any role: reports 1, 2, 3 have kratom; N = 7.
    rows = _signals_csv(db)
    cells = {t: tuple(int(r[c]) for c in "abcd") for t, r in rows.items()}
    assert cells == {"SEIZURE": (2, 1, 1, 3), "NAUSEA": (2, 1, 1, 3)}  # RASH: a = 0, no row
    assert float(rows["SEIZURE"]["ror"]) == pytest.approx(2 * 3 / (1 * 1))
    assert float(rows["SEIZURE"]["expected"]) == pytest.approx(3 * 3 / 7)
    # Suspects only: report 3's kratom is concomitant (the library's counts, no prior fit).
    with connect(db, read_only=True) as con:
        counts = caers.counts(con, resolve("kratom"), caers.caers_roles("PS,SS"))
    assert counts.strata[["n", "n_exposed"]].values.tolist() == [[7, 2]]
    a = dict(zip(counts.cells["pt_key"], counts.cells["a"], strict=True))
    n_term = dict(zip(counts.cells["pt_key"], counts.cells["n_term"], strict=True))
    assert (a, n_term) == ({"NAUSEA": 1, "SEIZURE": 2}, {"NAUSEA": 3, "SEIZURE": 3})
    # i.e. SEIZURE a, b, c, d = 2, 0, 1, 4 and NAUSEA 1, 1, 2, 3


def test_faers_only_options_are_refused_with_caers(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["signals", "--source", "caers", "--groups", "--db", str(tmp_path / "x.duckdb")]
    )
    assert result.exit_code == 2
    assert "--groups: FAERS only, not with --source caers" in result.output


def test_caers_commands_need_a_caers_load(tmp_path: Path) -> None:
    db = tmp_path / "db.duckdb"
    connect(db).close()
    for command in ("cases", "signals"):
        result = CliRunner().invoke(cli, [command, "--source", "caers", "--db", str(db)])
        assert result.exit_code == 1
        assert "no CAERS export loaded" in result.output.strip().splitlines()[-1]


def _kratom_years(series: CaersSeries) -> Counter[int]:
    return Counter(t.created.year for t in series.reports.values() if t.kratom)


def test_side_by_side_counts(
    series: CaersSeries, series_db: tuple[Series, Path], tmp_path: Path
) -> None:
    db = tmp_path / "both.duckdb"
    shutil.copy(series_db[1], db)
    with connect(db) as con:
        caers.load(con, [series.folder])
        side = caers.caers_side_by_side(con, "kratom")
        faers = dict(con.execute(
            """SELECT CAST(left(c.initial_quarter, 4) AS INTEGER), count(DISTINCT c.caseid)
            FROM cases c JOIN substance_hits h USING (caseid) WHERE h.substance = 'kratom'
            GROUP BY 1""").fetchall())  # fmt: skip
        loaded_years = {
            int(q[:4]) for (q,) in con.execute("SELECT quarter FROM quarters").fetchall()
        }
    caers_years = _kratom_years(series)
    created = [t.created.year for t in series.reports.values()]
    span = range(min(created), max(created) + 1)
    years = [int(y) for y in side.by_year["year"]]
    assert set(span) | set(faers) | loaded_years == set(years)
    for year, row in zip(years, side.by_year.to_dict("records"), strict=True):
        if year in span:
            assert row["caers_reports"] == caers_years.get(year, 0)
        else:
            assert pd.isna(row["caers_reports"])  # outside the exports: not a zero
        if year in faers or year in loaded_years:
            assert row["faers_cases"] == faers.get(year, 0)
        else:
            assert pd.isna(row["faers_cases"])  # no FAERS quarter of that year: not a zero
    assert side.n_caers_reports == sum(caers_years.values())
    assert side.n_faers_cases == sum(faers.values())
    terms = Counter(s for t in series.reports.values() if t.kratom for s in t.symptoms)
    expected = sorted(terms.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    top = side.top_terms
    assert list(zip(top["caers_term"], top["caers_reports"], strict=True)) == expected
    assert top["caers_share"].iloc[0] == pytest.approx(expected[0][1] / side.n_caers_reports)
    assert top["faers_cases"].iloc[0] >= top["faers_cases"].iloc[-1]


def _snapshot(db: Path) -> dict[str, object]:
    with connect(db, read_only=True) as con:
        found = {}
        for table in TABLES:
            rows = con.execute(f"SELECT * FROM {table}").fetchall()
            found[table] = sorted(map(repr, rows))
        return found


def test_a_failed_load_leaves_the_database_as_it_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "db.duckdb"
    first = _hand_file(tmp_path)
    with connect(db) as con:
        caers.load(con, [first])
    before = _snapshot(db)
    other = tmp_path / "other"
    other.mkdir()
    good = _write(other / "a-good.csv", HEADER_2017 + _report("9", "KRATOM", "Suspect", "PAIN"))
    bad = _write(other / "b-bad.csv", "Report ID,Product,Shoe size\r\n")
    with connect(db) as con, pytest.raises(InputError, match=r"b-bad\.csv, line 1"):
        caers.load(con, [good, bad])
    assert _snapshot(db) == before

    # A failure after the writing began (here, in the clean rebuild) rolls everything back too.
    def broken(con: duckdb.DuckDBPyConnection) -> None:
        raise duckdb.IOException("disk gone")

    monkeypatch.setattr(caers, "rebuild", broken)
    with connect(db) as con, pytest.raises(Exception, match="nothing was loaded"):
        caers.load(con, [good, _hand_file(other)])
    assert _snapshot(db) == before


HOSTILE_PRODUCTS = (
    '=HYPERLINK("http://evil.example","KRATOM")',
    "<script>alert(1)</script> Kratom",
    "\x1b[2J\x1b[31mKRATOM\x1b[0m",
    "KRATOM\u2028\x85\u202eEXTRACT",  # separators that must not end a line, a bidi override
)


ESCAPE_TERM = "\x1b]0;pwned\x07HEADACHE"


def test_hostile_strings_survive_escaped(tmp_path: Path) -> None:
    text = HEADER_2017 + "".join(
        _report(str(i), p, "Suspect", "@SUM(1+1), <b>RASH</b>, \x1b]0;pwned\x07HEADACHE")
        for i, p in enumerate(HOSTILE_PRODUCTS)
    )
    db = tmp_path / "db.duckdb"
    with connect(db) as con:
        caers.load(con, [_write(tmp_path / "hostile.csv", text)])
        side = caers.caers_side_by_side(con, "kratom")
    assert set(side.top_terms["caers_term"]) == {"@SUM(1+1)", "<b>RASH</b>", ESCAPE_TERM}
    runner = CliRunner()
    base = ["cases", "--source", "caers", "--db", str(db), "--format"]
    as_csv = runner.invoke(cli, [*base, "csv"]).output
    rows = list(csv.DictReader(io.StringIO(as_csv)))
    assert len(rows) == len(HOSTILE_PRODUCTS)
    matched = {r["matched"] for r in rows}
    assert "'" + HOSTILE_PRODUCTS[0] in matched  # a spreadsheet shows it, never runs it
    table = runner.invoke(cli, [*base, "table"]).output
    assert "\x1b" not in table and "\u202e" not in table
    as_json = json.loads(runner.invoke(cli, [*base, "json"]).output)
    assert {r["matched"][0] for r in as_json} == set(HOSTILE_PRODUCTS)  # JSON keeps the data
    # Three hostile terms and one product: too few pairs for a prior, so EBGM is unavailable.
    signals = runner.invoke(
        cli, ["signals", "--source", "caers", "--db", str(db), "--min-cases", "1",
              "--format", "csv"])  # fmt: skip
    assert "\n'@SUM(1+1)," in signals.output
    assert "EBGM unavailable" in signals.output and "fewer than 5" in signals.output
    shown = runner.invoke(
        cli, ["signals", "--source", "caers", "--db", str(db), "--min-cases", "1",
              "--format", "table"])  # fmt: skip
    assert "\x1b" not in shown.output and "^[]0;pwned^GHEADACHE" in shown.output
    assert "CAERS (never pooled with FAERS)" in shown.output


def test_every_caers_table_and_column_is_documented(loaded: Path) -> None:
    with connect(loaded, read_only=True) as con:
        frame = schema(con)
    frame = frame[frame["table"].str.startswith("caers_")]
    assert set(frame["table"]) == set(TABLES)
    assert {t for t in schema_docs.TABLES if t.startswith("caers_")} == set(TABLES)
    undocumented = frame[frame["description"] == ""]
    assert undocumented.empty, f"add to schema_docs.py: {undocumented[['table', 'column']]}"
    for table, columns in frame.groupby("table")["column"]:
        assert set(schema_docs.COLUMNS[str(table)]) == set(columns), table


def test_library_errors(tmp_path: Path) -> None:
    with connect(tmp_path / "db.duckdb") as con:
        with pytest.raises(NoDataError, match="no CAERS export loaded"):
            caers.cases(con, resolve("kratom"))
        with pytest.raises(InputError, match="no such file or folder"):
            caers.load(con, [tmp_path / "missing.csv"])

"""The quarterly report on the shared multi-era series: a complete, self-contained, reproducible
folder whose numbers agree with the database and with each other, and whose comparison with a
quarter that is not the calendar-previous one says so."""

from __future__ import annotations

import csv
import json
import re
import shutil
from html.parser import HTMLParser
from itertools import pairwise
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from surveillance import stats
from surveillance.asof import asof_counts
from surveillance.cli import cli
from surveillance.db import connect
from surveillance.definitions import AGE_GROUPS, CRITERIA, OUTCOMES
from surveillance.report import (
    ZERO_MARK,
    _earlier_tables,
    report_is_current,
    usable_table,
    write_report,
)
from surveillance.signals import signals
from surveillance.substances import load_substance

QUARTER = "2023Q1"  # the series' latest quarter; 2019Q2 is the loaded quarter before it


class _Page(HTMLParser):
    """Images, URLs, ids, and the text of each table row of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[dict[str, str | None]] = []
        self.urls: list[str] = []
        self.ids: set[str] = set()
        self.rows: dict[str, list[list[str]]] = {}
        self._table: list[str] = []
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values)
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name] or "")
        if values.get("id"):
            self.ids.add(values["id"] or "")
        if tag == "table":
            self._table.append(values.get("id") or "")
            self.rows.setdefault(self._table[-1], [])
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table.pop()
        elif tag == "tr" and self._row is not None and self._table:
            self.rows[self._table[-1]].append(self._row)
            self._row = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _page(report: Path) -> _Page:
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    return page


def _csv(report: Path, name: str) -> list[dict[str, str]]:
    with (report / "tables" / f"{name}.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def report(series_db, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / QUARTER
    with connect(series_db[1]) as con:
        write_report(con, QUARTER, out=out)
    return out


def test_folder_is_complete(report: Path) -> None:
    for name in ("index.html", "report.md", "metadata.json"):
        assert (report / name).stat().st_size > 0
    for table in (
        "signals",
        "signals_suspect",
        "this_quarter",
        "new_cases",
        "cases",
        "cases_outcomes",
        "cases_polysubstance",
        "cases_product_type",
        "trends_by_quarter",
        "co_reported",
        "cumulative_signals",
    ):
        assert (report / "tables" / f"{table}.csv").stat().st_size > 0, table
    pngs = sorted((report / "figures").glob("*.png"))
    assert len(pngs) >= 9 and len(list((report / "figures").glob("*.svg"))) == len(pngs)
    assert not [p for p in report.parent.iterdir() if p.name.startswith(".")]


def test_index_is_self_contained_and_accessible(report: Path) -> None:
    page = _page(report)
    srcs = [img.get("src") or "" for img in page.images]
    assert srcs and all(src.startswith("data:image/png;base64,") for src in srcs)
    assert len(srcs) == len(list((report / "figures").glob("*.png")))
    assert all((img.get("alt") or "").strip() for img in page.images)
    external = [u for u in page.urls if not (u.startswith("#") or u.startswith("data:"))]
    assert external == []
    sections = {"key-findings", "this-quarter", "changes", "signals", "cases", "characteristics"}
    assert sections | {"trends", "methods", "vintage", "synthetic"} <= page.ids
    text = (report / "index.html").read_text(encoding="utf-8")
    assert '<html lang="en">' in text and "SYNTHETIC DATA" in text
    assert "not evidence that the substance causes" in text
    heads = re.findall(
        r"<th[^>]*>(.*?)</th>", text.split('id="signal-table"')[1].split("</thead>")[0]
    )
    assert heads and all("<button" in h for h in heads)
    assert text.count('aria-sort="none"') >= len(heads)
    levels = [int(n) for n in re.findall(r"<h([1-6])[ >]", text)]
    assert levels[0] == 1 and all(b <= a + 1 for a, b in pairwise(levels))


def test_metadata_matches_the_database(report: Path, series_db) -> None:
    meta = json.loads((report / "metadata.json").read_text(encoding="utf-8"))
    with connect(series_db[1]) as con:
        quarters = con.execute(
            "SELECT quarter, zip_sha256 FROM quarters WHERE quarter <= $q ORDER BY 1",
            {"q": QUARTER},
        ).fetchall()
        assert report_is_current(con, report)
    assert [(q["quarter"], q["zip_sha256"]) for q in meta["quarters_loaded"]] == quarters
    assert meta["term_file_version"] == load_substance("kratom").version
    assert meta["substance"] == "kratom"
    assert meta["dedup_mode"] == "fda" and meta["synthetic"] is True
    assert meta["thresholds"]["eb05_threshold"] == 2.0 and "generated_at" in meta
    assert meta["previous_quarter"] == "2019Q2"


def test_comparison_gap_is_said_visibly(report: Path) -> None:
    notice = "ompared with 2019Q2, the previous loaded quarter; 2019Q3-2022Q4 are not loaded"
    html = (report / "index.html").read_text(encoding="utf-8")
    assert 'id="comparison-notice"' in html
    assert notice in html.split('id="comparison-notice"')[1].split("</p>")[0]
    assert notice in html.split('id="findings-text"')[1].split("</p>")[0]
    assert f"**C{notice}.**" in (report / "report.md").read_text(encoding="utf-8")
    assert json.loads((report / "metadata.json").read_text())["comparison_notice"].endswith(
        "2019Q3-2022Q4 are not loaded"
    )


def test_numbers_agree_across_text_tables_and_csv(report: Path) -> None:
    rows = {r["measure"]: r for r in _csv(report, "this_quarter")}
    new = int(rows["New cases (initial FDA receipt in the quarter)"][QUARTER])
    deaths = int(rows["New cases with a fatal outcome"][QUARTER])
    serious = int(rows["New serious cases"][QUARTER])
    followups = int(rows["Follow-up reports received for earlier cases"][QUARTER])
    listing = _csv(report, "new_cases")
    assert new == len(listing) > 0
    assert deaths == sum(r["outcome"] == "death" for r in listing)
    page = _page(report)
    html_table = {r[0]: r[1:] for r in page.rows["table-this-quarter"][1:]}
    assert html_table["New cases (initial FDA receipt in the quarter)"][0] == str(new)
    assert len(page.rows["table-new-cases"]) - 1 == new
    assert {f"case-{r['caseid']}" for r in listing} <= page.ids
    findings = (report / "index.html").read_text(encoding="utf-8").split('id="findings-text">')[1]
    expected = (
        f"{QUARTER}: {new} new kratom cases (initial FDA receipt in {QUARTER}), {deaths} with a "
        f"fatal outcome and {serious} serious; {followups} follow-up reports"
    )
    assert findings.startswith(expected)
    md = (report / "report.md").read_text(encoding="utf-8")
    assert f"> {expected}" in md
    assert f"| New cases (initial FDA receipt in the quarter) | {new} |" in md


def test_case_tables_agree_with_the_database(report: Path, series_db) -> None:
    with connect(series_db[1]) as con:
        kratom, suspect, seven_oh = con.execute(
            """SELECT count(DISTINCT caseid),
                count(DISTINCT caseid) FILTER (WHERE upper(role_cod) IN ('PS', 'SS')),
                count(DISTINCT caseid) FILTER (WHERE caseid IN (
                    SELECT caseid FROM substance_hits WHERE substance = '7-oh'))
            FROM substance_hits WHERE substance = 'kratom'
              AND caseid IN (SELECT caseid FROM cases)"""
        ).fetchone()
    assert len(_csv(report, "cases")) == kratom
    outcomes = _csv(report, "cases_outcomes")
    assert [r["outcome"] for r in outcomes] == list(OUTCOMES)
    assert sum(int(r["n_cases"]) for r in outcomes) == kratom
    assert sum(int(r["n_cases_suspect"]) for r in outcomes) == suspect
    assert abs(sum(float(r["pct"]) for r in outcomes) - 100) < 0.5
    ages = _csv(report, "cases_age_group")
    assert [r["age group"] for r in ages][:-1] == list(AGE_GROUPS)
    assert sum(int(r["n_cases"]) for r in ages) == kratom
    product = {r["product"]: int(r["n_cases"]) for r in _csv(report, "cases_product_type")}
    assert product["7-OH product (7-oh term file)"] == seven_oh
    assert sum(product.values()) == kratom
    poly = {r["co-reported"]: r for r in _csv(report, "cases_polysubstance")}
    cases = _csv(report, "cases")
    with_suspect = sum(bool(r["co_suspect_drugs"]) for r in cases)
    assert int(poly["another suspect drug (PS/SS)"]["n_cases"]) == with_suspect
    assert int(poly["an opioid (any role)"]["n_cases"]) <= kratom


def test_compact_signal_table(report: Path) -> None:
    signals = _csv(report, "signals")
    assert "zero_corrected" in signals[0]
    page = _page(report)
    rows = page.rows["signal-table"]
    assert rows[0] == [
        "term",
        "a",
        "E",
        "PRR (95% CI)",
        "ROR (95% CI)",
        "IC025",
        "EBGM (EB05-EB95)",
        "p (BH)",
        "criteria",
    ]
    assert len(rows) - 1 == len(signals)
    by_term = {r[0].rstrip(ZERO_MARK): r for r in rows[1:]}
    for s in signals:
        row = by_term[s["term"]]
        assert row[0].endswith(ZERO_MARK) == (s["zero_corrected"] == "True")
        assert row[1] == s["a"]
        expected_marks = " ".join(c.mark if s[c.flag] == "True" else "-" for c in CRITERIA)
        assert row[-1] == expected_marks
        p = float(s["p_adj"])
        assert row[7] == ("<0.001" if p < 0.001 else f"{p:.2g}")
        assert float(row[3].split(" ")[0].replace(",", "")) == pytest.approx(
            float(s["prr"]), rel=6e-3
        )
    # Full precision stays in the CSV; the compact table rounds to three significant figures.
    assert any(len(s["prr"].replace(".", "").lstrip("0")) > 4 for s in signals)
    assert 'id="signals-full"' in (report / "index.html").read_text(encoding="utf-8")


def test_methods_follow_readus_pv(report: Path) -> None:
    methods = (report / "index.html").read_text(encoding="utf-8").split('id="methods"')[1]
    for phrase in (
        "READUS-PV",
        "Extraction date",
        "dedup mode",
        f"term file kratom.toml version {load_substance('kratom').version}",
        "Comparator: all other cases in FAERS",
        "Suspect-only (PS/SS)",
        "No denominators",
        "adulteration",
        "Polysubstance use",
        "2017",
        "7-OH products",
        "SYNTHETIC DATA",
        *(c.rule.replace(">", "&gt;") for c in CRITERIA),
    ):
        assert phrase in methods, phrase


@pytest.mark.slow
def test_same_database_same_tables_and_figures(report: Path, series_db, tmp_path: Path) -> None:
    """Also: --quarter defaults to the latest loaded quarter."""
    again = tmp_path / "again"
    result = CliRunner().invoke(cli, ["report", "--db", str(series_db[1]), "--out", str(again)])
    assert result.exit_code == 0, result.output
    assert json.loads((again / "metadata.json").read_text())["quarter"] == QUARTER
    for sub in ("tables", "figures"):
        for path in sorted((report / sub).iterdir()):
            assert path.read_bytes() == (again / sub / path.name).read_bytes(), path.name


@pytest.mark.parametrize(
    ("quarter", "status", "message"),
    [
        ("2019Q4", 1, "Error: 2019Q4 is not loaded; the latest loaded quarter is 2023Q1"),
        ("bogus", 2, "--quarter: not a FAERS quarter"),
    ],
)
def test_a_quarter_not_loaded_is_refused(
    series_db, tmp_path: Path, quarter: str, status: int, message: str
) -> None:
    out = tmp_path / "r"
    result = CliRunner().invoke(
        cli, ["report", "--db", str(series_db[1]), "--quarter", quarter, "--out", str(out)]
    )
    assert result.exit_code == status
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_comparison_tables_equal_signals_runs_under_the_reports_prior(series_con) -> None:
    """The comparison quarters' tables come from the trends' cumulative counts, and are the
    tables a signals run as of that quarter gives under the report quarter's prior."""
    kratom = load_substance("kratom")
    now = signals(series_con, kratom, min_cases=3)
    counts = asof_counts(series_con, kratom, now.roles)
    quarters = ("2019Q2", "2012Q2", None)
    shown = _earlier_tables(series_con, counts, now, quarters)
    assert shown[None] is None
    for quarter in quarters[:2]:
        run = signals(series_con, kratom, through=quarter, min_cases=3, prior=now.prior)
        table = shown[quarter]
        assert table is not None and len(table) > 0
        pd.testing.assert_frame_equal(table, usable_table(run))


def _fit(n: np.ndarray, e: np.ndarray) -> stats.Prior:
    """A converged stand-in for the prior fit that differs with the table it is fitted on."""
    return stats.Prior(
        0.2 + len(n) / 1e5, 0.1, 2.0, 4.0, 0.1, 0.0, True, len(n), len(n), "test", 0.0
    )


@pytest.mark.slow
def test_an_earlier_quarters_report_has_one_prior(
    series_db, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report on 2019Q2 fits its prior through 2019Q2, not on the latest data: its signal
    table and its cumulative trends agree at 2019Q2, EBGM included (trends use that prior)."""
    db = tmp_path / "db.duckdb"
    shutil.copy(series_db[1], db)
    monkeypatch.setattr(stats, "fit_prior", _fit)
    out = tmp_path / "2019Q2"
    with connect(db) as con:
        con.execute("DROP TABLE IF EXISTS signal_priors")
        write_report(con, "2019Q2", out=out)
        latest = signals(con, load_substance("kratom"), min_cases=1)
    meta = json.loads((out / "metadata.json").read_text(encoding="utf-8"))
    assert meta["ebgm_available"] and meta["prior"]["alpha1"] != latest.prior.alpha1
    shown = {r["term"]: r for r in _csv(out, "signals")}
    rows = [
        r
        for r in _csv(out, "cumulative_signals")
        if r["quarter"] == "2019Q2" and r["term"] in shown
    ]
    assert rows
    for row in rows:
        for column in ("a", "ror", "ic025", "ebgm", "eb05", "signal_ebgm", "signal_ror"):
            assert row[column] == shown[row["term"]][column], (row["term"], column)


def test_sensitivity_section_agrees_with_the_signal_tables(report: Path) -> None:
    """The main analysis of section 4 is the signals table's cells (PTs) and the event-group
    table's (groups); each compared term has one row and one verdict in the page."""
    rows = _csv(report, "sensitivity")
    main = {(r["term"], r["term_kind"]): r for r in rows if r["analysis"] == "main"}
    pts = {r["term"]: r for r in _csv(report, "signals")}
    groups = {r["term"]: r for r in _csv(report, "signals_groups")}
    assert main and any(kind == "group" for _, kind in main)
    for (term, kind), r in main.items():
        source = pts[term] if kind == "pt" else groups[term]
        assert [r[c] for c in "abcd"] == [source[c] for c in "abcd"], term
    # The generated series reports herbal products: the comparator ran, on fewer cases.
    comparator = {
        (r["term"], r["term_kind"]): r for r in rows if r["analysis"] == "natural_products"
    }
    assert comparator.keys() == main.keys()
    for key, r in comparator.items():
        assert int(r["c"]) + int(r["d"]) < int(main[key]["c"]) + int(main[key]["d"])
    page = (report / "index.html").read_text(encoding="utf-8")
    table = page.split('id="sensitivity-table"', 1)[1].split("</table>", 1)[0]
    assert table.count("<tr>") == len(main) + 1  # the heading row
    for heading in ("Main", "Suspect only", "Natural-product comparator", "MH-adjusted"):
        assert f">{heading}</th>" in table
    assert table.count("Robust: ") + table.count("Not robust: ") + table.count("Not a signal") == (
        len(main)
    )
    assert 'id="stratified-table"' in page and 'id="group-table"' in page
    md = (report / "report.md").read_text(encoding="utf-8")
    assert "## 4. Sensitivity analyses" in md and "### Event groups" in md


def test_case_summaries_alerts_and_sources_are_in_the_report(report: Path, series_db) -> None:
    """Sections 5, 7 and 8: the sequential alerts, co-suspects, subsets, time to onset and
    dechallenge are the library's tables (as CSV), shown in the page; the onset figure is
    written; without a CAERS export the page says so."""
    from surveillance.extract import resolve
    from surveillance.polysubstance import co_suspect_profile
    from surveillance.sequential import sequential

    with connect(series_db[1]) as con:
        alerts = sequential(con, resolve("kratom")).alerts
        profile = co_suspect_profile(con, resolve("kratom"))
    shown = _csv(report, "sequential_alerts")
    assert [(r["term"], r["method"], r["alert_quarter"]) for r in shown] == list(
        zip(alerts["term"], alerts["method"], alerts["alert_quarter"], strict=True)
    )
    classes = _csv(report, "co_suspects")
    assert [(r["class"], int(r["n_cases"])) for r in classes] == list(
        zip(profile["class"], profile["n_cases"], strict=True)
    )
    for name in ("subset_shares", "onset", "dechallenge"):
        assert _csv(report, name), name
    page = (report / "index.html").read_text(encoding="utf-8")
    for anchor in ("alerts-table", "co-suspects-table", "subsets-table", "onset-table"):
        assert f'id="{anchor}"' in page, anchor
    assert "No CAERS export is loaded" in page
    assert (report / "figures" / "time_to_onset.png").stat().st_size > 0

"""The quarterly report: a complete, self-contained, reproducible folder whose first section
finds a signal planted between two quarters."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.db import connect
from surveillance.pipeline import load, rebuild
from surveillance.report import report_is_current, write_report
from surveillance.substances import load_substance
from surveillance.synthetic import PTS, generate_series

PLANTED = "QT prolongation"  # a real MedDRA PT the generator never writes


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.urls: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "img":
            self.images.append(values.get("src") or "")
        for name in ("src", "href"):
            if values.get(name):
                self.urls.append(values[name] or "")
        if values.get("id"):
            self.ids.add(values["id"] or "")


@pytest.fixture(scope="module")
def report(series_db, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "2023Q1"
    with connect(series_db[1]) as con:
        write_report(con, "2023Q1", out=out)
    return out


def test_folder_is_complete(report: Path) -> None:
    for name in ("index.html", "report.md", "metadata.json"):
        assert (report / name).stat().st_size > 0
    for table in ("signals", "cases", "trends_by_quarter", "co_reported", "cumulative_signals"):
        assert (report / "tables" / f"{table}.csv").stat().st_size > 0
    pngs = sorted((report / "figures").glob("*.png"))
    assert len(pngs) >= 9 and len(list((report / "figures").glob("*.svg"))) == len(pngs)


def test_index_is_self_contained(report: Path) -> None:
    page = _Page()
    page.feed((report / "index.html").read_text(encoding="utf-8"))
    assert page.images and all(src.startswith("data:image/png;base64,") for src in page.images)
    assert len(page.images) == len(list((report / "figures").glob("*.png")))
    external = [u for u in page.urls if not (u.startswith("#") or u.startswith("data:"))]
    assert external == []
    assert {"changes", "signals", "trends", "cases", "vintage", "synthetic"} <= page.ids
    text = (report / "index.html").read_text(encoding="utf-8")
    assert "not evidence that the substance causes" in text and "SYNTHETIC DATA" in text
    assert 'class="sortable"' in text


def test_metadata_matches_the_database(report: Path, series_db) -> None:
    meta = json.loads((report / "metadata.json").read_text(encoding="utf-8"))
    with connect(series_db[1]) as con:
        quarters = con.execute(
            "SELECT quarter, zip_sha256 FROM quarters WHERE quarter <= '2023Q1' ORDER BY 1"
        ).fetchall()
        assert report_is_current(con, report)
    assert [(q["quarter"], q["zip_sha256"]) for q in meta["quarters_loaded"]] == quarters
    assert meta["term_file_version"] == load_substance("kratom").version
    assert meta["substance"] == "kratom"
    assert meta["dedup_mode"] == "fda" and meta["synthetic"] is True
    assert meta["thresholds"]["eb05_threshold"] == 2.0 and "generated_at" in meta


def test_same_database_same_tables_and_figures(report: Path, series_db, tmp_path: Path) -> None:
    again = tmp_path / "again"
    result = CliRunner().invoke(
        cli, ["report", "--db", str(series_db[1]), "--quarter", "2023Q1", "--out", str(again)]
    )
    assert result.exit_code == 0, result.output
    for sub in ("tables", "figures"):
        for path in sorted((report / sub).iterdir()):
            assert path.read_bytes() == (again / sub / path.name).read_bytes(), path.name


def test_what_changed_finds_a_planted_signal(tmp_path: Path) -> None:
    assert PLANTED not in PTS
    generate_series(["2024Q1", "2024Q2"], tmp_path / "zips", n_cases=300, seed=21)
    with connect(tmp_path / "db.duckdb") as con:
        load(con, [tmp_path / "zips"])
        # Every kratom case first reported in 2024Q2 also reports the planted term.
        con.execute(
            """INSERT INTO raw_reac (source, quarter, source_file, source_line, primaryid,
                caseid, pt)
            SELECT DISTINCT c.source, c.quarter, 'planted', 0, c.primaryid, c.caseid, $pt
            FROM cases c JOIN substance_hits h USING (caseid)
            WHERE h.substance = 'kratom' AND c.quarter = '2024Q2'""",
            {"pt": PLANTED},
        )
        rebuild(con)
        out = write_report(con, "2024Q2", out=tmp_path / "report")
    text = (out / "index.html").read_text(encoding="utf-8")
    section = text.split('id="changes"')[1].split('id="signals"')[0]
    new_part = section.split("New signals")[1].split("Lost signals")[0]
    assert PLANTED in new_part
    assert PLANTED not in section.split("Lost signals")[1].split("moved most")[0]

"""The report on two generated quarters with planted ground truth: a new signal, a case whose
initial receipt is older than its first loaded version, a follow-up of an earlier case, hostile
strings (script, Markdown table breaker, javascript: link) in a reaction term, a drug name and a
zip file name; and the report's behaviour when a run is killed, when EBGM is unavailable and when
no case involves the substance. Figures are left out here (test_report covers them)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import surveillance.report as report_module
from surveillance.db import connect
from surveillance.errors import NoDataError
from surveillance.pipeline import load, rebuild
from surveillance.report import clean_stale_work, md_escape, write_report
from surveillance.synthetic import PTS, generate_series

PLANTED = "QT prolongation"  # a real MedDRA PT the generator never writes
SCRIPT = "<script>alert(1)</script>"
BREAKER = "| x |"
LINK = "[a](javascript:alert(1))"
HOSTILE_DRUG = f"ZZDRUG {BREAKER} {LINK}"
QUARTER = "2024Q2"


def _initial_quarter(text: str | None) -> str | None:
    if text and re.fullmatch(r"\d{6}(\d{2})?", text) and 1 <= int(text[4:6]) <= 12:
        return f"{text[:4]}Q{(int(text[4:6]) - 1) // 3 + 1}"
    return None


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Two quarters with every plant, rebuilt, and the 2024Q2 report written from them."""
    assert PLANTED not in PTS
    tmp = tmp_path_factory.mktemp("planted")
    generate_series(["2024Q1", QUARTER], tmp / "zips", n_cases=300, seed=21)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
        kratom_new = """SELECT DISTINCT c.caseid, c.primaryid, c.source, c.quarter FROM cases c
            JOIN substance_hits h USING (caseid) WHERE h.substance = 'kratom'"""
        # Every kratom case whose latest version came in 2024Q2 reports the planted term and
        # the hostile term, and takes a hostile co-suspect drug.
        for pt in (PLANTED, SCRIPT):
            con.execute(
                f"""INSERT INTO raw_reac (source, quarter, source_file, source_line, primaryid,
                    caseid, pt)
                SELECT source, quarter, 'planted', 0, primaryid, caseid, $pt
                FROM ({kratom_new}) WHERE quarter = $q""",
                {"pt": pt, "q": QUARTER},
            )
        con.execute(
            f"""INSERT INTO raw_drug (source, quarter, source_file, source_line, primaryid,
                caseid, drug_seq, role_cod, drugname)
            SELECT source, quarter, 'planted', 0, primaryid, caseid, '999', 'SS', $drug
            FROM ({kratom_new}) WHERE quarter = $q""",
            {"drug": HOSTILE_DRUG, "q": QUARTER},
        )
        con.execute("UPDATE quarters SET zip_name = $z", {"z": f"{SCRIPT}{BREAKER}{LINK}.zip"})
        one_version = """SELECT caseid FROM raw_demo GROUP BY caseid HAVING count(*) = 1
            AND min(quarter) = $q AND caseid IN (SELECT caseid FROM substance_hits
                WHERE substance = 'kratom') ORDER BY caseid LIMIT 1"""
        # A case first loaded in 2024Q2 whose initial FDA receipt was in 2023Q3: not new.
        old_case = con.execute(one_version, {"q": QUARTER}).fetchone()[0]
        con.execute(
            "UPDATE raw_demo SET init_fda_dt = '20230815' WHERE caseid = $c", {"c": old_case}
        )
        # A case first received in 2024Q1 gets a follow-up version in 2024Q2: not new either.
        followed = con.execute(one_version, {"q": "2024Q1"}).fetchone()[0]
        for table in ("raw_demo", "raw_drug", "raw_reac", "raw_outc"):
            version = (
                "CAST(try_cast(caseversion AS INTEGER) + 1 AS VARCHAR) AS caseversion, "
                if table == "raw_demo"
                else ""
            )
            con.execute(
                f"""INSERT INTO {table} SELECT * REPLACE ($q AS quarter,
                    primaryid || '9' AS primaryid, {version} 'planted' AS source_file)
                FROM {table} WHERE caseid = $c""",
                {"q": QUARTER, "c": followed},
            )
        rebuild(con)
        demo = con.execute(
            "SELECT caseid, source, primaryid, quarter, init_fda_dt FROM raw_demo"
        ).fetchdf()
        kratom = {
            r[0]
            for r in con.execute(
                "SELECT DISTINCT caseid FROM substance_hits WHERE substance = 'kratom' "
                "AND caseid IN (SELECT caseid FROM cases)"
            ).fetchall()
        }
        steps: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr("surveillance.plots.plot_all", lambda series, out: [])
            out = write_report(con, QUARTER, out=tmp / "out" / QUARTER, progress=steps.append)
    yield {
        "db": db,
        "out": out,
        "steps": steps,
        "old_case": old_case,
        "followed": followed,
        "demo": demo,
        "kratom": kratom,
        "tmp": tmp,
    }


def _csv(out: Path, name: str) -> list[dict[str, str]]:
    with (out / "tables" / f"{name}.csv").open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_new_cases_count_initial_receipt(planted: dict[str, Any]) -> None:
    demo = planted["demo"]
    demo = demo[demo["caseid"].isin(planted["kratom"])].copy()
    demo["init_q"] = demo["init_fda_dt"].map(_initial_quarter)
    first = demo.groupby("caseid").agg(init_q=("init_q", "min"), first_q=("quarter", "min"))
    initial = first["init_q"].fillna(first["first_q"])
    versions = demo.groupby(["caseid", "source", "primaryid"])["quarter"].max().reset_index()
    versions["initial"] = versions["caseid"].map(initial)
    expected_new = sorted(initial.index[initial == QUARTER])
    expected_followups = int(
        ((versions["quarter"] == QUARTER) & (versions["initial"] < QUARTER)).sum()
    )
    listing = _csv(planted["out"], "new_cases")
    assert sorted(r["caseid"] for r in listing) == expected_new
    assert planted["old_case"] not in expected_new and planted["followed"] not in expected_new
    rows = {r["measure"]: r for r in _csv(planted["out"], "this_quarter")}
    followups = int(rows["Follow-up reports received for earlier cases"][QUARTER])
    assert followups == expected_followups >= 1
    assert int(rows["New cases (initial FDA receipt in the quarter)"]["previous (2024Q1)"]) == (
        int((initial == "2024Q1").sum())
    )


def test_what_changed_finds_the_planted_signal(planted: dict[str, Any]) -> None:
    text = (planted["out"] / "index.html").read_text(encoding="utf-8")
    assert 'id="comparison-notice"' not in text and "not loaded" not in text  # 2024Q1 is loaded
    section = text.split('id="changes"')[1].split('id="signals"')[0]
    new, lost = section.split("<h3>New signals</h3>")[1].split("<h3>Lost signals</h3>")
    assert PLANTED in new
    assert PLANTED not in lost.split("moved most")[0]
    assert PLANTED in text.split('id="findings-text"')[1].split("</p>")[0]
    rows = {r["measure"]: r for r in _csv(planted["out"], "this_quarter")}
    assert int(rows["New signals (term and criterion)"][QUARTER]) >= 1


class _Scripts(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_script = tag == "script"
        if tag == "script":
            self.scripts.append("")
        self.links += [v or "" for k, v in attrs if k in ("href", "src")]

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def test_html_escapes_everything_from_the_data(planted: dict[str, Any]) -> None:
    html = (planted["out"] / "index.html").read_text(encoding="utf-8")
    page = _Scripts()
    page.feed(html)
    assert len(page.scripts) == 1 and "alert" not in page.scripts[0]
    assert not [u for u in page.links if u.strip().lower().startswith("javascript")]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert f"&lt;script&gt;alert(1)&lt;/script&gt;{BREAKER}{LINK}.zip" in html
    assert HOSTILE_DRUG.upper() in html  # the co-suspect drug in the listing, as text


def _cells(line: str) -> int:
    """Cells of a Markdown table row: pipes not escaped by a backslash, minus one."""
    return len(re.findall(r"(?<!\\)\|", line)) - 1


def test_markdown_tables_hold_and_links_are_dead(planted: dict[str, Any]) -> None:
    md = (planted["out"] / "report.md").read_text(encoding="utf-8")
    assert "<script" not in md.lower() and "javascript:" not in md.lower()
    assert not re.search(r"(?<!\\)\]\((?!figures/)", md)
    lines = md.splitlines()
    checked = 0
    for i, line in enumerate(lines):
        if re.fullmatch(r"\|(-+:?\|)+", line):
            width = _cells(lines[i - 1])
            j = i + 1
            while j < len(lines) and lines[j].startswith("|"):
                assert _cells(lines[j]) == width, lines[j]
                checked += 1
                j += 1
    assert checked > 20
    assert "&lt;script&gt;alert\\(1\\)" in md or "&lt;script&gt;alert(1)" in md


def test_md_escape() -> None:
    assert md_escape("a | b") == "a \\| b"
    assert md_escape("<b>&") == "&lt;b&gt;&amp;"
    assert "javascript:" not in md_escape("[x](JavaScript :alert(1))").lower().replace(" ", "")
    assert md_escape("`code` [x]") == "\\`code\\` \\[x\\]"
    assert md_escape("two\nlines") == "two lines"


def test_progress_is_told_each_step(planted: dict[str, Any]) -> None:
    steps = planted["steps"]
    assert steps[0] == f"signals through {QUARTER}" and steps[-1] == "pages"
    assert {"cases", "trends", "tables", "figures"} <= set(steps)


@pytest.mark.slow
def test_ebgm_unavailable_is_shown_and_not_counted(
    planted: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = report_module.signals

    def unconverged(*args: Any, **kwargs: Any) -> Any:
        run = real(*args, **kwargs)
        return dataclasses.replace(run, prior=dataclasses.replace(run.prior, converged=False))

    monkeypatch.setattr(report_module, "signals", unconverged)
    monkeypatch.setattr("surveillance.plots.plot_all", lambda series, out: [])
    with connect(planted["db"]) as con:
        out = write_report(con, QUARTER, out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    assert 'id="ebgm-warning"' in html.split("<h1>")[0]
    assert "EBGM unavailable" in html.split('id="findings-text"')[1].split("</p>")[0]
    body = html.split('id="signal-table"')[1].split("</table>")[0]
    assert body.count(">unavailable<") == len(_csv(out, "signals")) > 0
    assert not re.search(r">[PRI -]*E</td>", body)
    rows = _csv(out, "signals")
    for row in rows:
        assert row["ebgm"] == "" and row["eb05"] == "" and row["signal_ebgm"] == "False"
    lower = [float(r["ror_lower"]) for r in rows]
    assert lower == sorted(lower, reverse=True)  # EBGM does not order the table
    assert "**EBGM unavailable.**" in (out / "report.md").read_text(encoding="utf-8")


def test_no_exposed_case_still_writes_a_report(
    planted: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    def none_exposed(con: Any, s: Any, through: str, **kwargs: Any) -> Any:
        raise NoDataError(f"no {s.name} cases through {through}")

    def no_trends(*args: Any, **kwargs: Any) -> Any:
        raise NoDataError("no 7-oh cases through 2024Q2")

    monkeypatch.setattr(report_module, "signals", none_exposed)
    monkeypatch.setattr("surveillance.trends.trends", no_trends)
    with connect(planted["db"]) as con:
        out = write_report(con, "2024Q1", substance="7-oh", out=tmp_path / "r")
    html = (out / "index.html").read_text(encoding="utf-8")
    assert "no 7-oh cases through 2024Q1" in html.split('id="findings-text"')[1].split("</p>")[0]
    assert "No signal analysis: no 7-oh cases through 2024Q1." in html
    assert 'id="signal-table"' not in html
    assert "no 7-oh cases through 2024Q1" in (out / "report.md").read_text(encoding="utf-8")
    assert json.loads((out / "metadata.json").read_text())["no_cases"] == (
        "no 7-oh cases through 2024Q1"
    )
    assert not (out / "tables" / "signals.csv").exists()


def test_stale_work_folders_are_removed(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".2024Q2.report-{dead.pid}-abc123"
    mine = tmp_path / f".2024Q2.report-{os.getpid()}-xyz"
    other = tmp_path / ".hidden-user-folder"
    for folder in (stale, mine, other):
        folder.mkdir()
        (folder / "index.html").write_text("x")
    assert clean_stale_work(tmp_path) == [stale]
    assert not stale.exists() and mine.exists() and other.exists()


_KILLED_RUN = """
import sys, time
from pathlib import Path
import surveillance.plots
from surveillance.db import connect
from surveillance.report import write_report

def stall(message):
    if message == "tables":
        Path(sys.argv[3]).write_text("started")
        time.sleep(600)

surveillance.plots.plot_all = lambda series, out: []
with connect(Path(sys.argv[1])) as con:
    write_report(con, "2024Q2", out=Path(sys.argv[2]), progress=stall)
"""


@pytest.mark.slow
def test_a_killed_report_leaves_no_work_folder_after_the_next_run(
    planted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out, marker = tmp_path / "reports" / QUARTER, tmp_path / "started"
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILLED_RUN, str(planted["db"]), str(out), str(marker)]
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert marker.exists(), "the report run never reached its tables step"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    left = [p for p in out.parent.iterdir() if p.name.startswith(f".{QUARTER}.report-")]
    assert len(left) == 1 and not out.exists()
    monkeypatch.setattr("surveillance.plots.plot_all", lambda series, o: [])
    with connect(planted["db"]) as con:
        write_report(con, QUARTER, out=out)
    assert sorted(p.name for p in out.parent.iterdir()) == [QUARTER]


def test_figures_take_caption_and_alt_text_from_the_png(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from surveillance.report import _figures, png_text

    title = "Figure 3. Reporting odds ratio (95% CI) of the 8 most reported terms, through 2025Q2"
    alt = "Overdose has the highest ROR, 12 (95% CI ≥ 3)."
    fig, _ = plt.subplots(figsize=(1, 1))
    fig.savefig(tmp_path / "forest.png", metadata={"Title": title, "Description": alt})
    fig.savefig(tmp_path / "cases_by_quarter.png")
    plt.close(fig)
    assert png_text(tmp_path / "forest.png")["Description"] == alt
    figures = _figures([tmp_path / "cases_by_quarter.png", tmp_path / "forest.png"])
    assert [(f["caption"], f["alt"]) for f in figures] == [
        (title, alt),
        ("Figure 2. cases by quarter", "Figure 2. cases by quarter"),
    ]
    assert figures[0]["src"].startswith("data:image/png;base64,")


def test_a_database_without_a_clean_layer_is_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from surveillance.cli import cli

    with connect(tmp_path / "empty.duckdb"):
        pass
    result = CliRunner().invoke(
        cli, ["report", "--db", str(tmp_path / "empty.duckdb"), "--out", str(tmp_path / "r")]
    )
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"Error: {tmp_path / 'empty.duckdb'}: no quarters loaded; run 'surveillance load' first"
    )
    assert not (tmp_path / "r").exists()

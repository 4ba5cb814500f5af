"""The offline demo: generate SYNTHETIC quarters, load them, run every later stage.

Writes into one folder: `zips/` (generated FAERS-format archives), `demo.duckdb`, the kratom
case list and signal table (CSV), the last quarter's report (`reports/<quarter>/`), and `caers/`
(two generated CAERS exports, loaded beside FAERS into the caers_* tables, never pooled).
The quarters have a FAERS-like background (tens of thousands of reports each, thousands of
drugs and terms) so that kratom is a fraction of a percent of cases, as in FAERS.
Everything it produces is marked as synthetic.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import duckdb

from . import caers, caers_synthetic
from .cases import cases
from .db import connect
from .definitions import CRITERIA
from .extract import resolve
from .ingest import QuarterLoad
from .output import render
from .pipeline import load
from .report import write_report
from .signals import SignalRun, signals
from .status import status
from .synthetic import Series, generate_series

# Spans the legacy-to-FAERS switch (2012Q3 -> 2012Q4), the deleted lists (2019Q1 on) and the
# 7-OH products of recent years; 2024Q4 is there for the README's `signals --through 2024Q4`.
DEMO_QUARTERS = (
    "2012Q2",
    "2012Q3",
    "2012Q4",
    "2013Q1",
    "2019Q1",
    "2019Q2",
    "2024Q4",
    "2025Q1",
    "2025Q2",
)
# Per quarter: fast background reports, and planned cases (case histories, damage, kratom).
DEMO_BACKGROUND = 22_000
DEMO_PLANNED = 300
# Share of planned new cases that involve kratom: about 0.3% of all cases with the background.
DEMO_KRATOM_RATE = 0.22
# Reports per CAERS export (2004-2017Q2 and a later one) and their share with a kratom product.
DEMO_CAERS_REPORTS = 2_000
DEMO_CAERS_KRATOM_RATE = 0.03


class DemoData(NamedTuple):
    """The demo database, the generator's ground truth for it and what loading did."""

    db_path: Path
    series: Series
    loads: list[QuarterLoad]


def build_database(
    out: Path,
    seed: int = 7,
    background: int = DEMO_BACKGROUND,
    n_cases: int = DEMO_PLANNED,
    progress: Callable[[str], None] | None = None,
) -> DemoData:
    """Generate the demo quarters into `out/zips` and load them into `out/demo.duckdb` afresh."""
    zips = out / "zips"
    if zips.exists():
        shutil.rmtree(zips)
    zips.mkdir(parents=True)
    db_path = out / "demo.duckdb"
    for stale in (db_path, db_path.with_name(db_path.name + ".wal")):
        stale.unlink(missing_ok=True)
    if progress:
        progress(f"generating {len(DEMO_QUARTERS)} SYNTHETIC quarters in {zips}")
    series = generate_series(
        list(DEMO_QUARTERS),
        zips,
        n_cases=n_cases,
        seed=seed,
        background=background,
        kratom_rate=DEMO_KRATOM_RATE,
        readme_case=True,
    )
    with connect(db_path) as con:
        loads = load(con, [zips], progress=progress)
        caers_dir = out / "caers"
        if caers_dir.exists():
            shutil.rmtree(caers_dir)
        caers_synthetic.generate(
            caers_dir, DEMO_CAERS_REPORTS, seed, DEMO_CAERS_KRATOM_RATE, damage=True
        )
        caers.load(con, [caers_dir], progress=progress)
    return DemoData(db_path, series, loads)


def prior_line(run: SignalRun) -> str:
    """The EBGM prior's state in one line: converged with its hyperparameters, or a WARNING."""
    p = run.prior
    values = (
        f"alpha1={p.alpha1:.3g} beta1={p.beta1:.3g} alpha2={p.alpha2:.3g} beta2={p.beta2:.3g} "
        f"P={p.p:.3g}; {p.n_pairs:,} drug-term pairs"
    )
    if run.ebgm_available:
        return f"EBGM prior: converged ({values})"
    return (
        f"WARNING: EBGM prior did not converge or sits on a bound ({values}); "
        "EBGM, EB05 and EB95 are unavailable and count toward no signal"
    )


def signal_counts(run: SignalRun) -> str:
    """Terms meeting each signal criterion; EBGM only under a converged prior."""
    parts = []
    for c in CRITERIA:
        if c.flag == "signal_ebgm" and not run.ebgm_available:
            parts.append(f"{c.name} n/a")
        else:
            parts.append(f"{c.name} {int(run.table[c.flag].fillna(False).astype(bool).sum())}")
    return ", ".join(parts)


def _n_cases(con: duckdb.DuckDBPyConnection) -> int:
    row = con.execute("SELECT count(*) FROM cases").fetchone()
    return int(row[0]) if row else 0


def demo(
    out: Path,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
    background: int = DEMO_BACKGROUND,
) -> Iterator[str]:
    """Run the whole pipeline on generated data in `out`; yield one line per output written."""
    db_path, _, results = build_database(out, seed, background, progress=progress)
    with connect(db_path) as con:
        info = status(con, db_path)
        kratom = cases(con, resolve("kratom"))
        cases_csv = out / "kratom_cases_SYNTHETIC.csv"
        cases_csv.write_text(render(kratom, "csv"), encoding="utf-8")
        if progress:
            progress(f"computing signals and writing the {DEMO_QUARTERS[-1]} report")
        run = signals(con, resolve("kratom"))
        signals_csv = out / "kratom_signals_SYNTHETIC.csv"
        signals_csv.write_text(render(run.table, "csv"), encoding="utf-8")
        report = write_report(con, DEMO_QUARTERS[-1], out=out / "reports" / DEMO_QUARTERS[-1])
        n_cases = _n_cases(con)
        caers_rows = con.execute(
            "SELECT sum(rows_read), sum(rows_loaded), sum(rows_quarantined), count(*) "
            "FROM caers_load_log"
        ).fetchone()
        side = caers.caers_side_by_side(con, resolve("kratom"))
    loaded = sum(r.rows_loaded for r in results)
    quarantined = sum(r.rows_quarantined for r in results)
    yield "SYNTHETIC DATA: every file below was generated by surveillance.synthetic, not the FDA."
    yield f"zips:     {out / 'zips'} ({len(results)} quarters)"
    yield (
        f"database: {db_path} ({info['database_bytes'] / 1e6:.1f} MB; {loaded:,} rows loaded, "
        f"{quarantined:,} lines quarantined)"
    )
    share = len(kratom) / n_cases if n_cases else 0.0
    yield (
        f"cases:    {n_cases:,} deduplicated cases; {len(kratom):,} involve kratom "
        f"({share:.2%}) -> {cases_csv}"
    )
    assert caers_rows is not None
    yield (
        f"caers:    {caers_rows[3]} SYNTHETIC CAERS exports in {out / 'caers'}: "
        f"{caers_rows[0]:,} rows read, {caers_rows[1]:,} loaded, {caers_rows[2]:,} quarantined; "
        f"{side.n_caers_reports:,} CAERS reports with a kratom product (never pooled with FAERS)"
    )
    yield prior_line(run)
    yield (
        f"signals:  {len(run.table)} terms with a >= {run.min_cases}; signals by criterion: "
        f"{signal_counts(run)} -> {signals_csv}"
    )
    yield f"report:   {report / 'index.html'} (open it in a browser; it works offline)"
    yield f"try:      surveillance status --db {db_path}"
    yield f"          surveillance signals --substance kratom --show-prior --db {db_path}"
    yield f"          surveillance case 10014022 --db {db_path}"
    yield f"          surveillance signals --source caers --db {db_path}"

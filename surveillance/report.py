"""The quarterly surveillance report: one self-contained folder per quarter and substance.

Reads the database (signals as of the quarter and the one before, the case list, trends) and
writes `<out>/index.html` (one file, figures embedded, no external requests, sortable signal
table), `report.md`, `tables/*.csv`, `figures/*.png|svg` and `metadata.json` (data vintage:
quarters and zip checksums, term-file version, thresholds, dedup mode). The folder is written
under a temporary name and renamed into place, so a killed run never leaves half a report.
The same database and options give the same tables and figures.
"""

from __future__ import annotations

import base64
import json
import shutil
import tempfile
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape

from . import __version__, stats
from .cases import cases as case_list
from .extract import resolve
from .faers_format import Quarter
from .output import render
from .pipeline import current_dedup
from .signals import CAVEATS, OUTPUT_COLUMNS, SignalRun, data_fingerprint, signals
from .substances import Substance

CRITERIA = {
    "signal_prr": "PRR (Evans: a >= 3, PRR >= 2, chi2 >= 4)",
    "signal_ror": "ROR (lower 95% bound > 1, a >= 3)",
    "signal_ic": "IC (IC025 > 0)",
    "signal_ebgm": f"EBGM (EB05 >= {stats.EB05_THRESHOLD:g})",
}
MOVERS = 10


def _previous_quarter(con: duckdb.DuckDBPyConnection, quarter: str) -> str | None:
    row = con.execute(
        "SELECT max(quarter) FROM quarters WHERE quarter < $q", {"q": quarter}
    ).fetchone()
    return None if row is None or row[0] is None else str(row[0])


def what_changed(now: SignalRun, before: SignalRun | None, new_cases: int) -> dict[str, Any]:
    """New and lost signals (per criterion), and the terms whose EBGM moved most."""
    if before is None:
        return {"previous": None, "new_cases": new_cases, "new": [], "lost": [], "movers": []}
    cur = now.table.set_index("term")
    old = before.table.set_index("term")
    new, lost = [], []
    for flag, label in CRITERIA.items():
        was = set(old.index[old[flag].astype(bool)])
        isnow = set(cur.index[cur[flag].astype(bool)])
        new += [{"term": t, "criterion": label, "a": int(cur.loc[t, "a"])} for t in isnow - was]
        lost += [
            {"term": t, "criterion": label, "a": int(cur.loc[t, "a"]) if t in cur.index else 0}
            for t in was - isnow
        ]
    both = cur.index.intersection(old.index)
    moved = pd.DataFrame(
        {
            "term": both,
            "a_before": old.loc[both, "a"].to_numpy(),
            "a_now": cur.loc[both, "a"].to_numpy(),
            "ebgm_before": old.loc[both, "ebgm"].round(3).to_numpy(),
            "ebgm_now": cur.loc[both, "ebgm"].round(3).to_numpy(),
            "ror_before": old.loc[both, "ror"].round(3).to_numpy(),
            "ror_now": cur.loc[both, "ror"].round(3).to_numpy(),
        }
    )
    moved["change"] = (moved["ebgm_now"] - moved["ebgm_before"]).round(3)
    moved = moved.reindex(moved["change"].abs().sort_values(ascending=False).index)
    key = ("criterion", "term")
    return {
        "previous": before.through,
        "new_cases": new_cases,
        "new": sorted(new, key=lambda r: tuple(r[k] for k in key)),
        "lost": sorted(lost, key=lambda r: tuple(r[k] for k in key)),
        "movers": moved.head(MOVERS).to_dict(orient="records"),
    }


def _metadata(
    con: duckdb.DuckDBPyConnection,
    quarter: str,
    substance: Substance,
    now: SignalRun,
    options: dict[str, Any],
) -> dict[str, Any]:
    quarters = con.execute(
        "SELECT quarter, era, zip_name, zip_sha256, synthetic FROM quarters ORDER BY quarter"
    ).fetchdf()
    return {
        "quarter": quarter,
        "substance": substance.name,
        "term_file": substance.source_path.rsplit("/", 1)[-1],
        "term_file_version": substance.version,
        "tool_version": __version__,
        "data_fingerprint": data_fingerprint(con),
        "dedup_mode": current_dedup(con),
        "synthetic": bool(quarters["synthetic"].any()),
        "quarters_loaded": quarters.drop(columns=["synthetic"]).to_dict(orient="records"),
        "thresholds": {
            "evans_min_cases": stats.EVANS_MIN_CASES,
            "evans_min_prr": stats.EVANS_MIN_PRR,
            "evans_min_chi2": stats.EVANS_MIN_CHI2,
            "ror_min_cases": stats.ROR_MIN_CASES,
            "ic_signal": "IC025 > 0",
            "eb05_threshold": stats.EB05_THRESHOLD,
            "min_cases_shown": now.min_cases,
        },
        "prior": asdict(now.prior),
        "options": options,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def report_is_current(
    con: duckdb.DuckDBPyConnection,
    out: Path,
    substance: str = "kratom",
    substance_file: Path | None = None,
) -> bool:
    """Whether `out` holds a report of the data now loaded, with the current term file."""
    meta = out / "metadata.json"
    if not meta.is_file():
        return False
    try:
        saved = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    s = resolve(substance, substance_file)
    return bool(
        saved.get("data_fingerprint") == data_fingerprint(con)
        and saved.get("substance") == s.name
        and saved.get("term_file_version") == s.version
        and saved.get("tool_version") == __version__
    )


def write_report(
    con: duckdb.DuckDBPyConnection,
    quarter: str,
    substance: str = "kratom",
    substance_file: Path | None = None,
    out: Path | None = None,
    roles: str | None = None,
    min_cases: int = 3,
) -> Path:
    """Write the report for a quarter into `out` (default reports/<quarter>); return the folder."""
    from .plots import plot_all
    from .trends import trends

    quarter = str(Quarter.parse(quarter))
    out = Path(out) if out is not None else Path("reports") / quarter
    s = resolve(substance, substance_file)
    now = signals(con, s, through=quarter, roles=roles, min_cases=min_cases)
    previous = _previous_quarter(con, quarter)
    before = (
        signals(con, s, through=previous, roles=roles, min_cases=min_cases, prior=now.prior)
        if previous
        else None
    )
    changed = what_changed(now, before, len(now.exposed - (before.exposed if before else set())))
    series = trends(con, s, roles=roles)
    listing = case_list(con, s, until=quarter, roles=roles)
    options = {"roles": roles, "min_cases": min_cases}
    meta = _metadata(con, quarter, s, now, options)

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tables = work / "tables"
        tables.mkdir()
        frames = {
            "signals": now.table,
            "cases": listing,
            "trends_by_quarter": series.by_quarter,
            "cumulative_signals": series.cumulative,
            "first_signal": series.first_signal,
            "co_reported": series.co_reported,
            "demographics": series.demographics,
        }
        for name, frame in frames.items():
            (tables / f"{name}.csv").write_text(render(frame, "csv"), encoding="utf-8")
        figures = plot_all(series, work / "figures")
        (work / "metadata.json").write_text(
            json.dumps(meta, indent=2, default=str) + "\n", encoding="utf-8"
        )
        context = _context(quarter, s, now, changed, series, listing, meta, figures)
        env = Environment(
            loader=PackageLoader("surveillance", "templates"),
            autoescape=select_autoescape(["html"]),
            keep_trailing_newline=True,
        )
        (work / "index.html").write_text(
            env.get_template("report.html.j2").render(**context, embed=_embed), encoding="utf-8"
        )
        (work / "report.md").write_text(
            env.get_template("report.md.j2").render(**context), encoding="utf-8"
        )
        _replace(work, out)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _replace(work: Path, out: Path) -> None:
    """Put the finished folder at `out`, replacing an older report there."""
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        work.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        work.rename(out)


def _embed(path: Path) -> str:
    """A figure as a data: URI, so index.html needs no other file and makes no request."""
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _context(
    quarter: str,
    s: Substance,
    now: SignalRun,
    changed: dict[str, Any],
    series: Any,
    listing: pd.DataFrame,
    meta: dict[str, Any],
    figures: list[Path],
) -> dict[str, Any]:
    signal_rows = now.table.copy()
    flags = list(CRITERIA)
    signal_rows["criteria"] = [
        ", ".join(f.removeprefix("signal_").upper() for f in flags if row[f])
        for _, row in signal_rows.iterrows()
    ]
    return {
        "quarter": quarter,
        "substance": s,
        "run": now,
        "changed": changed,
        "series": series,
        "signals": signal_rows,
        "signal_columns": [c for c in OUTPUT_COLUMNS if not c.startswith("signal_")],
        "n_signals": {f: int(now.table[f].sum()) for f in flags},
        "criteria": CRITERIA,
        "listing": listing,
        "meta": meta,
        "caveats": CAVEATS,
        "pngs": sorted(p for p in figures if p.suffix == ".png"),
    }

"""The whole-archive growth benchmark: `make bench-archive`. ALL DATA ARE SYNTHETIC.

Generates the archive once (`surveillance.synthetic.write_archive`, 2004Q1 to the latest
quarter, in the cache folder's `zips/`; resumable), then for each growth point (the latest 1, 8,
32 quarters and the whole archive) times each step in a fresh child process: load (against
DuckDB's read_csv floor of the same text), rebuild (strict, then fda), extraction, a new
quarter (its reload and incremental rebuild, fda and strict), signals
(first run with the prior fit, again with the stored prior), trends (its as-of counts computed),
the report (cold: its as-of counts, sensitivity analyses and sequential alerts computed), the
report of a new quarter (the same, with the as-of counts of the quarters before it stored) and
the report again (reusing them). A point's database is cached in `db/` with its load measurement and
reused until `--fresh`. Prints a table (steps by points; wall time and peak RSS) with the issue's
targets checked on the whole archive, and writes bench/results/archive-<UTC time>.json;
`--compare FILE` prints ratios to an earlier results file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import FLOOR  # bench/bench.py: the same read_csv floor as `make bench`

HERE = Path(__file__).resolve().parent
CACHE_ENV = "SURVEILLANCE_BENCH_CACHE"
MEMORY_ENV = "SURVEILLANCE_MEMORY_LIMIT"
DEFAULT_CACHE = HERE / "cache" / "archive"
RESULTS = HERE / "results"
STEPS = (
    "floor",
    "load",
    "rebuild_strict",
    "rebuild_fda",
    "extraction",
    "update",
    "update_strict",
    "signals_first",
    "signals_stored",
    "trends",
    "report",
    "report_new_quarter",
    "report_again",
    "export",
)
LABELS = {
    "floor": "floor (read_csv)",
    "load": "load",
    "rebuild_strict": "rebuild strict",
    "rebuild_fda": "rebuild fda",
    "extraction": "extraction",
    "update": "new quarter (incremental)",
    "update_strict": "new quarter, strict (incr.)",
    "signals_first": "signals (prior fit)",
    "signals_stored": "signals (stored prior)",
    "trends": "trends",
    "report": "report",
    "report_new_quarter": "report, as-of of new qtr only",
    "report_again": "report again (stored)",
    "export": "export (Parquet)",
}
# The targets on the whole archive (2-core, 24 GB machine).
TARGET_SECONDS = {
    "load": 15 * 60,
    "rebuild_strict": 5 * 60,
    "rebuild_fda": 5 * 60,
    "update": 5 * 60,
    "update_strict": 5 * 60,
    "signals_first": 120,
    "signals_stored": 10,
    "report": 120,
    "report_new_quarter": 120,
    "report_again": 120,
}
TARGET_LOAD_RATIO = 1.5
TARGET_PEAK_MB = 6 * 1024
_ZIP = re.compile(r"^f?aers_ascii_(\d{4})[qQ]([1-4])\.zip$")
_TEXT_MEMBER = re.compile(
    r"(?i)(^|/)((demo|drug|reac|outc|rpsr|ther|indi)\d{2}q[1-4](_new)?|delete\d{2}q[1-4])\.txt$"
)

# Each child prints one JSON object on its last line: seconds, peak_mb and what it counted.
_TAIL = """
import json, resource
print(json.dumps({**out, "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""
# Cold (argv[3] "cold"): the as-of counts (stored by the trends step), the sensitivity analyses
# and the alerts are computed again. "new quarter": the same, but with the as-of counts stored as
# the vintage before the latest quarter left them (its first n - 1 quarters), so that only the
# cases touched in the latest quarter are counted again. Otherwise as after `update` (which
# writes the report) or a second report on the same data: the signals' prior, the as-of counts,
# the sensitivity analyses and the alerts of this data vintage are reused.
_REPORT = """
import sys, tempfile, time
from pathlib import Path
from surveillance.db import connect
from surveillance.report import write_report
with connect(sys.argv[1]) as con, tempfile.TemporaryDirectory(dir=sys.argv[2]) as tmp:
    if sys.argv[3] == "cold":
        con.execute("DROP TABLE IF EXISTS asof_runs")
    if sys.argv[3] == "new quarter":
        m = "(SELECT count(*) - 1 FROM quarters)"
        con.execute(f"UPDATE asof_runs SET quarters = quarters[1:{m}], n_cases = n_cases[1:{m}], "
                    f"n_exposed = n_exposed[1:{m}], "
                    f"quarter_fingerprints = quarter_fingerprints[1:{m}]")
        con.execute(f"UPDATE asof_terms SET n_term = n_term[1:{m}], a = a[1:{m}]")
    if sys.argv[3] != "stored":
        con.execute("DROP TABLE IF EXISTS sequential_runs")
        con.execute("DROP TABLE IF EXISTS signal_sensitivity_runs")
    t = time.perf_counter()
    write_report(con, out=Path(tmp) / "report")
    out = {"seconds": time.perf_counter() - t}
"""
CHILD = {
    # The raw layer only, as the floor does; the rebuild steps below time the rest.
    "load": """
import sys, time
from surveillance.db import connect
from surveillance.ingest import load
t = time.perf_counter()
with connect(sys.argv[1]) as con:
    load(con, sys.argv[2:])
out = {"seconds": time.perf_counter() - t}
""",
    # What the scheduler does each quarter: the latest quarter loaded again (replaced) and the
    # clean layer and extractions rebuilt for the cases it touches.
    "update": """
import sys, time
from surveillance.db import connect
from surveillance.ingest import load
from surveillance.pipeline import rebuild
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    load(con, [sys.argv[2]])
    steps = rebuild(con, incremental=True)
    out = {"seconds": time.perf_counter() - t, "rebuild_kind": str(steps["rebuild_kind"].iloc[0]),
           "cases_rederived": int(steps["n_cases_rederived"].iloc[0])}
""",
    # The same in strict mode: switched to strict (flags only), the latest quarter loaded again
    # and rebuilt (its cases re-derived, both strict passes over all cases), then back to fda
    # (flags cleared) for the steps after this one. Only the middle part is the step's time.
    "update_strict": """
import sys, time
from surveillance.db import connect
from surveillance.ingest import load
from surveillance.pipeline import rebuild
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    switch = rebuild(con, dedup="strict", incremental=True)
    switched = time.perf_counter() - t
    t = time.perf_counter()
    load(con, [sys.argv[2]])
    steps = rebuild(con, incremental=True)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    back = rebuild(con, dedup="fda", incremental=True)
    out = {"seconds": seconds, "rebuild_kind": str(steps["rebuild_kind"].iloc[0]),
           "cases_rederived": int(steps["n_cases_rederived"].iloc[0]),
           "to_strict_seconds": switched, "to_fda_seconds": time.perf_counter() - t,
           "switch_kinds": [str(switch["rebuild_kind"].iloc[0]), str(back["rebuild_kind"].iloc[0])]}
""",
    "export": """
import sys, tempfile, time
from pathlib import Path
from surveillance.db import connect
from surveillance.parquet import export_parquet
with connect(sys.argv[1], read_only=True) as con, tempfile.TemporaryDirectory(
        dir=sys.argv[2]) as tmp:
    t = time.perf_counter()
    export_parquet(con, Path(tmp) / "parquet")
    seconds = time.perf_counter() - t
    size = sum(f.stat().st_size for f in (Path(tmp) / "parquet").rglob("*") if f.is_file())
    out = {"seconds": seconds, "parquet_mb": size / 1e6}
""",
    "rebuild_strict": """
import sys, time
from surveillance.db import connect
from surveillance.pipeline import rebuild
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    rebuild(con, dedup="strict")
    out = {"seconds": time.perf_counter() - t}
""",
    "rebuild_fda": """
import sys, time
from surveillance.db import connect
from surveillance.pipeline import rebuild
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    rebuild(con, dedup="fda")
    out = {"seconds": time.perf_counter() - t}
""",
    "extraction": """
import sys, time
from surveillance.db import connect
from surveillance.extract import refresh
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    n_cases = refresh(con)
    out = {"seconds": time.perf_counter() - t, "substance_cases": n_cases}
""",
    "signals_first": """
import sys, time
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.signals import signals
with connect(sys.argv[1]) as con:
    con.execute("DROP TABLE IF EXISTS signal_priors")  # the first run fits the prior
    t = time.perf_counter()
    run = signals(con, resolve("kratom"))
    out = {"seconds": time.perf_counter() - t, "kratom_cases": int(run.n_substance_cases),
           "drug_term_pairs": int(run.prior.n_pairs), "prior_converged": bool(run.prior.converged)}
""",
    "signals_stored": """
import sys, time
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.signals import signals
with connect(sys.argv[1]) as con:
    t = time.perf_counter()
    signals(con, resolve("kratom"))
    out = {"seconds": time.perf_counter() - t}
""",
    # As on a new data vintage: the as-of counts are computed (and stored, as for the report).
    "trends": """
import sys, time
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.trends import trends
with connect(sys.argv[1]) as con:
    con.execute("DROP TABLE IF EXISTS asof_runs")
    t = time.perf_counter()
    trends(con, resolve("kratom"))
    out = {"seconds": time.perf_counter() - t}
""",
    "report": _REPORT,
    "report_new_quarter": _REPORT,
    "report_again": _REPORT,
    "counts": """
import sys, time
import duckdb
t = time.perf_counter()
with duckdb.connect(sys.argv[1], read_only=True) as con:
    names = ("demo_rows", "drug_rows", "reac_rows", "cases", "deleted_caseids")
    row = con.execute(
        "SELECT (SELECT count(*) FROM raw_demo), (SELECT count(*) FROM raw_drug), "
        "(SELECT count(*) FROM raw_reac), (SELECT count(*) FROM cases), "
        "(SELECT count(DISTINCT caseid) FROM raw_deleted)"
    ).fetchone()
out = {"seconds": time.perf_counter() - t, **dict(zip(names, row))}
""",
    "memory_limit": """
from surveillance.db import memory_limit
out = {"seconds": 0.0, "memory_limit": memory_limit()}
""",
}


def run_child(step: str, args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a step in a fresh Python; its JSON, or {'error': one line} when it failed."""
    proc = subprocess.run(
        [sys.executable, "-c", CHILD[step] + _TAIL, *args],
        capture_output=True,
        text=True,
        env=env,
    )
    if proc.returncode != 0:
        return {"error": failure(proc)}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def failure(proc: subprocess.CompletedProcess[str]) -> str:
    """One line for a failed child: the last line of its stderr, and a signal that killed it."""
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    killed = f"killed by signal {-proc.returncode}" if proc.returncode < 0 else ""
    if killed and proc.returncode == -9:
        killed += " (out of memory?)"
    return "; ".join(x for x in (lines[-1] if lines else "", killed) if x) or (
        f"exit status {proc.returncode}"
    )


def text_bytes(path: Path) -> int:
    """The uncompressed size of a zip's table files, from its directory."""
    with zipfile.ZipFile(path) as zf:
        return sum(i.file_size for i in zf.infolist() if _TEXT_MEMBER.search(i.filename))


def floor_sample(zips: list[Path], n: int) -> list[Path]:
    """n quarters evenly spread over the point (first and last included), or all of them."""
    if n <= 0 or len(zips) <= n:
        return zips
    return [zips[round(i * (len(zips) - 1) / (n - 1))] for i in range(n)]


def run_floor(zips: list[Path], work: Path, env: dict[str, str], sample: int = 0) -> dict[str, Any]:
    """DuckDB's read_csv of the zips' extracted table files, a quarter at a time (extracted,
    read into a fresh database, then both deleted, so the whole archive's ~25 GB of text never
    sits on disk at once); the seconds are the sum of the reads, the peak the largest. With a
    `sample` of quarters, the reads of the sample scaled by text bytes (read_csv is linear in
    them) stand for the whole point, and the result says so."""
    chosen = floor_sample(zips, sample)
    seconds, peak_mb, text_mb = 0.0, 0.0, 0.0
    for path in chosen:
        with tempfile.TemporaryDirectory(dir=work) as tmp:
            files = []
            with zipfile.ZipFile(path) as zf:
                for member in zf.namelist():
                    if _TEXT_MEMBER.search(member):
                        target = Path(tmp) / member
                        target.parent.mkdir(parents=True, exist_ok=True)
                        with zf.open(member) as src, target.open("wb") as dst:
                            shutil.copyfileobj(src, dst, 1 << 20)
                        files.append(str(target))
            text_mb += sum(Path(f).stat().st_size for f in files) / 1e6
            proc = subprocess.run(
                [sys.executable, "-c", FLOOR, str(Path(tmp) / "floor.duckdb"), *files],
                capture_output=True,
                text=True,
                env=env,
            )
        if proc.returncode != 0:
            return {"error": failure(proc)}
        s, mb = proc.stdout.strip().splitlines()[-1].split()
        seconds, peak_mb = seconds + float(s), max(peak_mb, float(mb))
    if len(chosen) == len(zips):
        return {"seconds": seconds, "peak_mb": peak_mb, "text_mb": text_mb}
    total = sum(text_bytes(z) for z in zips) / 1e6
    return {
        "seconds": seconds * total / text_mb,
        "peak_mb": peak_mb,
        "text_mb": total,
        "sample_quarters": [z.name for z in chosen],
        "sample_seconds": seconds,
        "sample_text_mb": text_mb,
    }


def archive_zips(folder: Path) -> list[Path]:
    """The archive's zips in quarter order."""
    found = [(m, p) for p in folder.glob("*.zip") if (m := _ZIP.match(p.name))]
    return [p for m, p in sorted(found, key=lambda mp: (int(mp[0][1]), int(mp[0][2])))]


def generate(cache: Path, scale: float, seed: int, workers: int) -> None:
    """Write the archive's zips into cache/zips where missing, printing each quarter."""
    from surveillance.synthetic import ARCHIVE_FIRST, ARCHIVE_LAST, ArchiveQuarter, write_archive

    t0 = time.perf_counter()

    def show(r: ArchiveQuarter) -> None:
        print(
            f"{r.quarter}: {r.rows['demo']:,} reports, {r.rows['drug']:,} drug rows, "
            f"{r.rows['reac']:,} reaction rows, {r.n_follow_ups:,} follow-ups, "
            f"{r.n_deleted:,} deleted; {r.seconds:.1f} s "
            f"(elapsed {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )

    done = write_archive(
        cache / "zips", ARCHIVE_FIRST, ARCHIVE_LAST, scale, seed, workers=workers, progress=show
    )
    totals = {t: sum(r.rows[t] for r in done) for t in ("demo", "drug", "reac")}
    zip_gb = sum(r.zip_path.stat().st_size for r in done) / 1e9
    print(
        f"archive: {len(done)} quarters, {totals['demo']:,} DEMO, {totals['drug']:,} DRUG, "
        f"{totals['reac']:,} REAC rows, {sum(r.n_deleted for r in done):,} deleted caseids, "
        f"{zip_gb:.2f} GB of zips; ready in {time.perf_counter() - t0:.0f} s",
        flush=True,
    )


def db_mb(db: Path) -> float:
    """The database's size on disk (file and write-ahead log), MB."""
    wal = db.with_name(db.name + ".wal")
    return sum(p.stat().st_size for p in (db, wal) if p.exists()) / 1e6


def measure_point(
    label: str,
    zips: list[Path],
    cache: Path,
    env: dict[str, str],
    fresh: bool,
    commit: str,
    floor_quarters: int = 0,
    only: tuple[str, ...] = STEPS,
) -> dict[str, Any]:
    """Every step on the point's database; the load (and floor) only when it is (re)built."""
    folder = cache / "db"
    folder.mkdir(parents=True, exist_ok=True)
    db, record = folder / f"{label}.duckdb", folder / f"{label}.json"
    names = [p.name for p in zips]
    built = json.loads(record.read_text()) if record.exists() and db.exists() else None
    if built is not None and (fresh or built["zips"] != names):
        built = None
    steps: dict[str, dict[str, Any]] = {}
    if built is None:
        record.unlink(missing_ok=True)
        for stale in (db, db.with_name(db.name + ".wal")):
            stale.unlink(missing_ok=True)
        shutil.rmtree(db.with_name(db.name + ".tmp"), ignore_errors=True)
        say(f"{label}: floor over {len(zips)} quarters")
        steps["floor"] = run_floor(zips, cache, env, floor_quarters)
        say(f"{label}: floor", steps["floor"])
        steps["load"] = {**run_child("load", [str(db), *map(str, zips)], env), "db_mb": db_mb(db)}
        say(f"{label}: loaded", steps["load"])
        if "error" not in steps["load"]:
            built = {"zips": names, "commit": commit, "built_at": _now(), "steps": steps}
            record.write_text(json.dumps(built, indent=1))
    else:
        steps = {k: {**v, "cached": built["built_at"]} for k, v in built["steps"].items()}
        say(f"{label}: database cached (built {built['built_at']} by {built['commit']})")
    for step in (s for s in STEPS[2:] if s in only):
        args = {
            "report": [str(db), str(cache), "cold"],
            "report_new_quarter": [str(db), str(cache), "new quarter"],
            "report_again": [str(db), str(cache), "stored"],
            "export": [str(db), str(cache)],
        }.get(step, [str(db), str(zips[-1])] if step.startswith("update") else [str(db)])
        steps[step] = {**run_child(step, args, env), "db_mb": db_mb(db)}
        say(f"{label}: {step}", steps[step])
    # Counted after the steps: the load makes the raw layer only, the rebuilds make `cases`.
    counts = run_child("counts", [str(db)], env) if db.exists() else {"error": "no database"}
    first = steps.get("signals_first", {})
    counts.update({k: first[k] for k in ("kratom_cases", "drug_term_pairs") if k in first})
    counts.pop("seconds", None)
    counts.pop("peak_mb", None)
    return {
        "quarters": [zips[0].name, zips[-1].name],
        "n_quarters": len(zips),
        "counts": counts,
        "steps": steps,
    }


def say(message: str, result: dict[str, Any] | None = None) -> None:
    """One progress line on stderr (with the step's time, peak or error)."""
    if result is not None:
        if "error" in result:
            message += f": FAILED {result['error']}"
        else:
            message += f": {result['seconds']:.1f} s, peak {result.get('peak_mb', 0):,.0f} MB"
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _commit() -> str:
    out = subprocess.run(
        ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """Cores and RAM of this machine."""
    ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cores": os.cpu_count(), "ram_gb": round(ram / 2**30, 1)}


def cell(step: dict[str, Any] | None) -> str:
    if not step:
        return "-"
    if "error" in step:
        return "FAILED"
    return f"{step['seconds']:,.1f} s {step['peak_mb']:,.0f} MB"


def table(results: dict[str, Any]) -> str:
    """Steps by points: wall time and peak RSS; then counts and database sizes."""
    points = results["points"]
    width = max(len(v) for v in LABELS.values())
    col = 22
    lines = [
        "SYNTHETIC data: growth of each step with the archive "
        f"(memory limit {results['memory_limit']})",
        f"{'':<{width}} " + "".join(f"{p:>{col}}" for p in points),
    ]
    for step in STEPS:
        row = [cell(points[p]["steps"].get(step)) for p in points]
        lines.append(f"{LABELS[step]:<{width}} " + "".join(f"{c:>{col}}" for c in row))
    lines.append(
        f"{'quarters':<{width}} " + "".join(f"{points[p]['n_quarters']:>{col}}" for p in points)
    )
    keys = ("demo_rows", "drug_rows", "reac_rows", "cases", "kratom_cases", "drug_term_pairs")
    for key in keys:
        row = [points[p]["counts"].get(key) for p in points]
        lines.append(
            f"{key:<{width}} "
            + "".join(f"{(f'{v:,}' if v is not None else '-'):>{col}}" for v in row)
        )
    sizes = [
        max((s.get("db_mb", 0) for s in points[p]["steps"].values()), default=0) for p in points
    ]
    lines.append(f"{'database MB (largest)':<{width}} " + "".join(f"{s:>{col},.0f}" for s in sizes))
    failed = [
        f"{p} {LABELS[s]}: {r['error']}"
        for p in points
        for s, r in points[p]["steps"].items()
        if "error" in r
    ]
    lines += [f"FAILED {f}" for f in failed]
    lines += [
        f"point {p}: floor and load from its cached database, built {when}; --fresh to measure"
        for p in points
        if (when := points[p]["steps"].get("load", {}).get("cached"))
    ]
    return "\n".join(lines)


def check_targets(point: dict[str, Any]) -> list[str]:
    """The issue's targets against one point's figures: one line each, PASS or FAIL."""
    steps = point["steps"]
    out = []

    def line(ok: bool, text: str) -> None:
        out.append(f"{'PASS' if ok else 'FAIL'}  {text}")

    for step, limit in TARGET_SECONDS.items():
        s = steps.get(step, {})
        if "seconds" in s:
            line(s["seconds"] < limit, f"{LABELS[step]} {s['seconds']:,.1f} s < {limit} s")
        else:
            line(False, f"{LABELS[step]}: {s.get('error', 'not measured')}")
    load, floor = steps.get("load", {}), steps.get("floor", {})
    if "seconds" in load and "seconds" in floor:
        ratio = load["seconds"] / floor["seconds"]
        sampled = floor.get("sample_quarters")
        how = f" (floor timed on {len(sampled)} quarters, scaled by text bytes)" if sampled else ""
        line(ratio <= TARGET_LOAD_RATIO, f"load / floor {ratio:.2f} <= {TARGET_LOAD_RATIO}{how}")
    for step in STEPS[1:]:
        s = steps.get(step, {})
        if "peak_mb" in s:
            line(
                s["peak_mb"] < TARGET_PEAK_MB,
                f"{LABELS[step]} peak RSS {s['peak_mb']:,.0f} MB < 6 GB",
            )
    return out


def compare(now: dict[str, Any], before: dict[str, Any]) -> str:
    """Ratio of each time and peak RSS to an earlier results file (now / before)."""
    lines = [
        f"ratio to {before.get('finished_at', '?')} (commit {before.get('git_commit', '?')}): "
        "time, peak RSS"
    ]
    for label, point in now["points"].items():
        old = before.get("points", {}).get(label)
        if old is None:
            continue
        for step in STEPS:
            a, b = point["steps"].get(step, {}), old["steps"].get(step, {})
            if "seconds" in a and "seconds" in b and b["seconds"] > 0:
                lines.append(
                    f"{label:>6} {LABELS[step]:<24} x{a['seconds'] / b['seconds']:.2f}  "
                    f"x{a['peak_mb'] / b['peak_mb']:.2f}"
                )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path(os.environ.get(CACHE_ENV) or DEFAULT_CACHE),
        help=f"cache folder (env {CACHE_ENV}; default bench/cache/archive)",
    )
    parser.add_argument("--points", default="1,8,32,all", help="latest N quarters, or all")
    parser.add_argument("--memory-limit", help="DuckDB memory limit (default: the package's)")
    parser.add_argument("--fresh", action="store_true", help="rebuild the points' databases")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS[2:]),
        help="the steps after the load to time, comma-separated (default: all of them)",
    )
    parser.add_argument(
        "--floor-quarters",
        type=int,
        default=0,
        help="time the read_csv floor on this many quarters spread over a point, scaled by "
        "text bytes (default 0: every quarter)",
    )
    parser.add_argument("--compare", type=Path, help="an earlier results file")
    parser.add_argument("--scale", type=float, default=1.0, help="archive volume scale")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--workers", type=int, default=2, help="processes generating quarters")
    parser.add_argument("--generate-only", action="store_true", help="only generate the zips")
    parser.add_argument(
        "--skip-generate", action="store_true", help="use the zips in the cache as they are"
    )
    args = parser.parse_args()
    points = [p.strip() for p in args.points.split(",") if p.strip()]
    only = tuple(s.strip() for s in args.steps.split(",") if s.strip())
    if set(only) - set(STEPS[2:]):
        parser.error(f"--steps: choose from {', '.join(STEPS[2:])}")
    if any(p != "all" and not p.isdigit() for p in points):
        parser.error(f"--points: numbers of latest quarters or 'all', not {args.points!r}")
    print("SYNTHETIC data generated by surveillance.synthetic.write_archive", flush=True)
    if args.generate_only:
        generate(args.cache, args.scale, args.seed, args.workers)
        return
    # Generated in a child so that this process stays small: a child inherits its parent's
    # peak RSS (Linux keeps ru_maxrss across fork and exec), which would hide its own.
    if not args.skip_generate:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--generate-only",
                "--cache",
                str(args.cache),
                "--scale",
                str(args.scale),
                "--seed",
                str(args.seed),
                "--workers",
                str(args.workers),
            ],
            check=True,
        )
    env = dict(os.environ)
    if args.memory_limit:
        env[MEMORY_ENV] = args.memory_limit
    limit = run_child("memory_limit", [], env)
    if "error" in limit:
        sys.exit(f"--memory-limit: {limit['error']}")
    env[MEMORY_ENV] = limit["memory_limit"]
    zips = archive_zips(args.cache / "zips")
    commit = _commit()
    results: dict[str, Any] = {
        "synthetic": True,
        "started_at": _now(),
        "machine": machine(),
        "git_commit": commit,
        "memory_limit": limit["memory_limit"],
        "scale": args.scale,
        "seed": args.seed,
        "archive_quarters": len(zips),
        "points": {},
    }
    for p in points:
        chosen = zips if p == "all" else zips[-int(p) :]
        results["points"][p] = measure_point(
            p, chosen, args.cache, env, args.fresh, commit, args.floor_quarters, only
        )
    results["finished_at"] = _now()
    if "all" in results["points"]:
        results["targets_all"] = check_targets(results["points"]["all"])
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"archive-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps(results, indent=1))
    print(table(results))
    if "targets_all" in results:
        print("targets on the whole archive (SYNTHETIC data):")
        print("\n".join(results["targets_all"]))
    if args.compare:
        print(compare(results, json.loads(args.compare.read_text())))
    print(f"results: {out}")


if __name__ == "__main__":
    main()

"""Benchmarks, printed as one line each: `make bench`.

Generates a full-size 2014Q3+ quarter once (cached in bench/cache/, SYNTHETIC data) and times
loading it against a floor measured in the same run: DuckDB's own read_csv of the same
extracted text files into tables. Each measured step runs in a fresh subprocess so that its
peak RSS is its own.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"

FLOOR = """
import duckdb, sys, time
db, files = sys.argv[1], sys.argv[2:]
con = duckdb.connect(db)
t = time.perf_counter()
for i, f in enumerate(files):
    con.execute(
        f"CREATE TABLE t{i} AS SELECT * FROM read_csv($f, delim='$', header=true, "
        "all_varchar=true, quote='', escape='', null_padding=true, strict_mode=false, "
        "encoding='latin-1')",
        {"f": f},
    )
con.close()
import resource
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

LOAD = """
import sys, time
from surveillance.db import connect
from surveillance.ingest import load
t = time.perf_counter()
con = connect(sys.argv[1])
load(con, [sys.argv[2]])
con.close()
import resource
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


REBUILD = """
import sys, time, resource
from surveillance.db import connect
from surveillance.pipeline import rebuild
con = connect(sys.argv[1])
t = time.perf_counter()
rebuild(con, dedup=sys.argv[2])
con.close()
print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


SIGNALS = """
import sys, time, resource
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.signals import signals
con = connect(sys.argv[1])
con.execute("DROP TABLE IF EXISTS signal_priors")  # measure the first run with its prior fit
t = time.perf_counter()
run = signals(con, resolve("kratom"))
first = time.perf_counter() - t
t = time.perf_counter()
signals(con, resolve("kratom"))
again = time.perf_counter() - t
con.close()
print(first, again, run.n_cases, run.prior.n_pairs,
      resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

REPORT = """
import sys, time, resource, tempfile
from pathlib import Path
from surveillance.db import connect
from surveillance.report import write_report
con = connect(sys.argv[1])
quarter = con.execute("SELECT max(quarter) FROM quarters").fetchone()[0]
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    write_report(con, quarter, out=Path(tmp) / quarter)
    seconds = time.perf_counter() - t
con.close()
print(seconds, quarter, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

SENSITIVITY = """
import sys, time, resource, json
from surveillance import sensitivity as S
from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.signals import signals
con = connect(sys.argv[1])
signals(con, resolve("kratom"))  # the stored prior, as the quarterly run leaves it
seconds = {}
timed = S._analysis
def timing(con, substance, main, analysis, terms):
    t = time.perf_counter()
    try:
        return timed(con, substance, main, analysis, terms)
    finally:
        seconds[analysis.key] = time.perf_counter() - t
S._analysis = timing
t = time.perf_counter()
result = S.sensitivity(con, resolve("kratom"))
total = time.perf_counter() - t
seconds["main"] = total - sum(seconds.values())
con.close()
print(json.dumps({"seconds": seconds, "skipped": result.skipped, "terms": len(result.terms),
                  "changed": int(result.table["changed"].sum())}))
print(total, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

PRIOR = """
import sys, time, resource
import numpy as np
from surveillance import stats
rng = np.random.default_rng(7)
n_pairs, squash = int(sys.argv[1]), sys.argv[2] == "squash"
# A drug-by-term table simulated from a known prior (openEBGM's CAERS estimates) with
# lognormal expected counts; pairs with n = 0 are dropped, as the fit uses n >= 1 only.
m = n_pairs * 5
e = rng.lognormal(-2.0, 1.5, m)
lam = np.where(rng.random(m) < 0.0653, rng.gamma(3.254, 1 / 0.400, m),
               rng.gamma(2.026, 1 / 1.908, m))
n = rng.poisson(lam * e)
keep = np.flatnonzero(n >= 1)[:n_pairs]
t = time.perf_counter()
prior = stats.fit_prior(n[keep].astype(float), e[keep], squash=squash)
seconds = time.perf_counter() - t
print(seconds, len(keep), prior.alpha1, prior.beta1, prior.alpha2, prior.beta2, prior.p,
      prior.loglik_full, prior.converged, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""

EBGM = """
import sys, time, resource
import numpy as np
from surveillance import stats
rng = np.random.default_rng(8)
m = int(sys.argv[1])
# Pairs simulated from openEBGM's CAERS prior, scored under that prior (zero counts included).
e = np.exp(rng.normal(-2.0, 1.8, m))
lam = np.where(rng.random(m) < 0.0653, rng.gamma(3.254, 1 / 0.400, m),
               rng.gamma(2.026, 1 / 1.908, m))
n = rng.poisson(lam * e).astype(float)
prior = stats.Prior(3.25379064, 0.39988801, 2.02613219, 1.90808279, 0.06534557, float("nan"),
                    True, 0, 0, "openEBGM CAERS")
t = time.perf_counter()
stats.ebgm(n, e, prior)
print(time.perf_counter() - t, m, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


DEMO = """
import sys, time, resource
from pathlib import Path
from surveillance.demo import demo
t = time.perf_counter()
lines = list(demo(Path(sys.argv[1])))
seconds = time.perf_counter() - t
cases = next(line for line in lines if line.startswith("cases:"))
prior = next(line for line in lines if "EBGM prior" in line)
print(cases)
print(prior)
print(seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def run_measured(code: str, *args: str) -> tuple[float, float]:
    """Run Python code in a child; return (seconds, peak RSS in MB), as the child prints them."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    seconds, peak_mb = out.stdout.strip().splitlines()[-1].split()
    return float(seconds), float(peak_mb)


def full_size_zip(n_reports: int) -> Path:
    """The cached full-size SYNTHETIC quarter, generated on first use."""
    from surveillance.synthetic import write_full_size_quarter

    CACHE.mkdir(exist_ok=True)
    marker = CACHE / f"full_{n_reports}.json"
    if marker.exists():
        path = Path(json.loads(marker.read_text())["zip"])
        if path.exists():
            return path
    t = time.perf_counter()
    out = CACHE / f"q_{n_reports}"
    out.mkdir(exist_ok=True)
    path = write_full_size_quarter("2025Q1", out, n_reports=n_reports, seed=1)
    print(f"generated {path.name} ({n_reports} reports) in {time.perf_counter() - t:.1f} s")
    marker.write_text(json.dumps({"zip": str(path)}))
    return path


def run_child(code: str, *args: str) -> list[str]:
    """Run Python code in a child and return the fields of its last output line."""
    out = subprocess.run(
        [sys.executable, "-c", code, *args], check=True, capture_output=True, text=True
    )
    return out.stdout.strip().splitlines()[-1].split()


BUILD_EIGHT = """
import sys
from pathlib import Path
from surveillance.db import connect
from surveillance.faers_format import Quarter
from surveillance.pipeline import load
from surveillance.synthetic import write_full_size_quarter
cache, db = Path(sys.argv[1]), Path(sys.argv[2])
folder = cache / "eight"
folder.mkdir(parents=True, exist_ok=True)
q = Quarter(2024, 1)
zips = []
for i in range(8):
    out = folder / str(q)
    out.mkdir(exist_ok=True)
    zips.append(write_full_size_quarter(str(q), out, n_reports=400_000, seed=100 + i))
    q = q.next()
db.unlink(missing_ok=True)
with connect(db) as con:
    load(con, zips)
"""


def eight_quarter_db() -> Path:
    """A database of 8 full-size SYNTHETIC quarters (2024Q1-2025Q4), built once and cached."""
    db = CACHE / "eight_quarters.duckdb"
    marker = CACHE / "eight_quarters.done"
    if marker.exists() and db.exists():
        return db
    t = time.perf_counter()
    # Built in a child: a parent that grew to the loader's peak would pass that high-water mark
    # on to every later child (Linux keeps ru_maxrss across fork and exec), hiding their own.
    subprocess.run([sys.executable, "-c", BUILD_EIGHT, str(CACHE), str(db)], check=True)
    marker.write_text("ok")
    print(f"built {db.name} from 8 full-size quarters in {time.perf_counter() - t:.0f} s")
    return db


def bench_signals() -> None:
    """Signals for kratom on 8 full-size quarters: first run (fits the prior) and cached."""
    first, again, n_cases, n_pairs, rss = run_child(SIGNALS, str(eight_quarter_db()))
    print(
        f"signals: kratom on 8 full-size quarters ({int(n_cases):,} cases, "
        f"{int(n_pairs):,} drug-term pairs with n >= 1): first run {float(first):.1f} s "
        f"(includes the prior fit), again {float(again):.1f} s (prior reused); "
        f"peak RSS {float(rss):,.0f} MB (target < 5 s)"
    )


def bench_report() -> None:
    """The quarterly report on 8 full-size quarters (signals and trends for every quarter)."""
    seconds, quarter, rss = run_child(REPORT, str(eight_quarter_db()))
    print(
        f"report: {quarter} on 8 full-size quarters in {float(seconds):.1f} s, "
        f"peak RSS {float(rss):,.0f} MB (target < 60 s)"
    )


def bench_sensitivity() -> None:
    """The full sensitivity set (`signals --sensitivity`) on 8 full-size quarters, each
    analysis timed, under the stored prior."""
    out = subprocess.run(
        [sys.executable, "-c", SENSITIVITY, str(eight_quarter_db())],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    detail_line, last = out.splitlines()[-2:]
    detail = json.loads(detail_line)
    total, rss = (float(v) for v in last.split())
    for key, seconds in detail["seconds"].items():
        print(f"sensitivity: {key} {seconds:.1f} s")
    for key, why in detail["skipped"].items():
        print(f"sensitivity: {key} not run: {why}")
    print(
        f"sensitivity: all {len(detail['seconds'])} analyses of {detail['terms']} terms and groups "
        f"on 8 full-size quarters in {total:.1f} s, {detail['changed']} classifications changed; "
        f"peak RSS {rss:,.0f} MB (target < 60 s)"
    )


def bench_prior(n_pairs: int) -> None:
    """EBGM hyperparameter fit on a simulated drug-by-term table: squashed vs plain."""
    for mode in ("squash", "plain"):
        seconds, n, a1, b1, a2, b2, p, loglik, converged, rss = run_child(PRIOR, str(n_pairs), mode)
        print(
            f"prior ({mode}{' scipy L-BFGS-B baseline' if mode == 'plain' else ''}): "
            f"{int(n):,} pairs in {float(seconds):.1f} s, peak RSS {float(rss):,.0f} MB; "
            f"alpha1={float(a1):.3f} beta1={float(b1):.3f} alpha2={float(a2):.3f} "
            f"beta2={float(b2):.3f} P={float(p):.4f} log-likelihood (all pairs) "
            f"{float(loglik):.1f} converged={converged} "
            f"(true 3.254, 0.400, 2.026, 1.908, 0.0653; target < 60 s, < 4000 MB)"
        )


MATCH = """
import random, resource, sys, time
from surveillance.substances import load_substance
rng = random.Random(20240101)
drugs = ["ACETAMINOPHEN", "HUMIRA", "METFORMIN HYDROCHLORIDE", "HERBALS\\\\KAVA", "KETOROLAC"]
strings = [
    f"{rng.choice(drugs)} {rng.randint(1, 1000)} MG "
    f"{''.join(rng.choices('ABCDEFGHIJKLMNOPQRSTUVWXYZ', k=rng.randint(3, 12)))} TABLETS"
    for _ in range(int(sys.argv[1]))
]
for i in range(0, len(strings), 1000):
    strings[i] = f"RED BALI KRATOM {i}"
kratom = load_substance("kratom")
t = time.perf_counter()
hits = kratom.match_many(strings)
print(time.perf_counter() - t, len(hits), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
"""


def bench_match(n_strings: int) -> None:
    """The kratom matcher over many distinct drug strings (what extraction does per rebuild)."""
    seconds, n_hits, rss = run_child(MATCH, str(n_strings))
    print(
        f"match: kratom rules over {n_strings:,} distinct drug strings in {float(seconds):.2f} s "
        f"({int(n_hits):,} hits, expected {(n_strings + 999) // 1000:,}), "
        f"peak RSS {float(rss):,.0f} MB (target < 5 s)"
    )


def bench_ebgm(n_pairs: int) -> None:
    """EBGM, EB05 and EB95 (exact mixture quantiles) of a million pairs under a fixed prior."""
    seconds, n, rss = run_child(EBGM, str(n_pairs))
    print(
        f"ebgm: EBGM, EB05, EB95 of {int(n):,} pairs in {float(seconds):.1f} s, "
        f"peak RSS {float(rss):,.0f} MB (target < 10 s)"
    )


def bench_load(zip_path: Path) -> None:
    """Load wall time, MB/s, peak RSS and the ratio to DuckDB's read_csv floor."""
    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        with zipfile.ZipFile(zip_path) as zf:
            members = [n for n in zf.namelist() if n.lower().endswith(".txt")]
            zf.extractall(tmpdir, members)
        files = [str(tmpdir / m) for m in members]
        text_mb = sum(Path(f).stat().st_size for f in files) / 1e6
        with zipfile.ZipFile(zip_path) as zf:
            n_lines = sum(sum(1 for _ in zf.open(m)) for m in members)
        floor_s, floor_rss = run_measured(FLOOR, str(tmpdir / "floor.duckdb"), *files)
        load_s, load_rss = run_measured(LOAD, str(tmpdir / "load.duckdb"), str(zip_path))
        rebuild_s, rebuild_rss = run_measured(REBUILD, str(tmpdir / "load.duckdb"), "fda")
        strict_s, strict_rss = run_measured(REBUILD, str(tmpdir / "load.duckdb"), "strict")
    print(
        f"load: {zip_path.name}: {n_lines:,} lines, {text_mb:,.0f} MB text; "
        f"load {load_s:.1f} s ({text_mb / load_s:,.0f} MB/s), peak RSS {load_rss:,.0f} MB; "
        f"floor read_csv {floor_s:.1f} s (peak RSS {floor_rss:,.0f} MB); "
        f"ratio {load_s / floor_s:.2f} (target <= 1.5, peak <= 3000 MB)"
    )
    print(
        f"clean: rebuild of the clean layer + kratom and 7-oh extraction: {rebuild_s:.1f} s, "
        f"peak RSS {rebuild_rss:,.0f} MB; with --dedup strict {strict_s:.1f} s, "
        f"peak RSS {strict_rss:,.0f} MB (target < 30 s)"
    )


def bench_demo() -> None:
    """`surveillance demo` end to end (generate, load, rebuild, signals, report), in a child."""
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [sys.executable, "-c", DEMO, str(Path(tmp) / "demo")],
            check=True,
            capture_output=True,
            text=True,
        )
    cases, prior, last = out.stdout.strip().splitlines()[-3:]
    seconds, peak_mb = (float(x) for x in last.split())
    print(
        f"demo: surveillance demo in {seconds:.1f} s, peak RSS {peak_mb:,.0f} MB "
        f"(target about 60 s); {cases.split(':', 1)[1].split(' -> ')[0].strip()}; {prior}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=400_000, help="reports in the quarter")
    parser.add_argument("--pairs", type=int, default=2_000_000, help="pairs for the prior fit")
    parser.add_argument(
        "--only",
        choices=["load", "signals", "sensitivity", "report", "prior", "ebgm", "match", "demo"],
        default=None,
        help="run one benchmark",
    )
    args = parser.parse_args()
    print("benchmark on SYNTHETIC data generated by surveillance.synthetic")
    if args.only in (None, "load"):
        bench_load(full_size_zip(args.reports))
    if args.only in (None, "signals"):
        bench_signals()
    if args.only in (None, "sensitivity"):
        bench_sensitivity()
    if args.only in (None, "report"):
        bench_report()
    if args.only in (None, "prior"):
        bench_prior(args.pairs)
    if args.only in (None, "ebgm"):
        bench_ebgm(1_000_000)
    if args.only in (None, "match"):
        bench_match(300_000)
    if args.only in (None, "demo"):
        bench_demo()


if __name__ == "__main__":
    main()

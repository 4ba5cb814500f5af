"""The scheduled job: fetch what the FDA published since the last run, load it, rebuild, report.

Reads the FDA's index page and the database; writes zips to `dest`, the database, and the
quarter's report folder. Every step is safe to interrupt: downloads are verified then renamed,
each quarter loads in one transaction, the clean layer is rebuilt in one transaction, whatever
`freshness.check` finds older than the loaded quarters (the clean layer, a substance's matches)
is rebuilt, and the report is written to a temporary folder and renamed. Then the sequential
alerts (`sequential`) are written to `alerts.json` beside the report folders, whole or not at all.
So a killed run leaves everything consistent and the next run finishes the work. A lock file
beside the database (an OS lock, released when the process dies) keeps two runs from working at
once.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import fetch as fetcher
from .db import connect, default_path
from .errors import SurveillanceError
from .faers_format import Quarter, quarter_option
from .ingest import inspect_zip, sha256_file
from .pipeline import load, repair

ALERTS_FILE = "alerts.json"
"""Written by every update into the reports folder (`--out`), beside the quarters' folders: the
sequential alerts, with `new_alerts` those of the quarters that run loaded."""
ALERT_EXIT_STATUS = 3
"""`surveillance update`'s exit status when a sequential alert fired in a quarter it loaded."""


class UpdateLocked(SurveillanceError):
    """Another update holds the lock on this database."""


@dataclass
class UpdateResult:
    """What one update run did."""

    fetched: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    rebuilt: bool = False
    report: Path | None = None
    alerts_file: Path | None = None
    new_alerts: list[dict[str, Any]] = field(default_factory=list)
    """Sequential alerts that fired in a quarter this run loaded (`alerts.json` new_alerts)."""

    @property
    def nothing_new(self) -> bool:
        return not (self.fetched or self.loaded or self.rebuilt or self.report)


@contextmanager
def update_lock(db_path: Path) -> Iterator[None]:
    """Hold an exclusive OS lock on <db>.update.lock; raise UpdateLocked if another run has it.

    flock is released by the kernel when the holder exits, however it exits, so a crashed run
    never leaves a stale lock behind."""
    lock_path = db_path.with_name(db_path.name + ".update.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as e:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise UpdateLocked(
                f"another update is running on {db_path} (pid {holder}; lock {lock_path}); "
                "try again when it finishes"
            ) from e
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def _step(log: Callable[[str], None], name: str) -> Callable[[str], None]:
    """A logger for one step that prefixes its elapsed time."""
    start = time.perf_counter()

    def done(message: str) -> None:
        log(f"{name}: {message} ({time.perf_counter() - start:.1f} s)")

    return done


def _wanted(loaded: list[str], published: list[str], since: str | None) -> list[str]:
    """Published quarters to fetch: after the last loaded one (or from `since`), not loaded."""
    if since is not None:
        start = str(Quarter.parse(since))
        return [q for q in published if q >= start and q not in loaded]
    if not loaded:
        return published[-1:]
    return [q for q in published if q > max(loaded)]


def _unloaded_zips(dest: Path, loaded: dict[str, str]) -> list[Path]:
    """Zips in dest whose quarter is not loaded, or loaded from other bytes (a newer copy)."""
    if not dest.is_dir():
        return []
    found = []
    for path in sorted(dest.glob("*.zip")):
        quarter = str(inspect_zip(path).quarter)
        if loaded.get(quarter) != sha256_file(path):
            found.append(path)
    return found


def _write_alerts(
    con: Any, substance: str, substance_file: Path | None, loaded: list[str], path: Path
) -> list[dict[str, Any]]:
    """Compute (or reuse) the sequential alerts and write `alerts.json` whole or not at all;
    the alerts of the quarters loaded by this run are its `new_alerts`. A substance without a
    case in the loaded quarters has none (the file says why)."""
    from .errors import NoDataError
    from .extract import resolve
    from .output import render_json
    from .sequential import alerts_document, sequential

    try:
        document = alerts_document(sequential(con, resolve(substance, substance_file)), loaded)
    except NoDataError as e:
        document = {"substance": substance, "loaded_this_run": list(loaded), "note": str(e)}
        document |= {"new_alerts": [], "alerts": []}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    partial.write_text(render_json(document), encoding="utf-8")
    os.replace(partial, path)
    return list(document["new_alerts"])


def update(
    db_path: Path | None = None,
    substance: str = "kratom",
    substance_file: Path | None = None,
    report_dir: Path = Path("reports"),
    dest: Path = Path("data/raw"),
    base_url: str = fetcher.DEFAULT_BASE_URL,
    index_url: str = fetcher.DEFAULT_INDEX_URL,
    since: str | None = None,
    log: Callable[[str], None] = print,
) -> UpdateResult:
    """Fetch, load, rebuild and report whatever is new; do nothing when nothing is."""
    from .report import report_is_current, write_report

    db_path = Path(db_path) if db_path is not None else default_path()
    since = quarter_option(since, "--since")
    result = UpdateResult()
    with update_lock(db_path):
        with connect(db_path) as con:
            loaded = dict(con.execute("SELECT quarter, zip_sha256 FROM quarters").fetchall())
        done = _step(log, "fetch")
        published = [p.quarter for p in fetcher.list_published(index_url)]
        wanted = _wanted(sorted(loaded), published, since)
        fetched = (
            fetcher.fetch(wanted, dest=dest, base_url=base_url, index_url=index_url)
            if wanted
            else []
        )
        result.fetched = [f.quarter for f in fetched if f.status != "present"]
        done(f"{len(published)} quarters published; fetched {result.fetched or 'nothing new'}")
        with connect(db_path) as con:
            done = _step(log, "load")
            zips = _unloaded_zips(dest, loaded)
            if zips:
                results = load(con, zips)
                result.loaded = [r.quarter for r in results]
                result.rebuilt = True
            elif loaded:
                stale = repair(con)
                if stale is not None:
                    log(f"load: {stale.repaired}")
                    result.rebuilt = True
            done(f"loaded {result.loaded or 'nothing new'}; clean layer current")
            latest = con.execute("SELECT max(quarter) FROM quarters").fetchone()
            if latest is None or latest[0] is None:
                log("report: no quarters loaded yet")
                return result
            quarter = str(latest[0])
            out = report_dir / quarter
            done = _step(log, "report")
            if report_is_current(con, out, substance, substance_file):
                done(f"{out} is up to date")
            else:
                result.report = write_report(
                    con, quarter, substance=substance, substance_file=substance_file, out=out
                )
                done(f"wrote {result.report}")
            done = _step(log, "alerts")
            result.alerts_file = report_dir / ALERTS_FILE
            result.new_alerts = _write_alerts(
                con, substance, substance_file, result.loaded, result.alerts_file
            )
            if not result.nothing_new:
                named = ", ".join(f"{a['term']} ({a['method']})" for a in result.new_alerts)
                done(
                    f"{len(result.new_alerts)} new{': ' + named if named else ''}; wrote "
                    f"{result.alerts_file}"
                )
    if result.nothing_new:
        log("nothing new")
    return result

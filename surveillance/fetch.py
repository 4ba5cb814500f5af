"""Download the FDA's quarterly FAERS/LAERS ASCII zips, and list what the FDA publishes.

Reads the FAERS Quarterly Data Extract index page (DEFAULT_INDEX_URL) and the zips under
DEFAULT_BASE_URL (faers-format.md section 1). Writes, under `dest` (default data/raw):

    faers_ascii_2019q1.zip        the verified zip, under one canonical lower-case name
    faers_ascii_2019q1.zip.json   sidecar: quarter, file, url, bytes, sha256, fetched_at
    .partial/faers_ascii_2019q1.zip.part   a download in progress, resumed with HTTP Range

A zip appears under its final name only through os.replace of a file whose every member passed
its CRC check, so a failed or killed download never leaves a file that looks complete. The
sidecar is written after the zip; a zip found without one is verified again on the next run.
Every request runs under `Timeouts`: to connect, between bytes, and a deadline per file that a
server trickling bytes cannot stretch (a watchdog shuts the socket down when it passes).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import sys
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Literal
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from tqdm import tqdm
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ProtocolError, ReadTimeoutError

from . import __version__
from .errors import SurveillanceError
from .faers_format import LAERS, TABLE_MEMBER, Quarter, ZipLimits

DEFAULT_INDEX_URL = "https://fis.fda.gov/extensions/FPD-QDE-FAERS/FPD-QDE-FAERS.html"
DEFAULT_BASE_URL = "https://fis.fda.gov/content/Exports/"

CHUNK_BYTES = 1 << 16
PARTIAL_DIR = ".partial"
# The index page is small: it gets at most this long, whatever the per-file deadline.
INDEX_DEADLINE = 120.0
TIMEOUT_ENV = {
    "connect": "SURVEILLANCE_FETCH_CONNECT_TIMEOUT",
    "read": "SURVEILLANCE_FETCH_READ_TIMEOUT",
    "deadline": "SURVEILLANCE_FETCH_DEADLINE",
}

_ASCII_HREF = re.compile(r"(?i)(?:^|/)(f?aers)_ascii_(\d{4})q([1-4])\.zip$")
_SIZE_TEXT = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*([KMG]B)")
_CONTENT_RANGE = re.compile(r"^bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)$")


# 'resumed': completed from bytes an earlier attempt or run left in the partial file.
Status = Literal["downloaded", "resumed", "present"]


class FetchError(SurveillanceError):
    """A quarter cannot be listed, downloaded or verified; the message names the URL."""


@dataclass(frozen=True)
class Timeouts:
    """Seconds to wait: to connect, for each read, and in all for one file (retries included)."""

    connect: float = 15.0
    read: float = 60.0
    deadline: float = 3600.0

    @classmethod
    def from_env(cls, **given: float | None) -> Timeouts:
        """Values given (not None), else the environment's, else the defaults."""
        values: dict[str, float] = {}
        for name, var in TIMEOUT_ENV.items():
            value = given.get(name)
            text = os.environ.get(var)
            if value is None and text:
                try:
                    value = float(text)
                except ValueError as e:
                    raise FetchError(f"{var}={text!r}: expected a number of seconds") from e
            if value is not None:
                if value <= 0:
                    raise FetchError(f"the {name} timeout must be positive, not {value:g}")
                values[name] = value
        return cls(**values)


@dataclass(frozen=True)
class Published:
    """One ASCII zip linked from the index page."""

    quarter: str
    url: str
    size_text: str | None  # as the page prints it, e.g. "63.1MB"


@dataclass(frozen=True)
class Fetched:
    """One quarter's zip in `dest`, and how this run got it."""

    quarter: str
    path: Path
    url: str | None  # None for a zip found in dest with no record of where it came from
    bytes: int
    sha256: str
    status: Status


class _NotThere(Exception):
    """The server says this URL does not exist (404/410): try the next candidate."""


class _Transient(Exception):
    """A failure worth retrying: dropped connection, timeout, 5xx, short body."""


def parse_quarters(specs: list[str]) -> list[str]:
    """Expand '2024Q1', '2023q1-2024Q2' and comma-separated lists into sorted unique quarters."""
    found: set[Quarter] = set()
    for spec in specs:
        for item in filter(None, (s.strip() for s in spec.split(","))):
            first, sep, last = item.partition("-")
            try:
                lo = Quarter.parse(first)
                hi = Quarter.parse(last) if sep else lo
            except ValueError as e:
                raise FetchError(
                    f"bad quarter {item!r}: expected like 2024Q1 or a range 2023Q1-2024Q2"
                ) from e
            if hi < lo:
                raise FetchError(f"bad quarter range {item!r}: {hi} comes before {lo}")
            while lo <= hi:
                found.add(lo)
                lo = lo.next()
    return [str(q) for q in sorted(found)]


def canonical_name(quarter: str) -> str:
    """The file name a quarter is stored under: aers_ascii_2010q1.zip, faers_ascii_2019q1.zip."""
    q = Quarter.parse(quarter)
    return f"{'aers' if q.source == LAERS else 'faers'}_ascii_{q.year}q{q.q}.zip"


def list_published(
    index_url: str = DEFAULT_INDEX_URL,
    session: requests.Session | None = None,
    timeouts: Timeouts | None = None,
    retries: int = 3,
    backoff: float = 1.0,
) -> list[Published]:
    """The ASCII zips the index page links to, oldest quarter first.

    Links to quarters before 2004Q1 (before LAERS's ASCII extracts) are ignored."""
    timeouts = timeouts or Timeouts.from_env()
    with _session(session) as s:
        page = _index_page(s, index_url, timeouts, retries, backoff)
        parser = _IndexParser()
        parser.feed(page)
        parser.close()
    found: dict[Quarter, Published] = {}
    for href, text in parser.links:
        m = _ASCII_HREF.search(urlsplit(href).path)
        if m is None or int(m.group(2)) < 2004:
            continue
        q = Quarter(int(m.group(2)), int(m.group(3)))
        size = _SIZE_TEXT.search(text)
        size_text = f"{size.group(1)}{size.group(2).upper()}" if size else None
        found.setdefault(q, Published(str(q), urljoin(index_url, href), size_text))
    if not found:
        raise FetchError(f"{index_url}: no ASCII zip links on the page (has its layout changed?)")
    return [found[q] for q in sorted(found)]


def _index_page(
    s: requests.Session, index_url: str, timeouts: Timeouts, retries: int, backoff: float
) -> str:
    """The index page's text; connection failures, timeouts and 5xx are retried with backoff."""
    deadline = min(timeouts.deadline, INDEX_DEADLINE)
    failures = 0
    while True:
        try:
            with _Watchdog(deadline) as watch:
                r = s.get(index_url, timeout=(timeouts.connect, timeouts.read))
        except requests.RequestException as e:
            if watch.expired:
                raise FetchError(f"{index_url}: no complete answer within {deadline:g} s") from e
            problem = f"cannot read the index page ({e})"
            if not isinstance(e, requests.ConnectionError | requests.Timeout):
                raise FetchError(f"{index_url}: {problem}") from e
        else:
            if r.status_code == 200:
                return r.text
            problem = f"HTTP {r.status_code} {r.reason}"
            if r.status_code < 500:
                raise FetchError(f"{index_url}: {problem}")
        failures += 1
        if failures > retries:
            raise FetchError(f"{index_url}: {problem} (gave up after {retries} retries)")
        time.sleep(backoff * 2 ** (failures - 1))


def fetch(
    quarters: list[str] | None,
    dest: Path = Path("data/raw"),
    base_url: str = DEFAULT_BASE_URL,
    index_url: str | None = None,
    latest: bool = False,
    progress: bool | None = None,
    session: requests.Session | None = None,
    retries: int = 5,
    backoff: float = 1.0,
    timeouts: Timeouts | None = None,
) -> list[Fetched]:
    """Download the named quarters, and the newest published one if `latest`, into `dest`.

    Links come from the index page when index_url is given (DEFAULT_INDEX_URL for `latest`), else
    the q and Q spellings under base_url are tried. `retries` counts failures in a row that got
    no bytes; waits grow as backoff * 2**n. `timeouts` (default: Timeouts.from_env()) bounds each
    file; past its deadline the partial file stays for the next run to resume. Raises FetchError
    at the first quarter that fails.
    """
    timeouts = timeouts or Timeouts.from_env()
    wanted = {Quarter.parse(q) for q in parse_quarters(quarters or [])}
    if not wanted and not latest:
        raise FetchError(
            "nothing to fetch: name quarters (2024Q1, 2023Q1-2024Q2) or ask for latest"
        )
    show = sys.stderr.isatty() if progress is None else progress
    base = base_url.rstrip("/") + "/"
    dest = Path(dest)
    with _session(session) as s:
        links: dict[Quarter, str] = {}
        if index_url is not None or latest:
            published = list_published(index_url or DEFAULT_INDEX_URL, s, timeouts, backoff=backoff)
            links = {Quarter.parse(p.quarter): p.url for p in published}
            if latest:
                wanted.add(max(links))
        how = _How(show, retries, backoff, timeouts)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            return [
                _fetch_quarter(s, q, _candidates(q, base, links), dest, how) for q in sorted(wanted)
            ]
        except OSError as e:  # a full or read-only disk while installing a download
            raise FetchError(f"{e.filename or dest}: cannot write: {e.strerror or e}") from e


@dataclass(frozen=True)
class _How:
    """How to download: progress bar, retries, backoff, timeouts."""

    progress: bool
    retries: int
    backoff: float
    timeouts: Timeouts


_WATCHDOG: ContextVar[_Watchdog | None] = ContextVar("surveillance_fetch_watchdog", default=None)


class _Watchdog:
    """Shuts down the socket of the request in flight once `seconds` have passed, so that no
    read, of headers or body, outlives the deadline (a per-read timeout lets a trickle run on).

    Sessions made here route every connection through _WatchedAdapter, which reports it."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def __enter__(self) -> _Watchdog:
        self._token = _WATCHDOG.set(self)
        self._timer.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._timer.cancel()
        _WATCHDOG.reset(self._token)

    def watch(self, sock: socket.socket) -> None:
        """The socket a request is about to use."""
        with self._lock:
            self._sock = sock
            if self.expired:
                self._shutdown()

    def _fire(self) -> None:
        with self._lock:
            self.expired = True
            self._shutdown()

    def _shutdown(self) -> None:
        if self._sock is not None:
            with suppress(OSError):
                self._sock.shutdown(socket.SHUT_RDWR)


def _watched(pool: type[HTTPConnectionPool]) -> type[HTTPConnectionPool]:
    """A connection pool class that hands the socket of each request to the current watchdog:
    when a connection opens, or when a kept-alive one is reused."""

    class Connection(pool.ConnectionCls):  # type: ignore[name-defined,misc]
        def connect(self) -> None:
            super().connect()
            if (watch := _WATCHDOG.get()) is not None and self.sock is not None:
                watch.watch(self.sock)

    class Watched(pool):  # type: ignore[valid-type,misc]
        ConnectionCls = Connection

        def _make_request(self, conn: Any, *args: Any, **kwargs: Any) -> Any:
            if (watch := _WATCHDOG.get()) is not None and conn.sock is not None:
                watch.watch(conn.sock)
            return super()._make_request(conn, *args, **kwargs)

    return Watched


class _WatchedAdapter(HTTPAdapter):
    """requests' adapter with pools that report their connections to the current watchdog."""

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {
            "http": _watched(HTTPConnectionPool),
            "https": _watched(HTTPSConnectionPool),
        }


class _IndexParser(HTMLParser):
    """Collects (href, link text) of every <a> on a page, whatever the layout around it."""

    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a" and self._href is not None:
            self.links.append((self._href.strip(), " ".join("".join(self._text).split())))
            self._href = None


@contextmanager
def _session(session: requests.Session | None) -> Iterator[requests.Session]:
    """The caller's session, or a new one closed afterwards."""
    if session is not None:
        yield session
        return
    with requests.Session() as s:
        s.headers["User-Agent"] = f"kratom-surveillance/{__version__}"
        for prefix in ("http://", "https://"):
            s.mount(prefix, _WatchedAdapter())
        yield s


def _candidates(q: Quarter, base: str, links: dict[Quarter, str]) -> list[str]:
    """URLs to try in order: the index page's link, then each casing the FDA has used."""
    urls = [links[q]] if q in links else []
    if q.source == LAERS:
        urls.append(f"{base}aers_ascii_{q.year}q{q.q}.zip")
    else:
        urls += [f"{base}faers_ascii_{q.year}{c}{q.q}.zip" for c in "qQ"]
    return list(dict.fromkeys(urls))


def _fetch_quarter(
    s: requests.Session, q: Quarter, candidates: list[str], dest: Path, how: _How
) -> Fetched:
    """Skip a quarter already present and valid, else download, verify and install it."""
    final = dest / canonical_name(str(q))
    sidecar = final.with_name(final.name + ".json")
    present = _present(q, final, sidecar)
    if present is not None:
        return present
    part = dest / PARTIAL_DIR / (final.name + ".part")
    part.parent.mkdir(exist_ok=True)
    for url in candidates:
        try:
            status = _download_verified(s, q, url, part, how)
        except _NotThere:
            continue
        return _install(q, part, final, sidecar, url, status)
    raise FetchError(f"quarter {q} is not published (tried {', '.join(candidates)})")


def _download_verified(s: requests.Session, q: Quarter, url: str, part: Path, how: _How) -> Status:
    """Download `url` into `part` and verify it; 'downloaded' or 'resumed'."""
    resumed = _download(s, url, part, how)
    try:
        _verify_or_discard(part, q, url)
    except FetchError:
        if not resumed:
            raise
        # The partial file may be from an older copy the FDA has since replaced: start over once.
        resumed = _download(s, url, part, how)
        _verify_or_discard(part, q, url)
    return "resumed" if resumed else "downloaded"


def _present(q: Quarter, final: Path, sidecar: Path) -> Fetched | None:
    """The zip already in dest if it is the one recorded in its sidecar (or, lacking one, valid)."""
    if not final.exists():
        return None
    try:
        record = json.loads(sidecar.read_text())
        url, size, sha = record["url"], record["bytes"], record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        try:
            _verify(final, q, str(final))
        except FetchError:
            return None
        fetched = Fetched(str(q), final, None, final.stat().st_size, _sha256(final), "present")
        _write_sidecar(sidecar, fetched)
        return fetched
    if final.stat().st_size != size or _sha256(final) != sha:
        return None
    return Fetched(str(q), final, url, size, sha, "present")


def _download(s: requests.Session, url: str, part: Path, how: _How) -> bool:
    """Complete `part` from `url`, resuming what it holds; True if any bytes were reused.

    All attempts share one deadline; past it the partial file stays, for a later run."""
    failures = 0
    reused = False
    deadline = how.timeouts.deadline
    with _Watchdog(deadline) as watch:
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                if watch.expired:
                    raise _Transient("deadline passed")
                reused = _attempt(s, url, part, before, how) or reused
                return reused
            except (_Transient, requests.ConnectionError, requests.Timeout) as e:
                if watch.expired:
                    kept = part.stat().st_size if part.exists() else 0
                    raise FetchError(
                        f"{url}: not complete within the {deadline:g} s deadline per file; "
                        f"{kept:,} bytes kept in {part} to resume"
                    ) from e
                gained = (part.stat().st_size if part.exists() else 0) > before
                failures = 0 if gained else failures + 1
                if failures > how.retries:
                    raise FetchError(f"{url}: {e} (gave up after {how.retries} retries)") from e
                time.sleep(how.backoff * 2 ** max(failures - 1, 0))
            except requests.RequestException as e:
                raise FetchError(f"{url}: {e}") from e


def _attempt(s: requests.Session, url: str, part: Path, offset: int, how: _How) -> bool:
    """One GET appending to `part` from `offset`; True if the server honoured the range."""
    # identity: byte ranges must count bytes of the file itself, not of a compressed transfer.
    headers = {"Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = (how.timeouts.connect, how.timeouts.read)
    with s.get(url, headers=headers, stream=True, timeout=timeout) as r:
        if r.status_code in (404, 410):
            raise _NotThere(url)
        if r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code} {r.reason}")
        if r.status_code == 416 and offset:
            if _range_total(r) == offset:
                return True  # the part is already whole: a run stopped before installing it
            part.unlink()
            raise _Transient("the server refused to resume; starting over")
        if r.status_code == 206:
            if _range_start(r) != offset:
                part.unlink()
                raise _Transient("the server resumed at the wrong offset; starting over")
        elif r.status_code == 200:
            offset = 0
        else:
            raise FetchError(f"{url}: HTTP {r.status_code} {r.reason}")
        encoding = r.headers.get("Content-Encoding", "identity")
        if encoding != "identity":
            raise FetchError(f"{url}: the server sent Content-Encoding {encoding}, not the file")
        length = r.headers.get("Content-Length")
        total = offset + int(length) if length is not None else None
        try:
            with (
                part.open("ab" if offset else "wb") as f,
                tqdm(
                    total=total,
                    initial=offset,
                    unit="B",
                    unit_scale=True,
                    unit_divisor=1024,
                    desc=part.name.removesuffix(".part"),
                    disable=not how.progress,
                    leave=False,
                ) as bar,
            ):
                try:
                    _copy_body(r, f, bar)
                finally:
                    f.flush()
                    os.fsync(f.fileno())
        except OSError as e:  # the socket's errors became _Transient: this is the file's
            raise FetchError(f"{part}: cannot write: {e.strerror or e}") from e
        if total is not None and part.stat().st_size != total:
            raise _Transient(f"connection closed at {part.stat().st_size} of {total} bytes")
        return r.status_code == 206


def _copy_body(r: requests.Response, f: IO[bytes], bar: tqdm[Any]) -> None:
    """Append the response body to f; a failed read is _Transient, a failed write an OSError."""
    while True:
        try:
            # raw, undecoded read1 hands over every byte as it arrives, so what came before a
            # dropped connection or a passed deadline is kept for resuming.
            chunk = r.raw.read1(CHUNK_BYTES, decode_content=False)
        except (ProtocolError, ReadTimeoutError, OSError) as e:
            raise _Transient(f"connection dropped ({e})") from e
        if not chunk:
            return
        f.write(chunk)
        bar.update(len(chunk))


def _range_start(r: requests.Response) -> int | None:
    m = _CONTENT_RANGE.match(r.headers.get("Content-Range", "").strip())
    return int(m.group(1)) if m and m.group(1) else None


def _range_total(r: requests.Response) -> int | None:
    m = _CONTENT_RANGE.match(r.headers.get("Content-Range", "").strip())
    return int(m.group(2)) if m and m.group(2) != "*" else None


def _verify(path: Path, q: Quarter, source: str) -> None:
    """Check every member's CRC, and that the zip holds this quarter's FAERS tables.

    A member that would inflate past ZipLimits (a zip bomb) is refused before any is read."""
    limits = ZipLimits.from_env()
    try:
        with zipfile.ZipFile(path) as zf:
            size = path.stat().st_size
            for info in zf.infolist():
                problem = limits.problem(info.file_size, min(info.compress_size, size))
                if problem:
                    raise FetchError(f"{source}: member {info.filename} {problem}")
            bad = zf.testzip()
            names = zf.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as e:
        raise FetchError(f"{source}: not a valid zip file ({e})") from e
    if bad is not None:
        raise FetchError(f"{source}: member {bad} fails its CRC check")
    found = {(int(m.group(2)), int(m.group(3))) for n in names if (m := TABLE_MEMBER.search(n))}
    if not found:
        raise FetchError(f"{source}: no FAERS tables (DEMO, DRUG, ...) in the zip")
    if found != {(q.year % 100, q.q)}:
        got = ", ".join(f"{yy:02d}Q{n}" for yy, n in sorted(found))
        raise FetchError(f"{source}: expected tables for {q.yyqn}, found {got}")


def _verify_or_discard(part: Path, q: Quarter, url: str) -> None:
    """Verify a download; a file that fails is deleted, so it can never be taken for complete."""
    try:
        _verify(part, q, url)
    except FetchError:
        part.unlink(missing_ok=True)
        raise


def _install(
    q: Quarter, part: Path, final: Path, sidecar: Path, url: str, status: Status
) -> Fetched:
    """Move a verified download into place, then record it; a stale sidecar goes first."""
    fetched = Fetched(str(q), final, url, part.stat().st_size, _sha256(part), status)
    sidecar.unlink(missing_ok=True)
    os.replace(part, final)
    _write_sidecar(sidecar, fetched)
    return fetched


def _write_sidecar(sidecar: Path, f: Fetched) -> None:
    """Write the sidecar atomically (temp file, then rename)."""
    record = {
        "quarter": f.quarter,
        "file": f.path.name,
        "url": f.url,
        "bytes": f.bytes,
        "sha256": f.sha256,
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    tmp = sidecar.with_name(sidecar.name + ".tmp")
    with tmp.open("w") as out:
        json.dump(record, out, indent=2)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, sidecar)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()

"""fetch against a real HTTP server on 127.0.0.1 serving generated zips and an FDA-style index.

The server (a ThreadingHTTPServer in a thread) answers Range requests with 206, and can be told
to drop the connection mid-file once, to corrupt a zip, to answer 503 a few times, to 404, or to
trickle a file's body (or the index page's headers) one byte per 0.2 s.
An autouse fixture refuses any host but 127.0.0.1, so no test reaches outside the machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.fetch import FetchError, Timeouts, fetch, list_published, parse_quarters
from surveillance.synthetic import generate_quarter

EXPORTS = "/content/Exports/"
INDEX = "/extensions/FPD-QDE-FAERS/FPD-QDE-FAERS.html"
# Served names as the FDA spells them: lower-case q to 2018Q4, upper-case Q for 2019Q1.
QUARTERS = {"2012Q3": "aers_ascii_2012q3.zip", "2018Q4": "faers_ascii_2018q4.zip"}
QUARTERS["2019Q1"] = "faers_ascii_2019Q1.zip"


@dataclass
class Server:
    """What the test server serves, how it misbehaves, and every request it saw."""

    zips: dict[str, bytes]
    base: str = ""
    drop_after: dict[str, int] = field(default_factory=dict)  # name -> bytes sent, once
    corrupt: set[str] = field(default_factory=set)
    fail_5xx: dict[str, int] = field(default_factory=dict)  # name -> 503s before success
    trickle: dict[str, int] = field(default_factory=dict)  # name -> bytes sent before trickling
    trickle_index_headers: bool = False
    index_5xx: int = 0  # 503s the index page answers before succeeding
    extra_links: list[tuple[str, str]] = field(default_factory=list)  # (months, href) on the index
    log: list[tuple[str, str | None, int]] = field(default_factory=list)  # path, Range, status

    @property
    def exports(self) -> str:
        return self.base + EXPORTS

    @property
    def index(self) -> str:
        return self.base + INDEX

    def zip_requests(self) -> list[tuple[str, str | None, int]]:
        return [r for r in self.log if r[0].startswith(EXPORTS)]


def _index_html(base: str, extra: list[tuple[str, str]]) -> str:
    """An index page shaped like the FDA's: a panel per year, rows by month, ASCII/XML links."""
    panels = [f'<a href="{href}">ASCII ({months})</a>' for months, href in extra]
    for year, rows in (
        (2019, [("January - March", f"{base}{EXPORTS}faers_ascii_2019Q1.zip", "11.7KB")]),
        (2018, [("October - December", "../../content/Exports/faers_ascii_2018q4.zip", "11.5KB")]),
        (2012, [("July - September", f"{EXPORTS}aers_ascii_2012q3.zip", "9MB")]),
    ):
        cells = "".join(
            f'<tr><td>{months}</td><td><a href="{href}">ASCII ({size})</a></td>'
            f'<td><a href="{href.replace("ascii", "xml")}">XML (20KB)</a></td></tr>'
            for months, href, size in rows
        )
        panels.append(
            f'<div class="panel panel-default"><div class="panel-heading">'
            f'<h4 class="panel-title"><a data-toggle="collapse" href="#y{year}">{year}</a></h4>'
            f'</div><div id="y{year}" class="panel-collapse"><table>{cells}</table></div></div>'
        )
    return f"<html><body><h1>FAERS Quarterly Data Extract Files</h1>{''.join(panels)}</body></html>"


class _Handler(BaseHTTPRequestHandler):
    server: Any

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads `Server.log` instead."""

    def _reply(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        state: Server = self.server.state
        state.log.append((self.path, self.headers.get("Range"), status))
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        state: Server = self.server.state
        if self.path == INDEX:
            if state.index_5xx > 0:
                state.index_5xx -= 1
                return self._reply(503, b"busy")
            if state.trickle_index_headers:
                state.log.append((self.path, None, 200))
                return self._trickle(b"HTTP/1.1 200 OK\r\n" + b"X-Slow: " + b"z" * 200)
            page = _index_html(state.base, state.extra_links).encode()
            return self._reply(200, page, {"Content-Type": "text/html"})
        name = self.path.removeprefix(EXPORTS)
        if not self.path.startswith(EXPORTS) or name not in state.zips:
            return self._reply(404, b"not found")
        if state.fail_5xx.get(name, 0) > 0:
            state.fail_5xx[name] -= 1
            return self._reply(503, b"busy")
        body = state.zips[name]
        if name in state.corrupt:
            middle = len(body) // 2
            flipped = bytes(b ^ 0xFF for b in body[middle : middle + 64])
            body = body[:middle] + flipped + body[middle + 64 :]
        start = 0
        if m := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", "")):
            start = int(m.group(1))
            if start >= len(body):
                return self._reply(416, b"", {"Content-Range": f"bytes */{len(body)}"})
        headers = {"Content-Type": "application/zip", "Content-Length": str(len(body) - start)}
        status = 200
        if start:
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        if name in state.trickle:
            state.log.append((self.path, self.headers.get("Range"), status))
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            fast = state.trickle[name]
            self.wfile.write(body[start:][:fast])
            return self._trickle(body[start:][fast:])
        if name in state.drop_after:
            # Promise the whole body, send part of it, then hang up.
            return self._reply(status, body[start:][: state.drop_after.pop(name)], headers)
        return self._reply(status, body[start:], headers)

    def _trickle(self, data: bytes) -> None:
        """Send one byte per 0.2 s (at most 200) until the client hangs up."""
        try:
            for i in range(min(len(data), 200)):
                self.wfile.write(data[i : i + 1])
                self.wfile.flush()
                time.sleep(0.2)
        except OSError:
            pass


@pytest.fixture(autouse=True)
def _local_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any name lookup but 127.0.0.1 fails, so a test can never reach the real FDA."""
    real = socket.getaddrinfo

    def lookup(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "127.0.0.1":
            raise OSError(f"test tried to reach {host!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", lookup)


@pytest.fixture(scope="module")
def zips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Generated zips by the name the server publishes them under."""
    out = tmp_path_factory.mktemp("served")
    files = {q: generate_quarter(q, out, n_cases=40).zip_path for q in QUARTERS}
    assert {q: p.name for q, p in files.items()} == QUARTERS
    return {p.name: p.read_bytes() for p in files.values()}


@pytest.fixture
def server(zips: dict[str, bytes]) -> Iterator[Server]:
    state = Server(dict(zips))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _fetch(server: Server, quarters: list[str] | None, dest: Path, **kw: Any) -> list[Any]:
    return fetch(quarters, dest, base_url=server.exports, progress=False, backoff=0, **kw)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _leftovers(dest: Path) -> list[str]:
    return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())


def test_parse_quarters() -> None:
    assert parse_quarters(["2024q1"]) == ["2024Q1"]
    assert parse_quarters(["2023Q3-2024q2", "2023Q4,2012Q3"]) == [
        "2012Q3",
        "2023Q3",
        "2023Q4",
        "2024Q1",
        "2024Q2",
    ]
    for junk in ["2024", "2024Q5", "1999Q1", "2024Q2-2024Q1", "latest", "2024Q1-"]:
        with pytest.raises(FetchError, match="bad quarter"):
            parse_quarters([junk])


def test_list_published(server: Server) -> None:
    published = list_published(server.index)
    assert [(p.quarter, p.url, p.size_text) for p in published] == [
        ("2012Q3", f"{server.exports}aers_ascii_2012q3.zip", "9MB"),
        ("2018Q4", f"{server.exports}faers_ascii_2018q4.zip", "11.5KB"),
        ("2019Q1", f"{server.exports}faers_ascii_2019Q1.zip", "11.7KB"),
    ]


def test_list_published_without_index_page(server: Server) -> None:
    with pytest.raises(FetchError, match=r"/missing\.html: HTTP 404"):
        list_published(server.base + "/missing.html")


def test_full_fetch(server: Server, zips: dict[str, bytes], tmp_path: Path) -> None:
    got = _fetch(server, ["2018Q4", "2012Q3"], tmp_path)
    assert [(f.quarter, f.status, f.path.name) for f in got] == [
        ("2012Q3", "downloaded", "aers_ascii_2012q3.zip"),
        ("2018Q4", "downloaded", "faers_ascii_2018q4.zip"),
    ]
    for f in got:
        data = zips[f.url.rsplit("/", 1)[1]]
        assert f.path.read_bytes() == data
        assert (f.bytes, f.sha256) == (len(data), _sha(data))
        record = json.loads(f.path.with_name(f.path.name + ".json").read_text())
        assert record["url"] == f.url
        assert (record["quarter"], record["bytes"], record["sha256"]) == (
            f.quarter,
            f.bytes,
            f.sha256,
        )
    assert _leftovers(tmp_path) == [
        "aers_ascii_2012q3.zip",
        "aers_ascii_2012q3.zip.json",
        "faers_ascii_2018q4.zip",
        "faers_ascii_2018q4.zip.json",
    ]


def test_mixed_casing_found_by_fallback(
    server: Server, zips: dict[str, bytes], tmp_path: Path
) -> None:
    [f] = _fetch(server, ["2019q1"], tmp_path)
    assert f.path == tmp_path / "faers_ascii_2019q1.zip"
    assert f.path.read_bytes() == zips["faers_ascii_2019Q1.zip"]
    assert [(path, status) for path, _, status in server.zip_requests()] == [
        (f"{EXPORTS}faers_ascii_2019q1.zip", 404),
        (f"{EXPORTS}faers_ascii_2019Q1.zip", 200),
    ]


def test_index_gives_exact_links_and_latest(server: Server, tmp_path: Path) -> None:
    got = _fetch(server, ["2012Q3"], tmp_path, index_url=server.index, latest=True)
    assert [(f.quarter, f.url) for f in got] == [
        ("2012Q3", f"{server.exports}aers_ascii_2012q3.zip"),
        ("2019Q1", f"{server.exports}faers_ascii_2019Q1.zip"),
    ]
    assert [status for *_, status in server.zip_requests()] == [200, 200]


def test_resume_after_dropped_connection(
    server: Server, zips: dict[str, bytes], tmp_path: Path
) -> None:
    data = zips["faers_ascii_2018q4.zip"]
    server.drop_after["faers_ascii_2018q4.zip"] = 4000
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    assert f.status == "resumed"
    assert server.zip_requests() == [
        (f"{EXPORTS}faers_ascii_2018q4.zip", None, 200),
        (f"{EXPORTS}faers_ascii_2018q4.zip", "bytes=4000-", 206),
    ]
    assert f.path.read_bytes() == data
    assert f.sha256 == _sha(data)
    assert not (tmp_path / ".partial" / "faers_ascii_2018q4.zip.part").exists()


def test_resume_partial_left_by_killed_run(
    server: Server, zips: dict[str, bytes], tmp_path: Path
) -> None:
    data = zips["faers_ascii_2018q4.zip"]
    part = tmp_path / ".partial" / "faers_ascii_2018q4.zip.part"
    part.parent.mkdir()
    part.write_bytes(data[:5000])
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    assert (f.status, f.path.read_bytes()) == ("resumed", data)
    assert [rng for _, rng, _ in server.zip_requests()] == ["bytes=5000-"]


def test_whole_partial_is_installed_without_download(
    server: Server, zips: dict[str, bytes], tmp_path: Path
) -> None:
    data = zips["faers_ascii_2018q4.zip"]
    part = tmp_path / ".partial" / "faers_ascii_2018q4.zip.part"
    part.parent.mkdir()
    part.write_bytes(data)
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    assert (f.status, f.path.read_bytes()) == ("resumed", data)
    assert [status for *_, status in server.zip_requests()] == [416]


def test_stale_partial_is_discarded(server: Server, zips: dict[str, bytes], tmp_path: Path) -> None:
    data = zips["faers_ascii_2018q4.zip"]
    part = tmp_path / ".partial" / "faers_ascii_2018q4.zip.part"
    part.parent.mkdir()
    part.write_bytes(b"x" * 3000)
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    assert (f.status, f.path.read_bytes()) == ("downloaded", data)
    assert [rng for _, rng, _ in server.zip_requests()] == ["bytes=3000-", None]


def test_corrupt_zip_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.corrupt.add("faers_ascii_2018q4.zip")
    with pytest.raises(FetchError) as e:
        _fetch(server, ["2018Q4"], tmp_path)
    assert str(e.value).startswith(f"{server.exports}faers_ascii_2018q4.zip: ")
    assert "CRC" in str(e.value) or "not a valid zip" in str(e.value)
    assert _leftovers(tmp_path) == []


def test_unpublished_quarter(server: Server, tmp_path: Path) -> None:
    with pytest.raises(FetchError) as e:
        _fetch(server, ["2031Q1"], tmp_path)
    assert str(e.value) == (
        f"quarter 2031Q1 is not published (tried {server.exports}faers_ascii_2031q1.zip, "
        f"{server.exports}faers_ascii_2031Q1.zip)"
    )
    assert _leftovers(tmp_path) == []


def test_second_fetch_is_present(server: Server, tmp_path: Path) -> None:
    first = _fetch(server, ["2018Q4", "2019Q1"], tmp_path)
    seen = len(server.log)
    second = _fetch(server, ["2018Q4", "2019Q1"], tmp_path)
    assert len(server.log) == seen
    assert [f.status for f in second] == ["present", "present"]
    assert [(f.url, f.sha256) for f in second] == [(f.url, f.sha256) for f in first]


def test_present_check_uses_sidecar(server: Server, zips: dict[str, bytes], tmp_path: Path) -> None:
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    sidecar = tmp_path / "faers_ascii_2018q4.zip.json"
    sidecar.unlink()  # as if killed between installing the zip and recording it
    [again] = _fetch(server, ["2018Q4"], tmp_path)
    assert (again.status, again.url, again.sha256) == ("present", None, f.sha256)
    assert json.loads(sidecar.read_text())["sha256"] == f.sha256
    assert len(server.zip_requests()) == 1

    f.path.write_bytes(b"not the file that was recorded")
    [fresh] = _fetch(server, ["2018Q4"], tmp_path)
    assert fresh.status == "downloaded"
    assert fresh.path.read_bytes() == zips["faers_ascii_2018q4.zip"]
    assert json.loads(sidecar.read_text())["url"] == fresh.url


def test_server_errors_are_retried(server: Server, tmp_path: Path) -> None:
    server.fail_5xx["faers_ascii_2018q4.zip"] = 2
    [f] = _fetch(server, ["2018Q4"], tmp_path)
    assert f.status == "downloaded"
    assert [status for *_, status in server.zip_requests()] == [503, 503, 200]

    server.fail_5xx["aers_ascii_2012q3.zip"] = 3
    with pytest.raises(FetchError, match=r"aers_ascii_2012q3\.zip: HTTP 503 .*gave up after 2"):
        _fetch(server, ["2012Q3"], tmp_path, retries=2)
    assert not (tmp_path / "aers_ascii_2012q3.zip").exists()


def test_nothing_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="nothing to fetch"):
        fetch([], tmp_path)


FAST = Timeouts(connect=5, read=5, deadline=1.5)


def test_trickling_server_cannot_hang_a_download(server: Server, tmp_path: Path) -> None:
    """1 byte per 0.2 s never trips a read timeout; the per-file deadline stops it, the partial
    file stays, and the next run resumes from it."""
    name = "faers_ascii_2018q4.zip"
    server.trickle[name] = 4000  # 800 s at full length: only the deadline ends it
    with pytest.raises(FetchError) as e:
        _fetch(server, ["2018Q4"], tmp_path, timeouts=FAST)
    part = tmp_path / ".partial" / f"{name}.part"
    assert str(e.value).startswith(f"{server.exports}{name}: not complete within the 1.5 s")
    assert f"bytes kept in {part} to resume" in str(e.value)
    kept = part.read_bytes()
    assert 4000 <= len(kept) < len(server.zips[name])
    assert not (tmp_path / name).exists()

    del server.trickle[name]
    [f] = _fetch(server, ["2018Q4"], tmp_path, timeouts=FAST)
    assert f.status == "resumed"
    assert f.path.read_bytes() == server.zips[name]
    assert server.zip_requests()[-1][1] == f"bytes={len(kept)}-"


def test_trickled_index_headers_cannot_hang(server: Server) -> None:
    server.trickle_index_headers = True
    # The deadline's own message, not a timing: the headers never complete without it.
    with pytest.raises(FetchError, match=r"FPD-QDE-FAERS\.html: no complete answer within 1\.5 s"):
        list_published(server.index, timeouts=FAST, backoff=0)


def test_index_page_is_retried(server: Server) -> None:
    server.index_5xx = 2
    assert [p.quarter for p in list_published(server.index, backoff=0)] == [
        "2012Q3",
        "2018Q4",
        "2019Q1",
    ]
    assert [status for path, _, status in server.log if path == INDEX] == [503, 503, 200]
    server.index_5xx = 5
    with pytest.raises(FetchError, match=r"HTTP 503 .*gave up after 1 retries"):
        list_published(server.index, backoff=0, retries=1)


def test_pre_2004_link_on_the_index_is_ignored(server: Server, tmp_path: Path) -> None:
    server.extra_links.append(("October - December 2003", f"{EXPORTS}aers_ascii_2003q4.zip"))
    assert [p.quarter for p in list_published(server.index)] == ["2012Q3", "2018Q4", "2019Q1"]
    [f] = fetch(None, tmp_path, index_url=server.index, latest=True, progress=False, backoff=0)
    assert f.quarter == "2019Q1"


def test_fetch_command_deadline_is_one_line(server: Server, tmp_path: Path) -> None:
    server.trickle["faers_ascii_2018q4.zip"] = 100
    args = ["fetch", "2018Q4", "--dest", str(tmp_path), "--base-url", server.exports]
    result = CliRunner().invoke(cli, [*args, "--deadline", "1", "--quiet"])
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "not complete within the 1 s deadline per file" in lines[0]


def test_timeouts_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SURVEILLANCE_FETCH_DEADLINE", "42")
    assert Timeouts.from_env() == Timeouts(deadline=42)
    assert Timeouts.from_env(deadline=7, read=3) == Timeouts(read=3, deadline=7)
    monkeypatch.setenv("SURVEILLANCE_FETCH_READ_TIMEOUT", "soon")
    with pytest.raises(FetchError, match="SURVEILLANCE_FETCH_READ_TIMEOUT='soon'"):
        Timeouts.from_env()


@pytest.fixture
def tiny_disk(tmpfs) -> Path:
    """An 8 KB tmpfs (needs root; skipped elsewhere)."""
    return tmpfs("8k")


def test_full_disk_is_one_line_naming_the_file(server: Server, tiny_disk: Path) -> None:
    args = ["fetch", "2018Q4", "--dest", str(tiny_disk), "--base-url", server.exports, "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1, result.output
    part = tiny_disk / ".partial" / "faers_ascii_2018q4.zip.part"
    assert result.output.strip() == f"Error: {part}: cannot write: No space left on device"
    assert not (tiny_disk / "faers_ascii_2018q4.zip").exists()


def test_zip_bomb_refused_before_it_is_inflated(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """testzip would inflate every member: the zip directory is checked against the caps first."""
    name = "faers_ascii_2018q4.zip"
    with zipfile.ZipFile(io.BytesIO(server.zips[name])) as src:
        members = {n: src.read(n) for n in src.namelist()}
    members["ascii/ZEROS.txt"] = b"0" * (4 << 20)
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for n, data in members.items():
            zf.writestr(n, data)
    server.zips[name] = out.getvalue()
    monkeypatch.setenv("SURVEILLANCE_MAX_MEMBER_BYTES", str(1 << 20))
    with pytest.raises(
        FetchError, match=r"member ascii/ZEROS\.txt inflates to more than 1,048,576"
    ):
        _fetch(server, ["2018Q4"], tmp_path)
    assert _leftovers(tmp_path) == []

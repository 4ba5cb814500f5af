"""`update` as a scheduler runs it, against a real HTTP server on 127.0.0.1 that publishes
generated quarters: first run fetches, loads and reports; the second is a no-op; it refuses to
run beside itself; and a load killed with SIGKILL is completed by the next update."""

from __future__ import annotations

import functools
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.synthetic import generate_quarter, write_full_size_quarter
from surveillance.update import UpdateLocked, update, update_lock

INDEX = """<html><body><div class="panel panel-default"><h3>{year}</h3><table>{rows}</table>
</div></body></html>"""


class Site:
    """A folder served over HTTP with an FDA-style index page listing its zips."""

    def __init__(self, root: Path, url: str) -> None:
        self.root = root
        self.url = url

    def publish(self, zip_path: Path) -> None:
        (self.root / zip_path.name).write_bytes(zip_path.read_bytes())
        rows = "".join(
            f'<tr><td>January - March</td><td><a href="/{p.name}">ASCII (1MB)</a></td></tr>'
            for p in sorted(self.root.glob("*.zip"))
        )
        (self.root / "index.html").write_text(INDEX.format(year="all", rows=rows))

    @property
    def index(self) -> str:
        return self.url + "/index.html"


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    root = tmp_path / "site"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Site(root, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def _run(tmp_path: Path, site: Site, **kwargs: object):
    lines: list[str] = []
    result = update(
        tmp_path / "db.duckdb",
        report_dir=tmp_path / "reports",
        dest=tmp_path / "raw",
        base_url=site.url,
        index_url=site.index,
        log=lines.append,
        **kwargs,  # type: ignore[arg-type]
    )
    return result, lines


@pytest.mark.slow
def test_update_fetches_loads_reports_then_is_a_no_op(tmp_path: Path, site: Site) -> None:
    for q in ("2019Q1", "2019Q2"):
        site.publish(generate_quarter(q, tmp_path / "gen", n_cases=60, seed=3).zip_path)
    first, lines = _run(tmp_path, site, since="2019Q1")
    assert first.fetched == ["2019Q1", "2019Q2"] and first.loaded == ["2019Q1", "2019Q2"]
    assert first.report == tmp_path / "reports" / "2019Q2"
    assert (first.report / "index.html").is_file()
    assert any(line.startswith("fetch: ") and line.endswith(" s)") for line in lines)
    second, lines = _run(tmp_path, site)
    assert second.nothing_new and lines[-1] == "nothing new"
    site.publish(generate_quarter("2019Q3", tmp_path / "gen", n_cases=60, seed=3).zip_path)
    third, _ = _run(tmp_path, site)
    assert third.fetched == ["2019Q3"] and third.loaded == ["2019Q3"]
    assert third.report == tmp_path / "reports" / "2019Q3"


@pytest.mark.slow
def test_update_refuses_to_run_beside_itself(tmp_path: Path, site: Site) -> None:
    site.publish(generate_quarter("2019Q1", tmp_path / "gen", n_cases=30, seed=3).zip_path)
    with update_lock(tmp_path / "db.duckdb"):
        with pytest.raises(UpdateLocked, match="another update is running"):
            _run(tmp_path, site)
        result = CliRunner().invoke(
            cli,
            [
                "update",
                "--db",
                str(tmp_path / "db.duckdb"),
                "--index-url",
                site.index,
                "--base-url",
                site.url,
                "--dest",
                str(tmp_path / "raw"),
                "--quiet",
            ],
        )
        assert result.exit_code == 1
        assert result.output.startswith("Error: another update is running")
    # The lock dies with its holder, however it exits.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path;"
            "from surveillance.update import update_lock;"
            "ctx = update_lock(Path(sys.argv[1])); ctx.__enter__(); print('held', flush=True);"
            " time.sleep(60)",
            str(tmp_path / "db.duckdb"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    with pytest.raises(UpdateLocked):
        _run(tmp_path, site)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    result, _ = _run(tmp_path, site)
    assert result.loaded == ["2019Q1"]


def _digest(db: Path) -> dict[str, str]:
    """Content of every data table, order-independent (a sum of row hashes), without the
    timestamps of when things were loaded or built."""
    skip = {"loaded_at", "rebuilt_at", "extracted_at", "created_at", "fitted_at", "fit_seconds"}
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [
            r[0]
            for r in con.execute("SELECT table_name FROM duckdb_tables() ORDER BY 1").fetchall()
            if not r[0].startswith(("signal", "sequential", "asof"))
        ]
        out = {}
        for t in tables:
            cols = [
                r[0]
                for r in con.execute(
                    "SELECT column_name FROM duckdb_columns() WHERE table_name = $t "
                    "ORDER BY column_index",
                    {"t": t},
                ).fetchall()
                if r[0] not in skip
            ]
            # The report's sensitivity analyses also extract the comparator's term file; a
            # plain load does not: compare the built-in substances' rows.
            where = "WHERE substance IN ('kratom', '7-oh')" if "substance" in cols else ""
            row = con.execute(
                f"SELECT count(*), sum(hash({', '.join(cols)})::HUGEINT) FROM {t} {where}"
            ).fetchone()
            out[t] = repr(row)
        return out


@pytest.mark.slow
def test_load_killed_midway_is_completed_by_update(tmp_path: Path, site: Site) -> None:
    zips = [
        write_full_size_quarter(q, tmp_path / "gen" / q, n_reports=30_000, seed=i)
        for i, q in enumerate(("2024Q1", "2024Q2", "2024Q3"))
    ]
    for z in zips:
        site.publish(z)
    raw = tmp_path / "raw"
    raw.mkdir()
    for z in zips:
        (raw / z.name.replace("Q", "q")).write_bytes(z.read_bytes())
    db = tmp_path / "db.duckdb"
    loader = subprocess.Popen(
        [sys.executable, "-m", "surveillance.cli", "load", str(raw), "--db", str(db), "--quiet"]
    )
    deadline = time.monotonic() + 60
    while not (db.exists() and db.stat().st_size > 2_000_000) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.kill(loader.pid, signal.SIGKILL)
    loader.wait()
    result, _ = _run(tmp_path, site, since="2024Q1")
    assert result.rebuilt
    reference = tmp_path / "reference"
    reference.mkdir()
    done = CliRunner().invoke(cli, ["load", str(raw), "--db", str(reference / "db.duckdb")])
    assert done.exit_code == 0, done.output
    assert _digest(db) == _digest(reference / "db.duckdb")


@pytest.mark.slow
def test_update_repairs_a_kill_between_clean_layer_and_extraction(
    tmp_path: Path, site: Site
) -> None:
    zips = [
        generate_quarter(q, tmp_path / "gen", n_cases=120, seed=4).zip_path
        for q in ("2019Q1", "2019Q2")
    ]
    for z in zips:
        site.publish(z)
    reference = tmp_path / "reference"
    reference.mkdir()
    done, _ = _run(reference, site, since="2019Q1")
    assert done.report is not None
    # The same quarters, the second loaded by a process that dies right after the clean layer
    # committed and before the substances were extracted again.
    killed = tmp_path / "killed"
    (killed / "raw").mkdir(parents=True)
    for z in zips:
        (killed / "raw" / z.name).write_bytes(z.read_bytes())
    db = killed / "db.duckdb"
    code = (
        "import os, sys; from pathlib import Path; import surveillance.extract as e;"
        "from surveillance.db import connect; from surveillance.pipeline import load;"
        "load(connect(Path(sys.argv[1])), [Path(sys.argv[2])]);"
        "e.extract_builtins = lambda con: os._exit(9);"
        "load(connect(Path(sys.argv[1])), [Path(sys.argv[3])])"
    )
    dead = subprocess.run(
        [sys.executable, "-c", code, str(db), *(str(killed / "raw" / z.name) for z in zips)],
        check=False,
    )
    assert dead.returncode == 9
    assert _digest(db)["substance_hits"] != _digest(reference / "db.duckdb")["substance_hits"]
    repaired, lines = _run(killed, site)
    assert repaired.rebuilt and not repaired.loaded
    assert "load: substance matches (7-oh, kratom) were older than the clean layer" in (
        " ".join(lines)
    )
    # Every table alike but `quarters`, which names the folder each zip was loaded from.
    ours, theirs = _digest(db), _digest(reference / "db.duckdb")
    del ours["quarters"], theirs["quarters"]
    assert ours == theirs
    for table in ("signals", "cases"):
        name = f"tables/{table}.csv"
        assert (repaired.report / name).read_text() == (done.report / name).read_text()
    again, lines = _run(killed, site)
    assert again.nothing_new and lines[-1] == "nothing new"

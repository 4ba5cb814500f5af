"""Every `surveillance ...` example of the README runs on the demo database.

The commands come from the README's `sh` blocks ("Using it") and the `Example:` line of each
command's help (the command reference), in that order, as a user would type them in a fresh
folder: relative paths (`data/raw/`, `figures/`, `reports/`) land in a temporary directory,
`SURVEILLANCE_DB=kratom.duckdb` is a copy of the demo database built at a tenth of its scale, and
`data/raw/` starts with the demo's last quarter. Each must exit 0 with output (or, redirected with
`>`, write a non-empty file). The substitutions are listed in SUBSTITUTED with their reasons.

Figures are drawn but not rasterised (Figure.savefig writes a 1-pixel PNG or an empty SVG):
rendering them is what makes `trends --plot`, `report` and `update` slow, and it is tested in
test_plots.py and test_report.py; here the point is that each command runs on the demo data.
"""

from __future__ import annotations

import functools
import http.server
import io
import re
import shlex
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner
from matplotlib.figure import Figure
from PIL import Image

from surveillance.cli import cli
from surveillance.demo import DemoData
from surveillance.synthetic import generate_series
from surveillance.update import ALERT_EXIT_STATUS

# The slow tier (`make test-slow`, which CI runs after `make test`): it builds a demo database and
# runs every command end to end, `update` and `report` included.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"

# Quarters the README fetches; published by a local server instead of the FDA.
FETCHED = ["2023Q1", "2023Q2", "2023Q3", "2023Q4", "2024Q1", "2024Q2"]

NETWORK = "fetch and update read the FDA's site: pointed at a local http.server on 127.0.0.1"
SUBSTITUTED = {
    "surveillance demo --out /tmp/demo": (
        None,
        "runs the full-scale demo (about a minute; timed by `make bench`); the database under "
        "test is built by the same code (surveillance.demo.build_database) at a smaller scale",
    ),
    "surveillance update --db /srv/faers/kratom.duckdb --out /srv/faers/reports": (
        "surveillance update --db kratom.duckdb --report-dir reports",
        "/srv/faers is a server's folder: the same command on the test folder; " + NETWORK,
    ),
}


def _placeholder_savefig(self: Figure, path: Path, format: str, **kwargs: object) -> None:
    if format == "svg":
        Path(path).write_text('<svg xmlns="http://www.w3.org/2000/svg"/>', encoding="utf-8")
        return
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1), "white").save(buffer, format="PNG")
    Path(path).write_bytes(buffer.getvalue())


def _examples() -> list[str]:
    """The README's example commands, comments dropped, in order, each once."""
    text = README.read_text(encoding="utf-8")
    found = [
        line.strip()
        for block in re.findall(r"```sh\n(.*?)```", text, re.S)
        for line in block.splitlines()
        if line.startswith("surveillance ")
    ]
    found += re.findall(r"^\s+Example: (surveillance .+)$", text, re.M)
    unique: dict[str, str] = {}
    for line in found:
        unique.setdefault(
            shlex.join(shlex.split(line, comments=True)), re.sub(r"\s+#.*$", "", line)
        )
    return list(unique.values())


EXAMPLES = _examples()


@dataclass
class Folder:
    """The user's working folder and the local stand-in for the FDA's site."""

    path: Path
    site_url: str


@pytest.fixture(scope="module")
def folder(demo_data: DemoData, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Folder]:
    work = tmp_path_factory.mktemp("readme")
    shutil.copy(demo_data.db_path, work / "kratom.duckdb")
    raw = work / "data" / "raw"
    raw.mkdir(parents=True)
    last = demo_data.series.quarters[-1].zip_path
    shutil.copy(last, raw / last.name)
    site = tmp_path_factory.mktemp("site")
    series = generate_series(FETCHED, site, n_cases=20, seed=11)
    rows = "".join(
        f'<tr><td><a href="/{q.zip_path.name}">ASCII</a></td></tr>' for q in series.quarters
    )
    (site / "index.html").write_text(f"<html><body><table>{rows}</table></body></html>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield Folder(work, f"http://127.0.0.1:{server.server_address[1]}")
    finally:
        server.shutdown()
        server.server_close()


def test_readme_has_examples() -> None:
    assert len(EXAMPLES) >= 20
    assert "surveillance case 10014022" in EXAMPLES
    assert any(c.startswith("surveillance fetch ") for c in EXAMPLES)
    assert "surveillance update" in EXAMPLES


@pytest.mark.parametrize("command", EXAMPLES)
def test_readme_example_runs(command: str, folder: Folder, monkeypatch) -> None:
    if command in SUBSTITUTED:
        command, reason = SUBSTITUTED[command]
        if command is None:
            pytest.skip(reason)
    args = shlex.split(command)[1:]
    target = None
    if ">" in args:  # a shell redirection: the output goes to a file
        args, target = args[: args.index(">")], args[args.index(">") + 1]
    if args[0] in ("fetch", "update"):
        args += ["--base-url", folder.site_url, "--index-url", f"{folder.site_url}/index.html"]
    monkeypatch.chdir(folder.path)
    monkeypatch.setattr(Figure, "savefig", _placeholder_savefig)
    result = CliRunner().invoke(cli, args, env={"SURVEILLANCE_DB": "kratom.duckdb"})
    # update exits ALERT_EXIT_STATUS when a new sequential alert fires (README: "Sequential
    # alerts"), which the generated quarters may well do; anything else is a failure.
    allowed = (0, ALERT_EXIT_STATUS) if args[0] == "update" else (0,)
    assert result.exit_code in allowed, f"{command}\n{result.output}"
    if result.exit_code == ALERT_EXIT_STATUS:
        assert "alerts: " in result.output and " new: " in result.output
    if target is None:
        assert result.output.strip(), command
    else:
        Path(target).write_text(result.stdout, encoding="utf-8")
        assert Path(target).stat().st_size > 0 and len(result.stdout.splitlines()) > 1

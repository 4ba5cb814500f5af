"""Progress of long steps: a status line on a terminal, nothing when stderr is piped or with
--quiet."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from surveillance.cli import cli
from surveillance.progress import terminal_progress
from surveillance.synthetic import generate_series


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_status_line_on_a_terminal_shows_each_step_and_is_erased() -> None:
    screen = _Terminal()
    with terminal_progress(stream=screen) as step:
        assert step is not None
        step("loading 2024Q1")
        time.sleep(0.6)  # the line refreshes while a step runs
        step("kratom: 3 cases \x1b[2J")
    text = screen.getvalue()
    assert "\rloading 2024Q1 [00:00]" in text
    assert text.count("loading 2024Q1") >= 2
    assert "kratom: 3 cases ^[[2J" in text and "\x1b" not in text
    assert text.endswith("\r") and text.rsplit("\r", 2)[-2].strip() == ""


def test_no_progress_when_piped_or_quiet() -> None:
    piped = io.StringIO()
    with terminal_progress(stream=piped) as step:
        assert step is None
    with terminal_progress(quiet=True, stream=_Terminal()) as step:
        assert step is None
    assert piped.getvalue() == ""


@pytest.mark.slow
def test_load_and_rebuild_print_no_progress_when_piped(tmp_path: Path) -> None:
    generate_series(["2024Q1"], tmp_path / "zips", n_cases=30, seed=2, damage=False)
    db = str(tmp_path / "db.duckdb")
    runner = CliRunner()
    loaded = runner.invoke(cli, ["load", str(tmp_path / "zips"), "--db", db])
    assert loaded.exit_code == 0, loaded.output
    assert loaded.stderr == "" and "2024Q1: " in loaded.stdout
    quiet = runner.invoke(cli, ["load", str(tmp_path / "zips"), "--db", db, "--quiet"])
    assert quiet.exit_code == 0 and quiet.stdout == quiet.stderr == ""
    for args in (["rebuild"], ["rebuild", "--quiet"]):
        result = runner.invoke(cli, [*args, "--db", db])
        assert result.exit_code == 0, result.output
        assert result.stderr == "" and "n_cases" in result.stdout

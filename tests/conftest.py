"""Shared fixtures: one generated multi-era series, loaded once per test session."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import pytest

from surveillance.db import connect
from surveillance.pipeline import load
from surveillance.synthetic import Series, generate_series

if TYPE_CHECKING:
    from surveillance.demo import DemoData

# Crosses the LAERS -> FAERS switch and the start of deleted lists, and reaches 7-OH years.
SERIES = ["2012Q2", "2012Q3", "2012Q4", "2013Q1", "2018Q4", "2019Q1", "2019Q2", "2023Q1"]


@pytest.fixture(scope="session")
def series_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Series, Path]:
    """The generated series and the database it was loaded into (clean layer built)."""
    tmp = tmp_path_factory.mktemp("series")
    series = generate_series(SERIES, tmp / "zips", n_cases=250, seed=5)
    db = tmp / "db.duckdb"
    with connect(db) as con:
        load(con, [tmp / "zips"])
    return series, db


@pytest.fixture
def series_con(series_db: tuple[Series, Path]) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the series database, closed after the test (so CLI runs can open it)."""
    with connect(series_db[1]) as con:
        yield con


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    """The demo database at a tenth of the demo's scale (same generator, same proportions)."""
    from surveillance.demo import DEMO_BACKGROUND, DEMO_PLANNED, build_database

    out = tmp_path_factory.mktemp("demo")
    return build_database(out, seed=7, background=DEMO_BACKGROUND // 10, n_cases=DEMO_PLANNED // 10)


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mounts a tmpfs of a given size (e.g. "8k") for a full-disk test; needs root, skipped
    elsewhere; unmounted afterwards."""
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a tmpfs needs root")
        mnt = tmp_path / f"tmpfs-{len(mounted)}"
        mnt.mkdir()
        command = ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)]
        if subprocess.run(command, capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounted.append(mnt)
        return mnt

    yield mount
    for mnt in mounted:
        subprocess.run(["umount", str(mnt)], check=True)

"""Plots: every figure is written as a PNG of the fixed size and an SVG that parses, carries the
provenance footer (and the synthetic-data mark), and two runs give identical bytes."""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pandas as pd
import pytest

from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.plots import (
    PLOTS,
    SIZE_PX,
    WATERMARK,
    footer,
    plot_all,
    plot_cases_by_outcome,
    regulatory_events,
)
from surveillance.synthetic import Series
from surveillance.trends import Trends, trends

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def kratom_trends(series_db: tuple[Series, Path]) -> Trends:
    """The kratom trends of the shared series, computed once for this module."""
    with connect(series_db[1]) as con:
        return trends(con, resolve("kratom"))


@pytest.fixture(scope="module")
def written(kratom_trends: Trends, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list]:
    """Each plot function's output files, by function name."""
    out = tmp_path_factory.mktemp("plots")
    return {plot.__name__: plot(kratom_trends, out) for plot in PLOTS}


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG's IHDR chunk."""
    head = path.read_bytes()[:24]
    assert head[:8] == PNG_SIGNATURE and head[12:16] == b"IHDR"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


def svg_text(path: Path) -> str:
    """All text of an SVG document; parsing it proves it is well-formed XML."""
    return " ".join(ET.parse(path).getroot().itertext())


@pytest.mark.parametrize("name", [plot.__name__ for plot in PLOTS])
def test_every_plot_writes_png_and_svg(name: str, written, kratom_trends: Trends) -> None:
    paths = written[name]
    assert sorted(p.suffix for p in paths) == [".png", ".svg"]
    png, svg = sorted(paths)
    assert png.stat().st_size > 10_000
    assert png_size(png) == SIZE_PX == (1000, 560)
    text = svg_text(svg)
    assert footer(kratom_trends) in text
    assert f"vintage {kratom_trends.vintage[:8]}" in text
    assert f"kratom {resolve('kratom').version}" in text
    assert WATERMARK in text


def test_time_axes_show_regulatory_events_in_range(written) -> None:
    svg = next(p for p in written["plot_cases_by_outcome"] if p.suffix == ".svg")
    text = svg_text(svg)
    assert "DEA intent to schedule (Aug 2016)" in text
    assert "FDA: schedule 7-OH" not in text  # July 2025 is after the last loaded quarter
    assert "quarters not loaded" in text


def test_two_runs_give_identical_bytes(kratom_trends: Trends, written, tmp_path: Path) -> None:
    again = plot_all(kratom_trends, tmp_path)
    first = {p.name: p.read_bytes() for paths in written.values() for p in paths}
    assert {p.name for p in again} == set(first)
    for path in again:
        assert path.read_bytes() == first[path.name], path.name


def test_no_watermark_for_fda_data(kratom_trends: Trends, tmp_path: Path) -> None:
    published = dataclasses.replace(kratom_trends, synthetic=False)
    svg = next(p for p in plot_cases_by_outcome(published, tmp_path) if p.suffix == ".svg")
    text = svg_text(svg)
    assert WATERMARK not in text and footer(published) in text


def test_plots_without_terms_or_cases_still_write_figures(kratom_trends, tmp_path: Path) -> None:
    empty = dataclasses.replace(
        kratom_trends,
        top_terms=(),
        latest_signals=kratom_trends.latest_signals.iloc[0:0],
        co_reported=kratom_trends.co_reported.iloc[0:0],
        cumulative=kratom_trends.cumulative.iloc[0:0],
        demographics=kratom_trends.demographics.assign(n_cases=0),
        by_outcome=kratom_trends.by_outcome.assign(n_cases=0),
        by_quarter=kratom_trends.by_quarter.assign(n_cases=0, share_pct=0.0),
    )
    paths = plot_all(empty, tmp_path)
    assert len(paths) == 2 * len(PLOTS)
    for png in (p for p in paths if p.suffix == ".png"):
        assert png_size(png) == SIZE_PX


def test_regulatory_events_file_is_dated_and_sourced() -> None:
    events = regulatory_events()
    assert [e.date for e in events] == sorted(e.date for e in events)
    assert all(e.label and e.source.count("http") >= 1 for e in events)
    dates = {e.label: e.date.isoformat() for e in events}
    assert dates["DEA intent to schedule"] == "2016-08-31"
    assert dates["FDA: schedule 7-OH"] == "2025-07-29"
    assert {e.label for e in regulatory_events("7-oh")} < {e.label for e in events}
    assert pd.Series([e.date.year for e in events]).between(2014, 2025).all()


def test_importable_without_a_display() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    code = (
        "import sys, surveillance.trends; assert 'matplotlib' not in sys.modules; "
        "import matplotlib, surveillance.plots; assert matplotlib.get_backend().lower() == 'agg'"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)

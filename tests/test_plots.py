"""Plots: every figure is written as a 200 dpi PNG and an SVG that parses, numbered, with a caption
and an alt text stating its finding in both files, the provenance footer (and the synthetic-data
mark); labels and event markers do not overlap; two runs give identical bytes."""

from __future__ import annotations

import dataclasses
import os
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation, Text
from matplotlib.transforms import Bbox
from PIL import Image

from surveillance.db import connect
from surveillance.extract import resolve
from surveillance.plots import (
    FIGURES,
    PLOTS,
    SIZE_PX,
    WATERMARK,
    estimate,
    figure,
    footer,
    number,
    plot_all,
    plot_cases_by_outcome,
    regulatory_events,
    save_figure,
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
    assert png_size(png) == SIZE_PX == (2000, 1120)  # 10 x 5.6 inches at 200 dpi
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


@pytest.mark.slow
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


@pytest.mark.slow
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
    told: list[str] = []
    paths = plot_all(empty, tmp_path, progress=told.append)
    assert len(paths) == 2 * len(PLOTS)
    assert told == [f"figure {name}" for name, _ in FIGURES]  # progress: one line per figure
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


@pytest.mark.slow
def test_importable_without_a_display() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "MPLBACKEND")}
    code = (
        "import sys, surveillance.trends; assert 'matplotlib' not in sys.modules; "
        "import matplotlib, surveillance.plots; assert matplotlib.get_backend().lower() == 'agg'"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


SVG = "{http://www.w3.org/2000/svg}"


def captions(paths: list[Path]) -> dict[str, tuple[str, str]]:
    """(Title, Description) of a figure from its PNG text chunks and its SVG <title>/<desc>,
    asserting the two files agree."""
    png = next(p for p in paths if p.suffix == ".png")
    svg = next(p for p in paths if p.suffix == ".svg")
    with Image.open(png) as image:
        from_png = (image.text["Title"], image.text["Description"])
    root = ET.parse(svg).getroot()
    first = list(root)[:2]
    assert [e.tag for e in first] == [f"{SVG}title", f"{SVG}desc"]
    assert (first[0].text, first[1].text) == from_png
    return {png.stem: from_png}


def test_figures_are_numbered_with_distinct_captions_and_alt_text(written) -> None:
    found: dict[str, tuple[str, str]] = {}
    for paths in written.values():
        found |= captions(paths)
    assert list(found) == [name for name, _ in FIGURES]
    for k, (title, alt) in enumerate(found.values(), 1):
        assert title.startswith(f"Figure {k}. ") and len(title) > 40
        assert alt.endswith(".") and len(alt) > 30
    assert len({t.split(". ", 1)[1] for t, _ in found.values()}) == len(found)
    assert len({a for _, a in found.values()}) == len(found)


def test_alt_text_states_the_finding_from_the_data(written, kratom_trends: Trends) -> None:
    table = kratom_trends.latest_signals.set_index("term").loc[list(kratom_trends.top_terms)]
    best = table.sort_values("ror", ascending=False).iloc[0]
    want = f"{best.name} has the highest ROR, {estimate(*best[['ror', 'ror_lower', 'ror_upper']])}"
    _, alt = captions(written["plot_forest"])["forest_ror"]
    assert alt.startswith(want)
    _, alt = captions(written["plot_cases_by_outcome"])["cases_by_outcome"]
    by_quarter = kratom_trends.by_quarter
    assert alt.startswith(f"{by_quarter['n_cases'].sum()} new kratom cases were received")
    assert f"{by_quarter['n_death'].sum()} of the new cases died" in alt
    top = kratom_trends.co_reported.iloc[0]
    _, alt = captions(written["plot_co_reported"])["co_reported_substances"]
    assert alt.startswith(f"{top['drug']} is the drug most often reported with kratom")


def test_numbers_have_two_significant_figures() -> None:
    assert [number(x) for x in (12.34, 8.14, 18.0, 7891.0, 0.1234, 470.4)] == [
        "12",
        "8.1",
        "18",
        "7,900",
        "0.12",
        "470",
    ]
    assert estimate(12.0, 8.1, 18.2) == "12 (8.1-18)" and number(float("nan")) == "n/a"


def boxes(fig: Figure, texts) -> list[Bbox]:
    """Renderer bounding boxes of texts (their bbox patch, where they have one)."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.canvas.draw()
    out = []
    for t in texts:
        patch = t.get_bbox_patch()
        out.append((patch or t).get_window_extent(renderer))
    return out


def assert_apart(found: list[Bbox]) -> None:
    for i, a in enumerate(found):
        for b in found[i + 1 :]:
            assert not a.overlaps(b), (a, b)


def crowded(trends: Trends, n: int) -> Trends:
    """The trends with n extra terms at almost the statistics of the strongest one."""
    table = trends.latest_signals
    if n == 0:
        return trends
    strongest = table.sort_values("ror", ascending=False).iloc[[0]]
    extra = pd.concat([strongest] * n, ignore_index=True)
    extra["term"] = [f"Planted look-alike term {i:02d}" for i in range(n)]
    extra["ror"] = extra["ror"] * (1 + 0.01 * np.arange(n))
    return dataclasses.replace(
        trends,
        latest_signals=pd.concat([table, extra], ignore_index=True),
        top_terms=(*trends.top_terms, *extra["term"][:4]),
    )


@pytest.mark.parametrize("extra", [0, 12])
def test_volcano_labels_neither_overlap_nor_leave_the_axes(kratom_trends, extra: int) -> None:
    fig, _ = figure(crowded(kratom_trends, extra), "volcano")
    ax = fig.axes[0]
    labels = [t for t in ax.texts if isinstance(t, Annotation)]
    assert len(labels) >= 8
    found = boxes(fig, labels)
    assert_apart(found)
    inside = ax.get_window_extent()
    for box in found:
        assert inside.x0 <= box.x0 and box.x1 <= inside.x1, box
        assert inside.y0 <= box.y0 and box.y1 <= inside.y1, box
    legend = ax.get_legend().get_window_extent()
    assert not legend.overlaps(inside)  # the legend is off the data


def test_regulatory_event_markers_do_not_overlap(kratom_trends) -> None:
    fig, _ = figure(kratom_trends, "cases_by_outcome")
    ax = fig.axes[0]
    markers = [t for t in ax.texts if t.get_text().isdigit()]
    in_range = [e for e in regulatory_events("kratom") if 2012 <= e.date.year <= 2023]
    assert len(markers) == len(in_range) >= 5  # 2016-2018 crowd
    assert_apart(boxes(fig, markers))


def _with_ebgm(trends: Trends) -> Trends:
    """The trends with EBGM-like values: the fixture's prior may not converge (EBGM NaN)."""
    table = trends.latest_signals.copy()
    table["ebgm"], table["eb05"], table["eb95"] = (
        table["ror"],
        table["ror_lower"],
        table["ror_upper"],
    )
    return dataclasses.replace(trends, ebgm_available=True, latest_signals=table)


@pytest.mark.slow
def test_ebgm_is_shown_only_when_available(kratom_trends, tmp_path: Path) -> None:
    # The fixture's prior may not converge (EBGM NaN); "available" gets EBGM-like values.
    table = kratom_trends.latest_signals.copy()
    table["ebgm"], table["eb05"], table["eb95"] = (
        table["ror"],
        table["ror_lower"],
        table["ror_upper"],
    )
    for available in (True, False):
        series = dataclasses.replace(
            kratom_trends,
            ebgm_available=available,
            latest_signals=table if available else kratom_trends.latest_signals,
        )
        forest = captions(save_figure(series, "forest_ror", tmp_path))["forest_ror"]
        cumulative, _ = figure(series, "cumulative_ebgm")
        drawn = [line for ax in cumulative.axes for line in ax.get_lines()]
        if available:
            assert "EBGM (EB05-EB95)" in forest[0] and "the highest EBGM is" in forest[1]
            assert drawn
        else:
            assert "EBGM" not in forest[0] and "EBGM is unavailable" in forest[1]
            assert not drawn


def test_hostile_terms_stay_text(kratom_trends, tmp_path: Path) -> None:
    table = kratom_trends.latest_signals.copy()
    hostile = ["$\\alpha^2$ <script>alert(1)</script>", "Bell\x07 and \x1b[2J & more"]
    old = list(kratom_trends.top_terms[:2])
    table["term"] = table["term"].replace(dict(zip(old, hostile, strict=True)))
    series = dataclasses.replace(
        kratom_trends,
        latest_signals=table,
        top_terms=(*hostile, *kratom_trends.top_terms[2:]),
    )
    paths = save_figure(series, "forest_ror", tmp_path)
    svg = next(p for p in paths if p.suffix == ".svg").read_text(encoding="utf-8")
    assert "<script>" not in svg and "&lt;script&gt;" in svg
    ET.fromstring(svg)  # still well-formed: control characters were replaced


def test_forest_marks_zero_corrected_estimates(kratom_trends) -> None:
    table = kratom_trends.latest_signals.copy()
    table["zero_corrected"] = table["term"] == kratom_trends.top_terms[0]
    fig, _ = figure(dataclasses.replace(kratom_trends, latest_signals=table), "forest_ror")
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    row = table.set_index("term").loc[kratom_trends.top_terms[0]]
    assert estimate(row["ror"], row["ror_lower"], row["ror_upper"]) + "*" in texts
    assert sum(t.endswith("*") for t in texts) == 1
    assert any(t.startswith("* zero cell") for t in texts)


@pytest.mark.parametrize("name", [name for name, _ in FIGURES])
def test_no_text_is_clipped_by_the_figure_edge(kratom_trends, name: str) -> None:
    series = dataclasses.replace(_with_ebgm(kratom_trends), synthetic=False)
    fig, _ = figure(series, name)
    boxes(fig, [])  # lay out and draw once, so ticks are final
    hidden = set()  # tick labels of ticks outside the view are kept but never drawn
    for ax in fig.axes:
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            for tick in [*axis.get_major_ticks(), *axis.get_minor_ticks()]:
                if not lo <= tick.get_loc() <= hi:
                    hidden |= {id(tick.label1), id(tick.label2)}
    texts = [
        t
        for t in fig.findobj(Text)
        if t.get_visible() and t.get_text().strip() and id(t) not in hidden
    ]
    page = fig.bbox
    for box, text in zip(boxes(fig, texts), texts, strict=True):
        assert page.x0 - 1 <= box.x0 and box.x1 <= page.x1 + 1, text.get_text()
        assert page.y0 - 1 <= box.y0 and box.y1 <= page.y1 + 1, text.get_text()

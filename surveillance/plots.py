"""Figures of a substance's trends, fit to print and to read, byte-for-byte reproducible.

Reads a `trends.Trends` and the regulatory dates (`trends.regulatory_events`);
writes, per figure, `<name>.png` (200 dpi, 2000 x 1120 px) and `<name>.svg` into a folder. Every
figure is numbered (its place in `FIGURES`) and carries a caption saying what it shows and an
alt text stating its finding, computed from the data: in the PNG as the text chunks `Title` and
`Description`, in the SVG as `<title>` and `<desc>`. Every figure also carries a footer naming
the data vintage, the term-file version and the tool version, and a large "SYNTHETIC DATA" mark
when any loaded quarter was generated. Output is deterministic: fixed style, fixed SVG hash salt,
text kept as text in SVG, and no dates in the file metadata.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from xml.sax.saxutils import escape

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg, RendererAgg
from matplotlib.figure import Figure
from matplotlib.layout_engine import ConstrainedLayoutEngine
from matplotlib.ticker import MaxNLocator, NullFormatter, NullLocator
from matplotlib.transforms import Bbox

from . import stats
from .definitions import AGE_UNKNOWN, CRITERIA, OUTCOMES, SEXES
from .faers_format import Quarter
from .output import p_text
from .trends import RegulatoryEvent, Trends, regulatory_events

if TYPE_CHECKING:
    from matplotlib.typing import RcKeyType

    from .onset import Onset

matplotlib.use("Agg")

FIGSIZE_IN = (10.0, 5.6)
DPI = 200
SIZE_PX = (2000, 1120)
FORMATS = ("png", "svg")
WATERMARK = "SYNTHETIC DATA"
P_FLOOR = 1e-30
"""The volcano plot draws p_adj below this (or 0 from underflow) at this value, as triangles."""
QUARTER_TICKS_MAX = 12
"""Time axes spanning at most this many quarters label each quarter, longer ones each year."""
VOLCANO_LABELS = 12
"""The volcano plot labels at most this many terms: the top terms, then the strongest ROR."""
LABEL_CHARS = 38
"""Terms and drug names longer than this are cut, with an ellipsis, wherever a figure shows them."""
_STYLE: dict[RcKeyType, Any] = {
    "svg.hashsalt": "kratom-surveillance",
    "svg.fonttype": "none",
    "font.family": "DejaVu Sans",
    "font.size": 9.5,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "legend.fontsize": 8,
    "legend.frameon": False,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
}
_OUTCOME_COLOURS = ("#67000d", "#d94801", "#fd8d3c", "#fdd0a2", "#c6dbef")
_TERM_COLOURS = (
    "#1f77b4 #d62728 #2ca02c #9467bd #ff7f0e #8c564b #e377c2 #17becf #7f7f7f #bcbd22".split()
)
_SEX_COLOURS = {"F": "#c51b7d", "M": "#4d9221", "unknown": "#999999"}
_CRITERION = {c.name: c for c in CRITERIA}
# Characters XML 1.0 does not allow in an SVG's <title>/<desc>.
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


@dataclass(frozen=True)
class Caption:
    """What a figure shows (its caption, without the number) and what it finds (alt text)."""

    title: str
    alt: str


def number(x: float) -> str:
    """A statistic to 2 significant figures (12, 8.1, 7,900; whole numbers from 10 on)."""
    if x is None or not math.isfinite(x):
        return "n/a"
    if abs(x) >= 10:
        return f"{float(f'{x:.2g}'):,.0f}" if abs(x) >= 100 else f"{x:.0f}"
    return f"{x:.2g}"


def estimate(point: float, lower: float, upper: float) -> str:
    """'12 (8.1-18)': an estimate with its interval."""
    return f"{number(point)} ({number(lower)}-{number(upper)})"


def _short(text: Any) -> str:
    """A data string cut to LABEL_CHARS, control characters made visible as '?' (for alt text)."""
    clean = "".join(c if c.isprintable() else "?" for c in str(text))
    return clean if len(clean) <= LABEL_CHARS else clean[: LABEL_CHARS - 1] + "…"


def _label(text: Any) -> str:
    """`_short` for drawing: a '$' from the data stays a dollar sign, never starts mathtext."""
    return _short(text).replace("$", r"\$")


def _year_fraction(d: date) -> float:
    start = date(d.year, 1, 1)
    return d.year + (d - start).days / (date(d.year + 1, 1, 1) - start).days


def _quarter_start(quarter: str) -> float:
    q = Quarter.parse(quarter)
    return q.year + (q.q - 1) / 4


def _quarter_mid(quarter: str) -> float:
    return _quarter_start(quarter) + 0.125


def _runs(quarters: tuple[str, ...]) -> list[tuple[str, str]]:
    """Consecutive quarters as (first, last) runs."""
    runs: list[tuple[str, str]] = []
    for q in quarters:
        if runs and str(Quarter.parse(runs[-1][1]).next()) == q:
            runs[-1] = (runs[-1][0], q)
        else:
            runs.append((q, q))
    return runs


class Provenance(Protocol):
    """What a figure's footer and watermark read: a `Trends`, or any result with the same
    provenance fields (`onset.Onset`)."""

    @property
    def substance(self) -> str: ...
    @property
    def substance_version(self) -> str: ...
    @property
    def roles(self) -> str | None: ...
    @property
    def through(self) -> str: ...
    @property
    def vintage(self) -> str: ...
    @property
    def synthetic(self) -> bool: ...
    @property
    def tool_version(self) -> str: ...


def footer(trends: Provenance) -> str:
    """The provenance line every figure carries."""
    roles = f"; roles {trends.roles}" if trends.roles else ""
    return (
        f"Data: FAERS through {trends.through} (vintage {trends.vintage[:8]}); substance "
        f"{trends.substance} {trends.substance_version}{roles}; generated by kratom-surveillance "
        f"{trends.tool_version}"
    )


def _span(trends: Trends) -> str:
    first, last = trends.quarters[0], trends.quarters[-1]
    return first if first == last else f"{first}-{last}"


# --- drawing helpers ----------------------------------------------------------------------------


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, transform=ax.transAxes, ha="center", va="center", color="0.3")
    ax.set_axis_off()


def _events_in_range(trends: Trends, lo: float, hi: float) -> list[RegulatoryEvent]:
    return [e for e in regulatory_events(trends.substance) if lo <= _year_fraction(e.date) <= hi]


def _time_axis(ax: Axes, trends: Trends, events: bool = True, ticks: bool = True) -> None:
    """Quarter or year ticks (`ticks`; axes sharing x need them once), shaded quarters not
    loaded, and the regulatory events in range as numbered markers on staggered levels, with a
    key beside the axes (`events`)."""
    first, last = trends.quarters[0], trends.quarters[-1]
    lo, hi = _quarter_start(first), _quarter_start(last) + 0.25
    if ticks:
        ax.set_xlim(lo - 0.05, hi + 0.05)
        span = round((hi - lo) * 4)
        if span <= QUARTER_TICKS_MAX:
            ax.set_xticks([_quarter_mid(q) for q in trends.quarters], list(trends.quarters))
        else:
            years = list(range(int(np.ceil(lo)), int(hi) + 1))
            step = 1 if events else max(1, math.ceil(len(years) / 4))
            ax.set_xticks(years[::step], [str(y) for y in years[::step]])
            if events:
                ax.set_xticks(np.arange(lo, hi + 0.01, 0.25), minor=True)
        ax.grid(False, axis="x")
    for i, (start, end) in enumerate(_runs(trends.missing_quarters)):
        ax.axvspan(
            _quarter_start(start),
            _quarter_start(end) + 0.25,
            color="0.5",
            alpha=0.12,
            lw=0,
            label="quarters not loaded" if i == 0 else None,
        )
    found = _events_in_range(trends, lo, hi) if events else []
    xs = [_year_fraction(e.date) for e in found]
    for x in xs:
        ax.axvline(x, color="0.35", ls="--", lw=0.7, zorder=1)
    if not found:
        return
    # A numbered marker is about 0.022 of the axis wide: crowded events go to lower levels.
    width = 0.03 * (hi - lo)
    levels = _levels([(x - width, x + width) for x in xs])
    for k, (x, level) in enumerate(zip(xs, levels, strict=True), 1):
        ax.text(
            x,
            0.985 - 0.07 * level,
            str(k),
            transform=ax.get_xaxis_transform(),
            ha="center",
            va="top",
            fontsize=7.5,
            fontweight="bold",
            color="0.1",
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": "white", "edgecolor": "0.35"},
            zorder=6,
        )
    key = "\n".join(f"{k}  {e.label} ({e.date:%b %Y})" for k, e in enumerate(found, 1))
    ax.text(
        1.02,
        0.0,
        f"Regulatory events\n{key}",
        transform=ax.transAxes,
        ha="left",
        va="bottom",
        fontsize=7.5,
        color="0.1",
        linespacing=1.5,
    )


def _levels(spans: list[tuple[float, float]]) -> list[int]:
    """The lowest line on which each marker's x-span overlaps no earlier marker."""
    taken: list[list[tuple[float, float]]] = []
    levels = []
    for start, end in spans:
        level = next(
            (i for i, used in enumerate(taken) if all(end < s or start > e for s, e in used)),
            len(taken),
        )
        if level == len(taken):
            taken.append([])
        taken[level].append((start, end))
        levels.append(level)
    return levels


def _headroom(ax: Axes, share: float = 0.25) -> None:
    """Room above the data (`share` more of the axis) for the event markers."""
    lo, hi = ax.get_ylim()
    if ax.get_yscale() == "log":
        ax.set_ylim(lo, hi * (hi / lo) ** share)
    else:
        ax.set_ylim(lo, hi + share * (hi - lo))


def _gapped(trends: Trends, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """One row per loaded quarter, with a blank row inside each gap so lines break there."""
    rows = frame.set_index("quarter").reindex(list(trends.quarters))[columns]
    rows.insert(0, "x", [_quarter_mid(q) for q in trends.quarters])
    breaks = [_quarter_start(end) + 0.25 for _, end in _runs(trends.quarters)[:-1]]
    blank = pd.DataFrame({"x": breaks}, index=[f"gap{i}" for i in range(len(breaks))])
    return pd.concat([rows, blank]).sort_values("x")


def _legend_outside(ax: Axes) -> None:
    """The legend right of the axes, off the data."""
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)


def _renderer(fig: Figure) -> RendererAgg:
    """Lay the figure out and freeze it, so text placed now keeps its measured position."""
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    fig.set_layout_engine("none")
    return canvas.get_renderer()


# --- the figures ----------------------------------------------------------------------------


def _draw_cases_by_outcome(fig: Figure, trends: Trends) -> Caption:
    ax = fig.add_subplot()
    wide = trends.by_outcome.pivot(index="quarter", columns="outcome", values="n_cases")
    wide = wide.reindex(index=list(trends.quarters), columns=list(OUTCOMES), fill_value=0)
    x = [_quarter_mid(q) for q in trends.quarters]
    bottom = np.zeros(len(x))
    for outcome, colour in zip(OUTCOMES, _OUTCOME_COLOURS, strict=True):
        values = wide[outcome].to_numpy(dtype=float)
        ax.bar(x, values, 0.2, bottom=bottom, color=colour, label=outcome, edgecolor="white")
        bottom += values
    _time_axis(ax, trends)
    _headroom(ax)
    ax.set_ylabel("new cases (deduplicated)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(
        "quarter of initial FDA receipt; worst outcome: " + " > ".join(OUTCOMES)
        if len(trends.quarters) > 1
        else "quarter of initial FDA receipt"
    )
    _legend_outside(ax)
    s, q = trends.substance, trends.by_quarter
    total = int(q["n_cases"].sum())
    title = f"New {s} cases per quarter of initial FDA receipt, by worst outcome, {_span(trends)}"
    if total == 0:
        return Caption(title, f"No new {s} case was received in the loaded quarters.")
    top = q.loc[q["n_cases"].idxmax()]
    last = q.iloc[-1]
    alt = (
        f"{total} new {s} cases were received in the {len(q)} loaded quarters, most in "
        f"{top['quarter']} ({int(top['n_cases'])}); {int(last['n_cases'])} in "
        f"{last['quarter']}; {int(q['n_death'].sum())} of the new cases died."
    )
    if trends.n_cases_initial_not_loaded:
        alt += (
            f" {trends.n_cases_initial_not_loaded} further cases were first received in a "
            "quarter that is not loaded and are not shown."
        )
    return Caption(title, alt)


def _draw_share(fig: Figure, trends: Trends) -> Caption:
    ax = fig.add_subplot()
    rows = _gapped(trends, trends.by_quarter, ["share_pct", "n_cases"])
    ax.plot(rows["x"], rows["share_pct"], marker="o", color=_TERM_COLOURS[0], label="share")
    _time_axis(ax, trends)
    ax.set_ylim(bottom=0)
    _headroom(ax)
    s = trends.substance
    ax.set_ylabel(f"new {s} cases / all new cases (%)")
    ax.set_xlabel("quarter of initial FDA receipt (deduplicated cases)")
    _legend_outside(ax)
    title = f"New {s} cases as a share of all new FAERS cases per quarter of initial receipt"
    share = trends.by_quarter.dropna(subset=["share_pct"])
    if share.empty or share["share_pct"].max() == 0:
        return Caption(title, f"No new {s} case in the loaded quarters: the share is 0.")
    top = share.loc[share["share_pct"].idxmax()]
    last = share.iloc[-1]
    alt = f"The {s} share of new cases was highest in {top['quarter']}, {top['share_pct']:.2g}%" + (
        ", the last loaded quarter."
        if top["quarter"] == last["quarter"]
        else f"; it was {last['share_pct']:.2g}% in {last['quarter']}."
    )
    return Caption(title, alt)


@dataclass(frozen=True)
class _Statistic:
    """One cumulative statistic: its columns, names, the criterion it feeds and the reference."""

    point: str
    lower: str
    upper: str
    name: str
    interval: str
    criterion: str
    reference: float
    reference_label: str
    log: bool


_ROR = _Statistic("ror", "ror_lower", "ror_upper", "ROR", "95% CI", "ROR", 1.0, "ROR = 1", log=True)
_IC = _Statistic("ic", "ic025", "ic975", "IC", "95% CrI", "IC", 0.0, "IC = 0", log=False)
_EBGM = _Statistic(
    "ebgm",
    "eb05",
    "eb95",
    "EBGM",
    "EB05-EB95",
    "EBGM",
    stats.EB05_THRESHOLD,
    f"EB05 threshold {stats.EB05_THRESHOLD:g}",
    log=True,
)


def _ebgm_unavailable(ax: Axes) -> None:
    _no_data(
        ax,
        "EBGM, EB05 and EB95 are unavailable: the EBGM prior did not converge\n"
        "(or a hyperparameter sits on a bound), so no EBGM is shown or counted.",
    )


def _rank_words(trends: Trends) -> str:
    return "EB05" if trends.top_term_rank == "eb05" else "IC025"


def _draw_cumulative(fig: Figure, trends: Trends, st: _Statistic) -> Caption:
    """Small multiples: one panel per top term, shared axes, the interval as a band, filled
    markers where the term meets the statistic's criterion."""
    s, terms = trends.substance, list(trends.top_terms)
    title = (
        f"Cumulative {st.name} ({st.interval}) of the {len(terms)} terms with the highest "
        f"{_rank_words(trends)}, as of each quarter, {s} cases through {trends.through}"
    )
    if st.name == "EBGM" and not trends.ebgm_available:
        _ebgm_unavailable(fig.add_subplot())
        return Caption(title, "EBGM is unavailable: the EBGM prior did not converge.")
    if not terms:
        _no_data(fig.add_subplot(), "no term with enough cases")
        return Caption(title, f"No term has enough {s} cases for a cumulative {st.name}.")
    criterion = _CRITERION[st.criterion]
    ncols = min(4, len(terms))
    nrows = math.ceil(len(terms) / ncols)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    flag = f"signal_{criterion.flag.removeprefix('signal_')}"
    for k, ax in enumerate(axes.flat):
        if k >= len(terms):
            ax.set_axis_off()
            continue
        term, colour = terms[k], _TERM_COLOURS[k % len(_TERM_COLOURS)]
        own = trends.cumulative[trends.cumulative["term"] == term]
        rows = _gapped(trends, own, [st.point, st.lower, st.upper, flag])
        ax.fill_between(rows["x"], rows[st.lower], rows[st.upper], color=colour, alpha=0.15, lw=0)
        ax.plot(rows["x"], rows[st.point], color=colour, lw=1.2)
        met = rows[rows[flag].astype("boolean").fillna(False).astype(bool)]
        unmet = rows[~rows[flag].astype("boolean").fillna(True).astype(bool)]
        ax.plot(met["x"], met[st.point], "o", ms=3.5, color=colour)
        ax.plot(unmet["x"], unmet[st.point], "o", ms=3.5, mfc="white", color=colour)
        ax.axhline(st.reference, color="black", lw=0.8, ls="--")
        ax.set_title(_label(term), fontsize=8.5)
        if st.log:
            ax.set_yscale("log")
            ax.yaxis.set_minor_locator(NullLocator())
        _time_axis(ax, trends, events=False, ticks=k == 0)
        ax.tick_params(labelsize=7.5)
    fig.supylabel(f"{st.name} ({st.interval} as band)", fontsize=9)
    fig.suptitle(
        "Cases as of the end of each loaded quarter (grey: not loaded)"
        + ("; one EBGM prior, the last quarter's" if st.name == "EBGM" else "")
        + f"\ndashed: {st.reference_label}; filled: meets the {criterion.name} criterion "
        f"({criterion.rule})",
        fontsize=8,
        fontweight="normal",
    )
    last = trends.cumulative[trends.cumulative["quarter"] == trends.through]
    last = last.dropna(subset=[st.point])
    if last.empty:
        return Caption(title, f"No {st.name} could be computed at {trends.through}.")
    best = last.loc[last[st.point].idxmax()]
    n_met = int(last[flag].astype(bool).sum())
    alt = (
        f"At {trends.through}, {_short(best['term'])} has the highest {st.name}, "
        f"{estimate(best[st.point], best[st.lower], best[st.upper])}; {n_met} of "
        f"{len(terms)} terms meet the {criterion.name} criterion."
    )
    return Caption(title, alt)


def _draw_cumulative_ror(fig: Figure, trends: Trends) -> Caption:
    return _draw_cumulative(fig, trends, _ROR)


def _draw_cumulative_ic(fig: Figure, trends: Trends) -> Caption:
    return _draw_cumulative(fig, trends, _IC)


def _draw_cumulative_ebgm(fig: Figure, trends: Trends) -> Caption:
    return _draw_cumulative(fig, trends, _EBGM)


def _forest_panel(ax: Axes, text_ax: Axes, rows: pd.DataFrame, st: _Statistic) -> None:
    y = np.arange(len(rows))[::-1]
    point = rows[st.point].to_numpy(dtype=float)
    errors = [point - rows[st.lower].to_numpy(float), rows[st.upper].to_numpy(float) - point]
    ax.errorbar(point, y, xerr=errors, fmt="s", ms=4, color=_TERM_COLOURS[0], capsize=2.5)
    ax.axvline(st.reference, color="black", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.grid(False, axis="y")
    ax.set_xlabel(f"{st.name} ({st.interval}), log scale; dashed: {st.reference_label}")
    text_ax.set_axis_off()
    text_ax.set_ylim(ax.get_ylim())
    text_ax.set_xlim(0, 1)
    text_ax.text(0.0, len(rows) - 0.4, f"{st.name} ({st.interval})", fontweight="bold", va="bottom")
    for yy, (_, row) in zip(y, rows.iterrows(), strict=True):
        mark = "*" if st.name != "EBGM" and bool(row.get("zero_corrected", False)) else ""
        text = estimate(row[st.point], row[st.lower], row[st.upper]) + mark
        text_ax.text(0.0, yy, text, va="center")
    if st.name != "EBGM" and rows.get("zero_corrected", pd.Series(dtype=bool)).fillna(False).any():
        text_ax.text(
            0.0, -0.9, "* zero cell: +0.5 on all four cells", fontsize=7.5, va="top", color="0.3"
        )


def _draw_forest(fig: Figure, trends: Trends) -> Caption:
    s, through = trends.substance, trends.through
    table = trends.latest_signals.set_index("term")
    terms = [t for t in trends.top_terms if t in table.index]
    what = "ROR (95% CI) and EBGM (EB05-EB95)" if trends.ebgm_available else "ROR (95% CI)"
    title = (
        f"{what} of the {len(terms)} terms with the highest {_rank_words(trends)}, ordered by "
        f"ROR, {s} cases through {through}"
    )
    if not terms:
        _no_data(fig.add_subplot(), "no term with enough cases")
        return Caption(title, f"No term has enough {s} cases for a forest plot.")
    rows = table.loc[terms].sort_values("ror", ascending=False, kind="mergesort")
    panels = 2 if trends.ebgm_available else 1
    grid = fig.add_gridspec(1, 2 * panels, width_ratios=[3, 1.6] * panels)
    ax_ror = fig.add_subplot(grid[0, 0])
    _forest_panel(ax_ror, fig.add_subplot(grid[0, 1]), rows, _ROR)
    labels = [f"{_label(t)} (a = {a})" for t, a in zip(rows.index, rows["a"], strict=True)]
    ax_ror.set_yticks(np.arange(len(rows))[::-1], labels)
    best = rows.iloc[0]
    alt = (
        f"{_short(rows.index[0])} has the highest ROR, "
        f"{estimate(best['ror'], best['ror_lower'], best['ror_upper'])}"
    )
    if trends.ebgm_available:
        ax_ebgm = fig.add_subplot(grid[0, 2], sharey=ax_ror)
        _forest_panel(ax_ebgm, fig.add_subplot(grid[0, 3]), rows, _EBGM)
        ax_ebgm.tick_params(labelleft=False)
        top = rows.loc[rows["ebgm"].idxmax()]
        alt += (
            f"; the highest EBGM is {_short(top.name)}'s, "
            f"{estimate(top['ebgm'], top['eb05'], top['eb95'])}."
        )
    else:
        fig.suptitle(
            "EBGM (EB05-EB95) is not shown: the EBGM prior did not converge (or a "
            "hyperparameter sits on a bound), so EBGM is unavailable.",
            fontsize=8.5,
            fontweight="normal",
        )
        alt += "; EBGM is unavailable because the EBGM prior did not converge."
    return Caption(title, alt)


def _overlaps(box: Bbox, boxes: list[Bbox]) -> bool:
    return any(box.overlaps(other) for other in boxes)


def _place_labels(ax: Axes, fig: Figure, points: list[tuple[float, float, str]]) -> int:
    """Label points without overlap: each label takes the first of a ring of offsets, nearest
    first, whose box stays inside the axes and clear of earlier labels (and, if it can, of
    every point); a label with no free place is left out. Returns the labels placed."""
    renderer = _renderer(fig)
    inside = ax.get_window_extent(renderer)
    xy = ax.transData.transform(np.array([(x, y) for x, y, _ in points]).reshape(-1, 2))
    all_xy = ax.transData.transform(_scatter_points(ax))
    directions = [(1, 1), (-1, 1), (1, -1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    rings = [(r * dx, r * dy) for r in (4, 10, 18, 28) for dx, dy in directions]
    placed: list[Bbox] = []
    for (x, y, text), own in zip(points, xy, strict=True):
        others = all_xy[np.hypot(*(all_xy - own).T) > 0.5]
        for avoid_points in (True, False):
            done = False
            for dx, dy in rings:
                ann = ax.annotate(
                    _label(text),
                    (x, y),
                    xytext=(dx, dy),
                    textcoords="offset points",
                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                    va="bottom" if dy > 0 else "top" if dy < 0 else "center",
                    fontsize=7,
                    arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.5}
                    if abs(dx) + abs(dy) > 20
                    else None,
                )
                box = ann.get_window_extent(renderer).expanded(1.04, 1.1)
                hits_point = avoid_points and bool(
                    (
                        (others[:, 0] > box.x0 - 3)
                        & (others[:, 0] < box.x1 + 3)
                        & (others[:, 1] > box.y0 - 3)
                        & (others[:, 1] < box.y1 + 3)
                    ).any()
                )
                if (
                    inside.contains(box.x0, box.y0)
                    and inside.contains(box.x1, box.y1)
                    and not _overlaps(box, placed)
                    and not hits_point
                ):
                    placed.append(box)
                    done = True
                    break
                ann.remove()
            if done:
                break
    return len(placed)


def _scatter_points(ax: Axes) -> np.ndarray:
    """Data coordinates (n x 2) of every point the axes' scatter collections draw."""
    offsets = [np.asarray(c.get_offsets(), dtype=float).reshape(-1, 2) for c in ax.collections]
    return np.vstack(offsets) if offsets else np.empty((0, 2))


def _draw_volcano(fig: Figure, trends: Trends) -> Caption:
    s, through = trends.substance, trends.through
    ax = fig.add_subplot()
    table = trends.latest_signals.dropna(subset=["ror"])
    table = table[table["ror"] > 0]
    title = (
        f"Effect (log2 ROR) against significance (-log10 Benjamini-Hochberg p) of the "
        f"{len(table)} terms reported with {s}, cases through {through}"
    )
    if table.empty:
        _no_data(ax, "no term reported with the substance")
        return Caption(title, f"No term is reported with {s}.")
    x = np.log2(table["ror"].to_numpy(dtype=float))
    p = table["p_adj"].to_numpy(dtype=float)
    capped = p < P_FLOOR
    y = -np.log10(np.maximum(p, P_FLOOR))
    signal = table["signal_ror"].to_numpy(dtype=bool)
    criterion = _CRITERION["ROR"]
    for mask, colour, label in (
        (~signal, "0.6", f"does not meet the {criterion.name} criterion"),
        (signal, _TERM_COLOURS[1], f"meets the {criterion.name} criterion ({criterion.rule})"),
    ):
        ax.scatter(x[mask & ~capped], y[mask & ~capped], s=14, color=colour, label=label)
        ax.scatter(x[mask & capped], y[mask & capped], s=22, marker="^", color=colour)
    ax.axvline(0.0, color="black", lw=0.8, ls="--", label="ROR = 1")
    ax.axhline(-np.log10(0.05), color="black", lw=0.8, ls=":", label="p_adj = 0.05 (orientation)")
    ax.set_xlabel(f"log2 ROR (cases through {through})")
    ax.set_ylabel(f"-log10 p_adj (triangles: p_adj < {P_FLOOR:g})")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo - 0.08 * (hi - lo), hi + 0.08 * (hi - lo))
    _headroom(ax, 0.12)
    terms = table["term"].to_numpy()
    strongest = table.sort_values(["ror_lower", "term"], ascending=[False, True])["term"]
    chosen = list(dict.fromkeys([*trends.top_terms, *strongest]))[:VOLCANO_LABELS]
    index = {t: i for i, t in enumerate(terms)}
    points = [(x[index[t]], y[index[t]], t) for t in chosen if t in index]
    n_labelled = _place_labels(ax, fig, points)
    top = table.iloc[int(np.argmax(y + 1e-9 * x))]
    alt = (
        f"{int(signal.sum())} of {len(table)} terms meet the ROR criterion; the most "
        f"significant is {_short(top['term'])} (ROR {number(top['ror'])}, p_adj "
        f"{p_text(top['p_adj'])}); {n_labelled} terms are labelled."
    )
    return Caption(title, alt)


def _draw_co_reported(fig: Figure, trends: Trends) -> Caption:
    s = trends.substance
    ax = fig.add_subplot()
    rows = trends.co_reported.head(15)
    title = f"The {len(rows)} drugs most often co-reported in {s} cases, through {trends.through}"
    if rows.empty:
        _no_data(ax, "no other drug reported")
        return Caption(title, f"No other drug is reported in the {s} cases.")
    y = np.arange(len(rows))[::-1]
    bars = ax.barh(y, rows["n_cases"], color=_TERM_COLOURS[0])
    ax.bar_label(bars, [f"{p:g}%" for p in rows["pct_of_substance_cases"]], padding=3)
    ax.set_yticks(y, [_label(d) for d in rows["drug"]])
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(False, axis="y")
    ax.set_xlabel(f"{s} cases reporting the drug (label: % of {s} cases)")
    top = rows.iloc[0]
    alt = (
        f"{_short(top['drug'])} is the drug most often reported with {s}, in "
        f"{int(top['n_cases'])} ({top['pct_of_substance_cases']:g}%) of the {s} cases."
    )
    return Caption(title, alt)


def _draw_demographics(fig: Figure, trends: Trends) -> Caption:
    s = trends.substance
    ax = fig.add_subplot()
    demo = trends.demographics
    wide = demo.pivot(index="age_group", columns="sex", values="n_cases")
    groups = list(demo["age_group"].drop_duplicates())
    wide = wide.reindex(index=groups, columns=list(SEXES), fill_value=0)
    x = np.arange(len(groups))
    width = 0.8 / len(SEXES)
    for i, sex in enumerate(SEXES):
        offset = (i - (len(SEXES) - 1) / 2) * width
        ax.bar(x + offset, wide[sex], width, color=_SEX_COLOURS[sex], label=f"sex {sex}")
    ax.set_xticks(x, groups)
    ax.grid(False, axis="x")
    ax.set_xlabel("age at the event (years)")
    ax.set_ylabel("cases (deduplicated)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    _legend_outside(ax)
    title = f"Cases involving {s} by age group and sex, through {trends.through}"
    by_group = wide.sum(axis=1)
    known = by_group.drop(AGE_UNKNOWN, errors="ignore")
    if known.sum() == 0:
        return Caption(title, f"No {s} case reports a plausible age.")
    by_sex = wide.sum(axis=0)
    alt = (
        f"Of the {s} cases with a known age, most are {known.idxmax()} years old "
        f"({int(known.max())}, {100 * known.max() / known.sum():.0f}%); "
        f"{int(by_sex['F'])} are female, {int(by_sex['M'])} male, "
        f"{int(by_sex['unknown'])} of unknown sex."
    )
    return Caption(title, alt)


FIGURES: tuple[tuple[str, Callable[[Figure, Trends], Caption]], ...] = (
    ("cases_by_outcome", _draw_cases_by_outcome),
    ("share_of_all_cases", _draw_share),
    ("cumulative_ror", _draw_cumulative_ror),
    ("cumulative_ic", _draw_cumulative_ic),
    ("cumulative_ebgm", _draw_cumulative_ebgm),
    ("forest_ror", _draw_forest),
    ("volcano", _draw_volcano),
    ("co_reported_substances", _draw_co_reported),
    ("age_sex", _draw_demographics),
)
"""Every figure by file name, in the order of their numbers."""


def figure(trends: Trends, name: str) -> tuple[Figure, Caption]:
    """One figure drawn (not saved), with its numbered caption and alt text."""
    names = [n for n, _ in FIGURES]
    draw = dict(FIGURES)[name]
    with matplotlib.rc_context(_STYLE):
        # The bottom 5% stays free for the footer.
        layout = ConstrainedLayoutEngine(rect=(0, 0.05, 1, 0.95))
        fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout=layout)
        caption = draw(fig, trends)
        _mark(fig, trends)
    numbered = Caption(f"Figure {names.index(name) + 1}. {caption.title}", caption.alt)
    return fig, numbered


def _mark(fig: Figure, provenance: Provenance) -> None:
    """The footer, and the SYNTHETIC DATA watermark when any loaded quarter was generated."""
    fig.text(0.01, 0.012, footer(provenance), fontsize=7, color="0.3", ha="left", va="bottom")
    if provenance.synthetic:
        fig.text(
            0.5,
            0.5,
            WATERMARK,
            fontsize=70,
            fontweight="bold",
            color="#d62728",
            alpha=0.13,
            rotation=25,
            ha="center",
            va="center",
            zorder=1000,
        )


def _xml_text(text: str) -> str:
    return escape(_XML_INVALID.sub("?", text))


def _svg_with_title(svg: str, caption: Caption) -> str:
    """The SVG with `<title>` and `<desc>` as the root's first children (read by screen readers)."""
    start = svg.index("<svg ")
    end = svg.index(">", start) + 1
    head = svg[start:end].replace("<svg ", '<svg role="img" aria-labelledby="title desc" ', 1)
    inserted = (
        f'\n <title id="title">{_xml_text(caption.title)}</title>'
        f'\n <desc id="desc">{_xml_text(caption.alt)}</desc>'
    )
    return svg[:start] + head + inserted + svg[end:]


def save_figure(trends: Trends, name: str, out_dir: Path) -> list[Path]:
    """Draw one figure and write it as PNG and SVG into out_dir; returns the files."""
    fig, caption = figure(trends, name)
    return write_figure(fig, caption, name, out_dir)


def write_figure(fig: Figure, caption: Caption, name: str, out_dir: Path) -> list[Path]:
    """Write a drawn figure as `<name>.png` and `<name>.svg` into out_dir, its caption and alt
    text in the files' metadata; returns the files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    with matplotlib.rc_context(_STYLE):
        for fmt in FORMATS:
            path = out_dir / f"{name}.{fmt}"
            metadata = {"Title": caption.title, "Description": caption.alt, "Date": None}
            fig.savefig(path, format=fmt, dpi=DPI, metadata=metadata)
            fig.set_layout_engine("none")  # laid out once, by the first format's drawing
            if fmt == "svg":
                svg = path.read_text(encoding="utf-8")
                path.write_text(_svg_with_title(svg, caption), encoding="utf-8")
            paths.append(path)
    return paths


def plot_cases_by_outcome(trends: Trends, out_dir: Path) -> list[Path]:
    """New cases per quarter of initial receipt, stacked by worst outcome."""
    return save_figure(trends, "cases_by_outcome", out_dir)


def plot_share(trends: Trends, out_dir: Path) -> list[Path]:
    """The substance's new cases as a percentage of all new FAERS cases of each quarter."""
    return save_figure(trends, "share_of_all_cases", out_dir)


def plot_cumulative_ror(trends: Trends, out_dir: Path) -> list[Path]:
    """Cumulative ROR with its 95% CI, one panel per top term."""
    return save_figure(trends, "cumulative_ror", out_dir)


def plot_cumulative_ic(trends: Trends, out_dir: Path) -> list[Path]:
    """Cumulative IC with its 95% credibility interval, one panel per top term."""
    return save_figure(trends, "cumulative_ic", out_dir)


def plot_cumulative_ebgm(trends: Trends, out_dir: Path) -> list[Path]:
    """Cumulative EBGM with EB05-EB95, one panel per top term (a note when unavailable)."""
    return save_figure(trends, "cumulative_ebgm", out_dir)


def plot_forest(trends: Trends, out_dir: Path) -> list[Path]:
    """ROR (95% CI) and EBGM (EB05-EB95) of the top terms with numbers, ordered by ROR."""
    return save_figure(trends, "forest_ror", out_dir)


def plot_volcano(trends: Trends, out_dir: Path) -> list[Path]:
    """Every co-reported term: effect (log2 ROR) against significance (-log10 BH-adjusted p)."""
    return save_figure(trends, "volcano", out_dir)


def plot_co_reported(trends: Trends, out_dir: Path) -> list[Path]:
    """The drugs most often reported in the substance's cases (horizontal bars)."""
    return save_figure(trends, "co_reported_substances", out_dir)


def plot_demographics(trends: Trends, out_dir: Path) -> list[Path]:
    """The substance's cases by age group and sex."""
    return save_figure(trends, "age_sex", out_dir)


PLOTS: tuple[Callable[[Trends, Path], list[Path]], ...] = (
    plot_cases_by_outcome,
    plot_share,
    plot_cumulative_ror,
    plot_cumulative_ic,
    plot_cumulative_ebgm,
    plot_forest,
    plot_volcano,
    plot_co_reported,
    plot_demographics,
)


def plot_all(
    trends: Trends, out_dir: Path, progress: Callable[[str], None] | None = None
) -> list[Path]:
    """Every figure, PNG and SVG, into out_dir; returns the files written. `progress` is told
    each figure."""
    paths = []
    for name, _ in FIGURES:
        if progress:
            progress(f"figure {name}")
        paths += save_figure(trends, name, Path(out_dir))
    return paths


# --- time to onset (an `onset.Onset`, not a `Trends`) --------------------------------------------

ONSET_FIGURE = "time_to_onset"
_ONSET_BINS = 40
"""The histogram has about this many bins: one day each, or wider for onsets over many days."""


def _draw_onset(fig: Figure, result: Onset) -> Caption:
    from .onset import ALL_TERMS, weibull_cdf

    hist_ax, cdf_ax = fig.subplots(1, 2, width_ratios=(3, 2))
    row = result.table.iloc[0]
    fit = result.fits[f"all:{ALL_TERMS}"]
    days = np.sort(
        result.cases.loc[result.cases["onset_status"] == "onset", "onset_days"].to_numpy(float)
    )
    s = result.substance
    title = f"Time to onset of {s} cases: days from the first use to the event"
    flagged = (
        f"{int(row['n_partial_date'])} cases with a date known only to the month or year and "
        f"{int(row['n_negative_onset'])} with the event before the first use are flagged and "
        "left out"
    )
    if days.size == 0:
        _no_data(hist_ax, "no case with both dates to the day")
        _no_data(cdf_ax, "")
        return Caption(title, f"No {s} case has both dates to the day; {flagged}.")
    width = max(1, math.ceil((days.max() + 1) / _ONSET_BINS))
    edges = np.arange(0, days.max() + width + 1, width, dtype=float)
    hist_ax.hist(days, bins=edges, color=_TERM_COLOURS[0], alpha=0.75, label="cases")
    hist_ax.set_xlabel(f"onset (days; bins of {width} day{'s' * (width > 1)})")
    hist_ax.set_ylabel("cases")
    hist_ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    steps = np.arange(0, days.max() + 1)
    cdf_ax.step(
        steps,
        np.searchsorted(days, steps, side="right") / days.size,
        where="post",
        color=_TERM_COLOURS[0],
        label="cases",
    )
    if fit.hazard is not None:
        expected = days.size * np.diff(weibull_cdf(edges, fit.shape, fit.scale_days))
        hist_ax.plot(
            (edges[:-1] + edges[1:]) / 2,
            expected,
            marker="o",
            markersize=3,
            color=_TERM_COLOURS[1],
            label="fitted Weibull (expected cases)",
        )
        # P(onset <= d days) = F(d + 1): an onset of d days lies in [d, d + 1).
        cdf_ax.step(
            steps,
            weibull_cdf(steps + 1.0, fit.shape, fit.scale_days),
            where="post",
            color=_TERM_COLOURS[1],
            label="fitted Weibull",
        )
    hist_ax.set_title(f"{int(row['n_with_onset'])} cases with both dates to the day")
    hist_ax.legend(loc="upper right")
    cdf_ax.set_title("cumulative share of cases")
    cdf_ax.set_xlabel("onset (days)")
    cdf_ax.set_ylim(0, 1.02)
    cdf_ax.legend(loc="lower right")
    heading = fit.note
    if fit.hazard is not None:
        heading = (
            f"Weibull shape {estimate(fit.shape, fit.shape_lower, fit.shape_upper)}: "
            f"{fit.hazard} hazard (Cornelius et al. 2012); scale {number(fit.scale_days)} days"
        )
    fig.suptitle(heading, fontsize=10)
    alt = (
        f"{days.size} {s} cases have both dates to the day: median onset "
        f"{number(float(row['median_days']))} days (IQR {number(float(row['q1_days']))}-"
        f"{number(float(row['q3_days']))}). {fit.interpretation}. {flagged}."
    )
    return Caption(title, alt)


def plot_onset(result: Onset, out_dir: Path) -> list[Path]:
    """The time-to-onset histogram and cumulative share of the substance's cases with the
    fitted Weibull, as `time_to_onset.png` and `.svg`; returns the files."""
    with matplotlib.rc_context(_STYLE):
        layout = ConstrainedLayoutEngine(rect=(0, 0.05, 1, 0.95))
        fig = Figure(figsize=FIGSIZE_IN, dpi=DPI, layout=layout)
        caption = _draw_onset(fig, result)
        _mark(fig, result)
    return write_figure(fig, caption, ONSET_FIGURE, out_dir)

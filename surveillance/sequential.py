"""Sequential alerts: a Poisson MaxSPRT and a Poisson CUSUM on a substance's quarterly counts.

Reads the clean layer (`cases`, `case_reactions`, the `involved_cases` macro) for the observed
counts and, through `asof.stored_asof_counts`, the raw layer as of each loaded quarter for the
background rates; writes `sequential_runs`, `sequential_alerts` and `sequential_paths`.

Each loaded quarter is one look. For a term (a MedDRA PT, or a shipped event group: a case counts
once if it reports any of its PTs) the look's observed count is the substance's new cases
(definitions.NEW_CASE, `cases.initial_quarter`) initially received that quarter that report the
term. Its expected count under H0, "the substance's cases report the term at the background
rate", is the quarter's new substance cases times the background rate as the data stood at the
end of that quarter: cases without the substance reporting the term over cases without the
substance, cumulative through the look (the as-of 2x2 cells c / (c + d)). Only what was known at
the look enters its expectation, and the cumulative rate is the steadiest estimate of it; the
background (all other FAERS cases) is so much larger than the substance's cases that its
sampling error is neglected, as the Poisson MaxSPRT with known expected counts assumes
(Kulldorff et al. 2011, Sequential Analysis 30:58; the R package `Sequential`,
`CV.Poisson` with `GroupSizes`).

MaxSPRT: LLR = (mu - c) + c ln(c / mu) when the cumulative count c exceeds the cumulative expected
count mu, else 0; an alert at the first look with LLR >= CV and c >= M. The CV is computed
exactly for the planned looks (the loaded quarters and their expected counts) by the recursive
probability calculation of `Sequential::CV.Poisson` (group branch, `Perro_I`): the distribution
of the count over the states not yet absorbed, carried look to look by Poisson increments. The
size of the test is a step function of CV; the CV given is the smallest attainable LLR value
whose test has size <= alpha (the same test as the package's conservative value, which it
places just above the next smaller attainable LLR). Since the plan is the loaded quarters, the CV
is computed again when a quarter is added. A look before the first expected case tests nothing
and its cases carry over (under H0 they cannot occur, so the size is unchanged).

CUSUM: the Poisson CUSUM of Lucas (1985, Technometrics 27:129) for a rate rising from the
expected count E to RR x E, with time-varying expectations: S_t = max(0, S_{t-1} + O_t - k E_t),
k = (RR - 1) / ln RR (the reference value that makes each step the log-likelihood ratio divided by
ln RR), alert when S_t >= h. h is chosen for the same error as the MaxSPRT: the probability of a
false alarm over the planned looks under H0 at most alpha, computed exactly (the state after each
look is the quarter of the last reset and the cases since, a finite Markov chain), not by
simulation.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import duckdb
import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from scipy import special
from scipy.stats import poisson

from . import __version__
from .asof import AsOfCounts, stored_asof_counts
from .clean import ensure_macros
from .db import ensure_derived_table
from .definitions import roles_option
from .design import event_groups, group_members, make_design
from .errors import NoDataError, UsageError
from .extract import ensure_extracted
from .freshness import data_fingerprint, has_table
from .substances import Substance

ALPHA = 0.05
"""Default probability of a false alert per term over the planned looks (both methods)."""
MIN_CASES = 1
"""Default M: the fewest cumulative cases a MaxSPRT alert needs (the package's default)."""
CUSUM_RR = 2.0
"""Default relative risk the CUSUM is tuned to detect (k = (RR - 1) / ln RR)."""
_CV_PRECISION = 1e-10
_H_PRECISION = 1e-4

PATH_COLUMNS = (
    "term term_kind quarter look n_substance_cases background_rate observed expected "
    "cum_observed cum_expected llr cv cases_to_alert maxsprt_alert cusum cusum_h cusum_alert"
).split()
ALERT_COLUMNS = (
    "substance term term_kind method alert_quarter new_this_quarter cum_observed cum_expected "
    "statistic threshold parameters data_fingerprint created_at"
).split()

_DDL = (
    """CREATE TABLE IF NOT EXISTS sequential_runs (
        run_id VARCHAR, substance VARCHAR, substance_version VARCHAR, roles VARCHAR,
        parameters VARCHAR, first_quarter VARCHAR, last_quarter VARCHAR, n_looks INTEGER,
        n_terms INTEGER, n_alerts INTEGER, n_cases_initial_not_loaded BIGINT,
        data_fingerprint VARCHAR, tool_version VARCHAR, created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS sequential_alerts (
        run_id VARCHAR, substance VARCHAR, term VARCHAR, term_kind VARCHAR, method VARCHAR,
        alert_quarter VARCHAR, new_this_quarter BOOLEAN, cum_observed BIGINT,
        cum_expected DOUBLE, statistic DOUBLE, threshold DOUBLE, parameters VARCHAR,
        data_fingerprint VARCHAR, created_at TIMESTAMP)""",
    """CREATE TABLE IF NOT EXISTS sequential_paths (
        run_id VARCHAR, substance VARCHAR, term VARCHAR, term_kind VARCHAR, quarter VARCHAR,
        look INTEGER, n_substance_cases BIGINT, background_rate DOUBLE, observed BIGINT,
        expected DOUBLE, cum_observed BIGINT, cum_expected DOUBLE, llr DOUBLE, cv DOUBLE,
        cases_to_alert BIGINT, maxsprt_alert BOOLEAN, cusum DOUBLE, cusum_h DOUBLE,
        cusum_alert BOOLEAN)""",
)

# The substance's new cases per quarter of initial receipt, and per event (PT key, or the key of
# a group in `_seq_groups` it reports a PT of), each case once per event.
_NEW_CASES = """SELECT c.initial_quarter AS quarter, count(*) AS n_cases
FROM cases c SEMI JOIN involved_cases($substance, $roles) i ON i.caseid = c.caseid
GROUP BY ALL"""
# The substance's cases' reactions are read once (MATERIALIZED) for their PTs and their groups:
# one scan of case_reactions, not two (4.4 to 6.7 s to 2.5 s on the whole archive).
_NEW_EVENTS = """WITH hit AS (
    SELECT c.caseid, c.initial_quarter FROM cases c
    SEMI JOIN involved_cases($substance, $roles) i ON i.caseid = c.caseid),
reactions AS MATERIALIZED (
    SELECT r.caseid, r.pt_key FROM case_reactions r SEMI JOIN hit USING (caseid)),
events AS (
    SELECT caseid, pt_key AS event_key FROM reactions
    UNION
    SELECT r.caseid, g.event_key FROM reactions r JOIN _seq_groups g USING (pt_key))
SELECT e.event_key, h.initial_quarter AS quarter, count(*) AS n_cases
FROM events e JOIN hit h USING (caseid) GROUP BY ALL"""


# --- the statistics (pure numpy/scipy) ------------------------------------------------------
def llr(observed: np.ndarray | float, expected: np.ndarray | float) -> np.ndarray:
    """Poisson MaxSPRT log-likelihood ratio (Kulldorff et al. 2011): (mu - c) + c ln(c/mu)
    when c > mu, else 0; NaN where mu = 0 (no expectation: not a test)."""
    c = np.asarray(observed, dtype=float)
    mu = np.asarray(expected, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        value = (mu - c) + special.xlogy(c, c) - special.xlogy(c, mu)
    value = np.where(c > mu, value, 0.0)
    return np.where(mu > 0, value, np.nan)


# scipy.special's ufuncs rather than scipy.stats.poisson: the recursions call them per look and
# per iteration, where the distribution objects' argument checks would cost the most.
def _pmf(counts: np.ndarray, mean: float | np.ndarray) -> np.ndarray:
    return np.exp(special.xlogy(counts, mean) - mean - special.gammaln(counts + 1))


def _sf(counts: np.ndarray, mean: float | np.ndarray) -> np.ndarray:
    """P(X > count) for Poisson(mean); 1 for a negative count."""
    return np.where(counts < 0, 1.0, special.pdtrc(np.maximum(counts, 0), mean))


def _reach(mean: float) -> int:
    """A count a Poisson(mean) increment exceeds with probability far below 1e-17."""
    return int(mean + 12 * math.sqrt(mean) + 40)


NEVER = np.iinfo(np.int64).max // 4
"""`cases_to_alert` at a look without a test (nothing expected yet)."""


def cases_to_alert(cumulative_expected: ArrayLike, cv: float, min_cases: int) -> np.ndarray:
    """Per look, the fewest cumulative cases whose LLR reaches `cv` (at least `min_cases`);
    NEVER where the cumulative expected count is 0 (no test there)."""
    mu = np.asarray(cumulative_expected, dtype=float)[None, :]
    return _needed(mu, np.array([float(cv)]), min_cases)[0]


def _needed(mu: np.ndarray, cv: np.ndarray, min_cases: int) -> np.ndarray:
    """`cases_to_alert` for several series (rows of `mu`, each with its own cv)."""
    out = np.full(mu.shape, NEVER, dtype=np.int64)
    test = (mu > 0) & np.isfinite(cv)[:, None]
    if not test.any():
        return out
    m = mu[test]
    c = np.broadcast_to(cv[:, None], mu.shape)[test]
    # The root of (mu - x) + x ln(x/mu) = cv above mu (Lambert W, principal branch), then the
    # integer checked against the very LLR the alerts use.
    x = m * math.e * np.exp(special.lambertw((c / m - 1) / math.e).real)
    floor = np.maximum(min_cases, np.floor(m) + 1)
    k = np.maximum(np.ceil(x), floor)
    while (lower := (k - 1 >= floor) & (llr(k - 1, m) >= c)).any():
        k = k - lower
    while (higher := llr(k, m) < c).any():
        k = k + higher
    out[test] = k.astype(np.int64)
    return out


def rejection_probabilities(
    increments: ArrayLike, thresholds: ArrayLike, rr: float = 1.0
) -> np.ndarray:
    """Per look, the probability that the cumulative Poisson count first reaches its look's
    threshold there, when the counts of the looks are Poisson(rr x increment) (rr = 1: H0).

    The recursion of `Sequential::CV.Poisson` (group branch) and `Performance.Poisson`: the
    probabilities of the counts not yet absorbed, carried look to look."""
    means = rr * np.asarray(increments, dtype=float)[None, :]
    return _absorbed(means, np.asarray(thresholds, dtype=np.int64)[None, :])[0]


def _absorbed(means: np.ndarray, limits: np.ndarray) -> np.ndarray:
    """`rejection_probabilities` for several series at once (rows), from their looks' Poisson
    means and thresholds: the alive counts of a row are those below its current threshold."""
    n, looks = means.shape
    tested = limits[limits < NEVER]
    width = int(tested.max()) if tested.size else 1
    counts = np.arange(width)
    alive = np.zeros((n, width))
    alive[:, 0] = 1.0
    absorbed = np.zeros((n, looks))
    for i in range(looks):
        limit = limits[:, i, None]
        over = counts >= limit
        absorbed[:, i] = np.where(over, alive, 0.0).sum(axis=1)
        alive = np.where(over, 0.0, alive)
        mean = means[:, i, None]
        if not (mean > 0).any():
            continue
        # From count m, absorbed when the increment reaches limit - m.
        absorbed[:, i] += (alive * _sf(limit - 1 - counts, mean)).sum(axis=1)
        band = min(width, _reach(float(mean.max())))
        pmf = _pmf(np.arange(band), mean)
        moved = alive * pmf[:, :1]
        for lag in range(1, band):
            moved[:, lag:] += alive[:, :-lag] * pmf[:, lag, None]
        alive = np.where(over, 0.0, moved)
    return absorbed


def _sizes(increments: np.ndarray, cv: np.ndarray, min_cases: int) -> np.ndarray:
    thresholds = _needed(np.cumsum(increments, axis=1), cv, min_cases)
    return _absorbed(increments, thresholds).sum(axis=1)


@dataclass(frozen=True)
class CriticalValue:
    """A MaxSPRT critical value and the exact probability of a false alert it gives."""

    cv: float
    size: float


def critical_value(
    expected: ArrayLike, alpha: float = ALPHA, min_cases: int = MIN_CASES
) -> CriticalValue:
    """The exact group-sequential MaxSPRT critical value for looks with these expected counts
    under H0 (per look, not cumulative; 0 allowed), alpha and M (`Sequential::CV.Poisson` with
    `GroupSizes`): the smallest attainable LLR whose test has size <= alpha. cv is infinite
    when the total expected count is 0 (nothing to test)."""
    return critical_values(np.asarray(expected, dtype=float)[None, :], alpha, min_cases)[0]


def critical_values(
    expected: np.ndarray, alpha: float = ALPHA, min_cases: int = MIN_CASES, cells: int = 8192
) -> list[CriticalValue]:
    """`critical_value` for every row of `expected` (series x looks): the same bisection over
    each row's attainable LLR values, run on rows of similar width together (at most `cells`
    alive counts at once)."""
    _check(alpha, min_cases)
    increments = np.asarray(expected, dtype=float)
    if np.any(increments < 0) or not np.all(np.isfinite(increments)):
        raise UsageError("expected counts must be finite and >= 0")
    out = [CriticalValue(math.inf, 0.0)] * len(increments)
    found = {
        row: _candidates(increments[row], alpha, min_cases)
        for row in np.flatnonzero((increments > 0).any(axis=1)).tolist()
    }
    chunks: list[list[int]] = [[]]
    for row in sorted(found, key=lambda r: found[r][1]):
        if chunks[-1] and (len(chunks[-1]) + 1) * found[row][1] > cells:
            chunks.append([])
        chunks[-1].append(row)
    for chunk in chunks:
        if chunk:
            values = [found[row][0] for row in chunk]
            solved = _bisected_cv(increments[chunk], values, alpha, min_cases)
            for row, value in zip(chunk, solved, strict=True):
                out[row] = value
    return out


def _candidates(increments: np.ndarray, alpha: float, min_cases: int) -> tuple[np.ndarray, int]:
    """A series' attainable LLR values up to a CV whose size is surely <= alpha, sorted, and
    the most cases any of them needs at a look."""
    mu = np.cumsum(increments)
    looks = np.flatnonzero(increments > 0)
    # Bonferroni over the looks bounds the CV from above: at it every look's threshold is past
    # its alpha / G quantile, so the size is <= alpha.
    quantiles = poisson.isf(alpha / len(looks), mu[looks]).astype(np.int64) + 1
    upper = float(np.max(llr(np.maximum(quantiles, min_cases), mu[looks])))
    limits = cases_to_alert(mu, upper, min_cases)[looks]
    low = np.maximum(min_cases, np.floor(mu[looks]).astype(np.int64) + 1)
    sizes = np.maximum(limits - low + 1, 0)
    starts = np.repeat(low - np.cumsum(sizes) + sizes, sizes)
    values = llr(starts + np.arange(sizes.sum()), np.repeat(mu[looks], sizes))
    values = values[(values > 0) & (values <= upper)]
    return np.unique(np.append(values, upper)), int(limits.max())


def _bisected_cv(
    steps: np.ndarray, values: list[np.ndarray], alpha: float, min_cases: int
) -> list[CriticalValue]:
    """Per row, the smallest of its candidate values whose size is <= alpha (the answer's index
    stays in [lo, hi], and its hi candidate passes), all rows' bisections stepping together."""
    lo = np.zeros(len(values), dtype=np.int64)
    hi = np.array([len(v) - 1 for v in values], dtype=np.int64)
    while (rows := np.flatnonzero(lo < hi)).size:
        middle = (lo[rows] + hi[rows]) // 2
        cv = np.array([values[j][m] for j, m in zip(rows, middle, strict=True)])
        passes = _sizes(steps[rows], cv, min_cases) <= alpha
        hi[rows[passes]] = middle[passes]
        lo[rows[~passes]] = middle[~passes] + 1
    cv = np.array([v[m] for v, m in zip(values, hi, strict=True)])
    sizes = _sizes(steps, cv, min_cases)
    return [CriticalValue(float(c), float(z)) for c, z in zip(cv, sizes, strict=True)]


def continuous_boundary(cv: float, length: float, min_cases: int) -> tuple[np.ndarray, np.ndarray]:
    """The continuous MaxSPRT as looks: the k-th case signals when it comes before mu_k, the
    expected count at which k cases have LLR = cv (mu_k < k; Lambert W as the package's
    ProdLog), so the looks are mu_M, mu_M+1, ... below `length`, then `length` itself, with
    thresholds M, M+1, ... (Kulldorff et al. 2011). Returns increments, thresholds."""
    times: list[float] = []
    k = min_cases
    while True:
        mu_k = -k * float(special.lambertw(-math.exp(-1 - cv / k)).real)
        if mu_k >= length:
            break
        times.append(mu_k)
        k += 1
    looks = np.array([*times, length])
    return np.diff(looks, prepend=0.0), np.arange(min_cases, min_cases + len(looks))


def continuous_critical_value(
    length: float, alpha: float = ALPHA, min_cases: int = MIN_CASES
) -> CriticalValue:
    """The continuous Poisson MaxSPRT critical value for surveillance up to `length` expected
    cases under H0 (`Sequential::CV.Poisson` without GroupSizes, D = 0): for planning, and the
    check of the recursion against the published table. Its size is continuous in cv."""
    _check(alpha, min_cases)
    if poisson.sf(min_cases - 1, length) < alpha:
        raise UsageError(
            f"no critical value: {min_cases} cases in {length:g} expected is rarer "
            f"than alpha {alpha:g}; lengthen the surveillance"
        )

    def size(cv: float) -> float:
        return float(rejection_probabilities(*continuous_boundary(cv, length, min_cases)).sum())

    lo, hi = 0.0, 1.0
    while size(hi) > alpha:
        lo, hi = hi, hi * 2
    while hi - lo > _CV_PRECISION:
        middle = (lo + hi) / 2
        lo, hi = (lo, middle) if size(middle) <= alpha else (middle, hi)
    return CriticalValue(hi, size(hi))


def cusum_k(rr: float) -> float:
    """Lucas' (1985) reference value per expected case for a shift to rr: (rr - 1) / ln rr."""
    if not rr > 1:
        raise UsageError("the CUSUM's relative risk must be > 1")
    return (rr - 1) / math.log(rr)


def cusum_path(observed: ArrayLike, expected: ArrayLike, k: float) -> np.ndarray:
    """S_t = max(0, S_{t-1} + O_t - k E_t), kept as (cases since the last reset) minus k x
    (expected since it), the same arithmetic as `cusum_false_alarm`."""
    counts = np.asarray(observed, dtype=np.int64)[None, :]
    return _cusum_paths(counts, np.asarray(expected, dtype=float)[None, :], k)[0]


def _cusum_paths(observed: np.ndarray, expected: np.ndarray, k: float) -> np.ndarray:
    """`cusum_path` for several series at once (rows)."""
    n, looks = observed.shape
    mu = np.concatenate([np.zeros((n, 1)), np.cumsum(expected, axis=1)], axis=1)
    rows = np.arange(n)
    reset = np.zeros(n, dtype=np.int64)
    since = np.zeros(n, dtype=np.int64)
    out = np.empty((n, looks))
    for t in range(1, looks + 1):
        since += observed[:, t - 1]
        value = since - k * (mu[:, t] - mu[rows, reset])
        low = value <= 0
        reset[low], since[low], value[low] = t, 0, 0.0
        out[:, t - 1] = value
    return out


def cusum_false_alarm(expected: ArrayLike, k: float, h: float) -> float:
    """The exact probability that the CUSUM reaches h at some look when the counts are
    Poisson(E_t) (H0). The state after a look is (look of the last reset, cases since), a finite
    chain since S >= h is absorbing and S <= 0 resets (`_cusum_alarms`)."""
    steps = np.asarray(expected, dtype=float)[None, :]
    return float(_cusum_alarms(steps, k, np.array([float(h)]))[0])


def _cusum_alarms(steps: np.ndarray, k: float, h: np.ndarray) -> np.ndarray:
    """`cusum_false_alarm` for several series at once (rows of `steps`, each with its own h).

    Rows of the state are reset looks r; a row's live counts c have 0 < c - k (mu_t - mu_r) < h,
    fewer than h + 1 consecutive counts, so each row keeps only that window, from count
    `first` = floor(drift). A look moves a row's window up by `shift` counts and adds a
    Poisson count: one small matrix product per distinct shift, whose last column is the mass
    falling below the window (it resets, to the look's own row at count 0); mass above alarms."""
    n, looks = steps.shape
    mu = np.concatenate([np.zeros((n, 1)), np.cumsum(steps, axis=1)], axis=1)
    width = math.ceil(float(h.max())) + 2
    counts = np.arange(width)
    cols = counts.astype(float)
    lag = counts[None, None, :] - counts[None, :, None] + 1
    # Per look, the increment's pmf and cdf at -1, 0, 1, ...: column 0 is 0 (a negative count).
    reach = width + math.floor(k * float(steps.max(initial=0))) + 3
    pmf = np.zeros((n, looks, reach + 1))
    pmf[..., 1:] = _pmf(np.arange(reach)[None, None, :], steps[..., None])
    cdf = np.cumsum(pmf, axis=2)
    terms = np.arange(n)[:, None, None]
    alive = np.zeros((n, looks + 1, width))
    alive[:, 0, 0] = 1.0
    first = np.zeros((n, looks + 1), dtype=np.int64)
    alarm = np.zeros(n)
    for t in range(1, looks + 1):
        before = alive[:, :t]
        drift = k * (mu[:, t, None] - mu[:, :t])
        moved = np.floor(drift).astype(np.int64)
        shift = moved - first[:, :t]
        base = shift.min(axis=1)
        moves = np.zeros((n, t, width + 1))
        for extra in range(int((shift - base[:, None]).max()) + 1):
            offset = (base + extra)[:, None, None]
            kernel = np.empty((n, width, width + 1))
            kernel[..., :width] = pmf[:, t - 1][terms, np.maximum(lag + offset, 0)]
            kernel[..., width] = cdf[:, t - 1][
                terms[..., 0], np.maximum(offset[..., 0] - counts, 0)
            ]
            moves = np.where((shift == base[:, None] + extra)[..., None], before @ kernel, moves)
        below = moves[..., width].sum(axis=1)
        s = cols - (drift - moved)[..., None]
        after = np.where(s < h[:, None, None], moves[..., :width], 0.0)
        low = s <= 0
        alarm += before.sum(axis=(1, 2)) - after.sum(axis=(1, 2)) - below
        alive[:, t, 0] = below + np.where(low, after, 0.0).sum(axis=(1, 2))
        alive[:, :t] = np.where(low, 0.0, after)
        first[:, :t] = moved
    return alarm


def cusum_threshold(expected: ArrayLike, alpha: float = ALPHA, rr: float = CUSUM_RR) -> float:
    """The smallest h (to 1e-4) whose CUSUM has a false-alarm probability <= alpha over these
    looks; infinite when nothing is expected."""
    return float(cusum_thresholds(np.asarray(expected, dtype=float)[None, :], alpha, rr)[0])


def cusum_thresholds(
    expected: np.ndarray, alpha: float = ALPHA, rr: float = CUSUM_RR, batch: int = 128
) -> np.ndarray:
    """`cusum_threshold` for every row of `expected` (series x looks): the same doubling and
    bisection per row, run on `batch` rows of similar size at once."""
    _check(alpha, 1)
    k = cusum_k(rr)
    steps = np.asarray(expected, dtype=float)
    out = np.full(len(steps), math.inf)
    totals = steps.sum(axis=1)
    tested = np.flatnonzero(totals > 0)
    tested = tested[np.argsort(totals[tested], kind="stable")]
    for rows in np.array_split(tested, max(1, math.ceil(len(tested) / batch))):
        if len(rows):
            out[rows] = _bisected(steps[rows], k, alpha)
    return out


def _bisected(steps: np.ndarray, k: float, alpha: float) -> np.ndarray:
    """Per row: double h from 1 until the false-alarm probability is <= alpha, then bisect to
    _H_PRECISION (rows that have converged wait for the others)."""
    hi = np.ones(len(steps))
    rows = np.arange(len(steps))
    while rows.size:
        rows = rows[_cusum_alarms(steps[rows], k, hi[rows]) > alpha]
        hi[rows] *= 2
    lo = np.where(hi > 1, hi / 2, 0.0)
    while (rows := np.flatnonzero(hi - lo > _H_PRECISION)).size:
        middle = (lo[rows] + hi[rows]) / 2
        passes = _cusum_alarms(steps[rows], k, middle) <= alpha
        hi[rows[passes]] = middle[passes]
        lo[rows[~passes]] = middle[~passes]
    return hi


def _check(alpha: float, min_cases: int) -> None:
    if not 0 < alpha <= 0.5:
        raise UsageError("alpha must be in (0, 0.5]")
    if min_cases < 1:
        raise UsageError("the minimum number of cases to alert must be at least 1")


@dataclass(frozen=True)
class TermPath:
    """One term's looks: counts, MaxSPRT and CUSUM statistics, and where each alerted."""

    path: pd.DataFrame
    """PATH_COLUMNS but term, term_kind, n_substance_cases and background_rate; a row per look."""
    maxsprt: CriticalValue
    cusum_h: float
    cusum_size: float


@dataclass(frozen=True)
class TermPaths:
    """`TermPath` of several terms (rows of the inputs): per term, its CV, h and CUSUM size."""

    path: pd.DataFrame
    """As TermPath's, plus `series` (the term's row of the inputs); by series, then look."""
    maxsprt: list[CriticalValue]
    cusum_h: np.ndarray
    cusum_size: np.ndarray


def term_path(
    quarters: Sequence[str],
    observed: ArrayLike,
    expected: ArrayLike,
    alpha: float = ALPHA,
    min_cases: int = MIN_CASES,
    rr: float = CUSUM_RR,
) -> TermPath:
    """Both methods on one term's per-look observed and expected counts. Neither tests a look
    before the first expected case (cases there are impossible under H0, so the size is
    unchanged): the MaxSPRT's LLR and the CUSUM are NaN there and their cases carry over."""
    counts = np.asarray(observed, dtype=np.int64)[None, :]
    many = term_paths(
        quarters, counts, np.asarray(expected, dtype=float)[None, :], alpha, min_cases, rr
    )
    path = many.path.drop(columns="series")
    return TermPath(path, many.maxsprt[0], float(many.cusum_h[0]), float(many.cusum_size[0]))


def term_paths(
    quarters: Sequence[str],
    observed: np.ndarray,
    expected: np.ndarray,
    alpha: float = ALPHA,
    min_cases: int = MIN_CASES,
    rr: float = CUSUM_RR,
) -> TermPaths:
    """`term_path` for every row of `observed` and `expected` (terms x looks), calibrated and
    computed together."""
    observed_ = np.asarray(observed, dtype=np.int64)
    expected_ = np.asarray(expected, dtype=float)
    n, looks = expected_.shape
    cum_o, cum_e = np.cumsum(observed_, axis=1), np.cumsum(expected_, axis=1)
    cv = critical_values(expected_, alpha, min_cases)
    cvs = np.array([c.cv for c in cv], dtype=float)
    needed = _needed(cum_e, cvs, min_cases)
    k = cusum_k(rr)
    h = cusum_thresholds(expected_, alpha, rr)
    s = _cusum_paths(observed_, expected_, k)
    tested = cum_e > 0
    path = pd.DataFrame(
        {
            "series": np.repeat(np.arange(n), looks),
            "quarter": np.tile(np.asarray(list(quarters), dtype=object), n),
            "look": np.tile(np.arange(1, looks + 1), n),
            "observed": observed_.ravel(),
            "expected": expected_.ravel(),
            "cum_observed": cum_o.ravel(),
            "cum_expected": cum_e.ravel(),
            "llr": llr(cum_o, cum_e).ravel(),
            "cv": np.repeat(np.where(np.isfinite(cvs), cvs, np.nan), looks),
            "cases_to_alert": pd.arrays.IntegerArray(
                np.where(tested, needed, 0).ravel(), ~tested.ravel()
            ),
            "maxsprt_alert": (tested & (cum_o >= needed)).ravel(),
            "cusum": np.where(tested, s, np.nan).ravel(),
            "cusum_h": np.repeat(np.where(np.isfinite(h), h, np.nan), looks),
            "cusum_alert": (tested & (s >= h[:, None])).ravel(),
        }
    )
    size = np.zeros(n)
    calibrated = np.isfinite(h)
    if calibrated.any():
        size[calibrated] = _cusum_alarms(expected_[calibrated], k, h[calibrated])
    return TermPaths(path, cv, h, size)


# --- the database ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Sequential:
    """A substance's sequential alerts over the loaded quarters, and every term's path."""

    substance: str
    roles: str | None
    quarters: tuple[str, ...]
    parameters: dict[str, Any]
    alerts: pd.DataFrame
    """ALERT_COLUMNS: one row per term and method that alerted, new this quarter first."""
    paths: pd.DataFrame
    """PATH_COLUMNS: one row per analysed term and look."""
    data_fingerprint: str
    n_cases_initial_not_loaded: int

    @property
    def new_alerts(self) -> pd.DataFrame:
        """The alerts that fired in the latest loaded quarter."""
        return self.alerts[self.alerts["new_this_quarter"]].reset_index(drop=True)

    def alerts_in(self, quarters: Sequence[str]) -> pd.DataFrame:
        """The alerts that fired in any of these quarters."""
        return self.alerts[self.alerts["alert_quarter"].isin(list(quarters))].reset_index(drop=True)


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def sequential(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None = None,
    alpha: float = ALPHA,
    min_cases: int = MIN_CASES,
    cusum_rr: float = CUSUM_RR,
    counts: AsOfCounts | None = None,
) -> Sequential:
    """Both methods for every PT and shipped event group the substance's new cases report, over
    the loaded quarters; stored, and reused while the data and options are unchanged. `counts`:
    the substance's as-of counts in these roles with `event_groups()`, when the caller already
    has them (default: `stored_asof_counts`)."""
    _check(alpha, min_cases)
    cusum_k(cusum_rr)
    roles = roles_option(roles)
    ensure_tables(con)
    ensure_extracted(con, substance)
    ensure_macros(con)
    design = make_design(groups=True)
    parameters = {
        "alpha": alpha,
        "min_cases": min_cases,
        "cusum_rr": cusum_rr,
        "cusum_k": cusum_k(cusum_rr),
        "groups": [[g.name, g.version] for g in design.groups],
        "looks": "each loaded quarter",
        "expected": "new substance cases x background rate c/(c+d) as of the look",
    }
    identity = [substance.identity, roles, parameters, __version__]
    run_id = hashlib.sha256(json.dumps(identity).encode()).hexdigest()[:16]
    fingerprint = data_fingerprint(con)
    stored = _stored(con, run_id, fingerprint, roles, parameters)
    if stored is not None:
        return stored
    if counts is None:
        counts = stored_asof_counts(con, substance, roles)
    elif (counts.substance, counts.roles, counts.groups) != (
        substance.name,
        roles,
        frozenset(event_groups(design)),
    ):
        raise ValueError("counts of another substance, other roles or without the event groups")
    quarters, n_new, terms, not_loaded = _counts(con, substance, roles, design, counts)
    last = quarters[-1] if quarters else None
    created = _now()
    looks = len(quarters)
    observed = np.array([o for o, _ in terms.values()], dtype=np.int64).reshape(-1, looks)
    rates = np.array([r for _, r in terms.values()], dtype=float).reshape(-1, looks)
    many = term_paths(quarters, observed, n_new * rates, alpha, min_cases, cusum_rr)
    paths = many.path.assign(
        term=np.repeat([name for name, _ in terms], looks),
        term_kind=np.repeat([kind for _, kind in terms], looks),
        n_substance_cases=np.tile(n_new, len(terms)),
        background_rate=rates.ravel(),
    )
    length = paths["cum_expected"].to_numpy().reshape(-1, looks)[:, -1]
    k = cusum_k(cusum_rr)
    methods = {
        "maxsprt": ("maxsprt_alert", "llr", "cv"),
        "cusum": ("cusum_alert", "cusum", "cusum_h"),
    }
    alerts: list[dict[str, Any]] = []
    for method, (flag, stat, limit) in methods.items():
        for row in paths[paths[flag]].groupby("series", sort=False).head(1).itertuples():
            j = row.series
            own = (
                {"cv": many.maxsprt[j].cv, "size": many.maxsprt[j].size, "min_cases": min_cases}
                if method == "maxsprt"
                else {
                    "k": k,
                    "h": float(many.cusum_h[j]),
                    "rr": cusum_rr,
                    "size": float(many.cusum_size[j]),
                }
            )
            alerts.append(
                {
                    "substance": substance.name,
                    "term": row.term,
                    "term_kind": row.term_kind,
                    "method": method,
                    "alert_quarter": row.quarter,
                    "new_this_quarter": row.quarter == last,
                    "cum_observed": int(row.cum_observed),
                    "cum_expected": float(row.cum_expected),
                    "statistic": float(getattr(row, stat)),
                    "threshold": float(getattr(row, limit)),
                    "parameters": json.dumps(
                        {"alpha": alpha, "looks": looks, **own, "length": float(length[j])}
                    ),
                    "data_fingerprint": fingerprint,
                    "created_at": created,
                }
            )
    result = Sequential(
        substance.name,
        roles,
        tuple(quarters),
        parameters,
        _ordered(pd.DataFrame(alerts, columns=ALERT_COLUMNS)),
        paths[PATH_COLUMNS],
        fingerprint,
        not_loaded,
    )
    _store(con, run_id, substance, result, created)
    return result


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    """Create `sequential_runs`, `sequential_alerts` and `sequential_paths` (safe to repeat)."""
    for ddl in _DDL:
        ensure_derived_table(con, ddl)


def _ordered(alerts: pd.DataFrame) -> pd.DataFrame:
    """New this quarter first, then the latest alert quarter, term and method."""
    alerts = alerts.astype({"new_this_quarter": bool, "cum_observed": "int64"})
    keys = ["new_this_quarter", "alert_quarter", "term", "term_kind", "method"]
    alerts = alerts.sort_values(keys, ascending=[False, False, True, True, True], kind="mergesort")
    return alerts.reset_index(drop=True)


def _counts(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    roles: str | None,
    design: Any,
    asof: AsOfCounts,
) -> tuple[list[str], np.ndarray, dict[tuple[str, str], tuple[np.ndarray, np.ndarray]], int]:
    """Loaded quarters, new substance cases per quarter, and per event (name, kind) its
    observed counts and background rates per quarter; cases first received outside them."""
    quarters = list(asof.quarters)
    if not quarters:
        raise NoDataError("no quarters loaded; run 'surveillance load' first")
    params = {"substance": substance.name, "roles": roles}
    per_quarter = dict(con.execute(_NEW_CASES, params).fetchall())
    if not per_quarter:
        in_roles = f" in roles {roles}" if roles else ""
        raise NoDataError(f"no {substance.name} cases{in_roles} in the loaded quarters")
    n_new = np.array([per_quarter.get(q, 0) for q in quarters], dtype=np.int64)
    not_loaded = sum(n for q, n in per_quarter.items() if q not in quarters)
    con.register("_seq_groups", group_members(event_groups(design)))
    try:
        events = con.execute(_NEW_EVENTS, params).fetchdf()
    finally:
        con.unregister("_seq_groups")
    events = events[events["quarter"].isin(quarters)]
    names = dict(con.execute("SELECT pt_key, pt FROM pt_terms").fetchall())
    names.update(design.names())
    kinds = design.kinds()
    unexposed = (asof.n_cases - asof.n_exposed).astype(float)
    index = {t: i for i, t in enumerate(asof.terms)}
    column = {q: i for i, q in enumerate(quarters)}
    terms = {}
    for key, rows in events.groupby("event_key", sort=True):
        observed = np.zeros(len(quarters), dtype=np.int64)
        observed[[column[q] for q in rows["quarter"]]] = rows["n_cases"].to_numpy()
        i = index[key]
        background = (asof.n_term[i] - asof.a[i]).astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            rate = np.where(unexposed > 0, background / unexposed, 0.0)
        terms[(names.get(key, str(key)), kinds.get(key, "pt"))] = (observed, rate)
    return quarters, n_new, terms, not_loaded


def _store(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    substance: Substance,
    result: Sequential,
    created: datetime,
) -> None:
    """Replace the stored run of these options by this one, in one transaction."""
    con.execute("BEGIN TRANSACTION")
    try:
        for table in ("sequential_runs", "sequential_alerts", "sequential_paths"):
            con.execute(f"DELETE FROM {table} WHERE run_id = $r", {"r": run_id})  # noqa: S608
        con.execute(
            "INSERT INTO sequential_runs VALUES ($r, $s, $v, $roles, $p, $first, $last, $looks, "
            "$terms, $alerts, $not_loaded, $data, $tool, $now)",
            {
                "r": run_id,
                "s": substance.name,
                "v": substance.version,
                "roles": result.roles,
                "p": json.dumps(result.parameters),
                "first": result.quarters[0],
                "last": result.quarters[-1],
                "looks": len(result.quarters),
                "terms": int(result.paths[["term", "term_kind"]].drop_duplicates().shape[0]),
                "alerts": len(result.alerts),
                "not_loaded": result.n_cases_initial_not_loaded,
                "data": result.data_fingerprint,
                "tool": __version__,
                "now": created,
            },
        )
        for table, frame, columns in (
            ("sequential_alerts", result.alerts, ALERT_COLUMNS),
            ("sequential_paths", result.paths.assign(substance=substance.name), None),
        ):
            names = columns or ["substance", *PATH_COLUMNS]
            con.register("_seq_frame", frame[names])
            con.execute(
                f"INSERT INTO {table} BY NAME SELECT $r AS run_id, * FROM _seq_frame",  # noqa: S608
                {"r": run_id},
            )
            con.unregister("_seq_frame")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def _stored(
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    fingerprint: str,
    roles: str | None,
    parameters: dict[str, Any],
) -> Sequential | None:
    """The stored run of these options when it was computed on this data, else None."""
    if not has_table(con, "sequential_runs"):
        return None
    row = con.execute(
        "SELECT substance, first_quarter, n_cases_initial_not_loaded FROM sequential_runs "
        "WHERE run_id = $r AND data_fingerprint = $f",
        {"r": run_id, "f": fingerprint},
    ).fetchone()
    if row is None:
        return None
    quarters = tuple(
        str(r[0])
        for r in con.execute(
            "SELECT DISTINCT quarter FROM sequential_paths WHERE run_id = $r ORDER BY 1",
            {"r": run_id},
        ).fetchall()
    ) or tuple(str(r[0]) for r in con.execute("SELECT quarter FROM quarters ORDER BY 1").fetchall())
    alerts = con.execute(
        "SELECT * EXCLUDE (run_id) FROM sequential_alerts WHERE run_id = $r", {"r": run_id}
    ).fetchdf()
    paths = con.execute(
        "SELECT * EXCLUDE (run_id, substance) FROM sequential_paths WHERE run_id = $r "
        "ORDER BY term_kind, term, look",
        {"r": run_id},
    ).fetchdf()
    paths["cases_to_alert"] = paths["cases_to_alert"].astype("Int64")
    return Sequential(
        str(row[0]),
        roles,
        quarters,
        parameters,
        _ordered(alerts[ALERT_COLUMNS]),
        paths[PATH_COLUMNS],
        fingerprint,
        int(row[2]),
    )


def alerts_document(result: Sequential, loaded: Sequence[str] = ()) -> dict[str, Any]:
    """`alerts.json`: the run's parameters, the alerts of the quarters just loaded (`new_alerts`)
    and every alert, as plain JSON (a scheduler reads `new_alerts`)."""

    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out = []
        for row in frame.drop(columns=["created_at"]).to_dict(orient="records"):
            row["parameters"] = json.loads(row["parameters"])
            out.append({k: v.item() if isinstance(v, np.generic) else v for k, v in row.items()})
        return out

    return {
        "substance": result.substance,
        "roles": result.roles,
        "latest_quarter": result.quarters[-1],
        "quarters": list(result.quarters),
        "loaded_this_run": list(loaded),
        "data_fingerprint": result.data_fingerprint,
        "parameters": result.parameters,
        "new_alerts": records(result.alerts_in(loaded)),
        "alerts": records(result.alerts),
    }

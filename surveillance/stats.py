"""Disproportionality statistics for 2x2 tables of spontaneous reports: pure numpy/scipy.

Reads nothing and writes nothing: every function takes arrays of counts and returns arrays.
The cells of a table are always named, keyword-only arguments so they cannot be transposed:

    a = cases with the substance and the term      b = with the substance, without the term
    c = cases without the substance, with the term d = neither              N = a + b + c + d

Zero-cell rule (the only one in this module): when any of a, b, c, d of a table is 0, the
PRR and the ROR of that table and their confidence intervals are computed after adding 0.5 to
all four cells (the Haldane-Anscombe correction; statsmodels' ``Table2x2(shift_zeros=True)``
differs: it replaces only the zero cells by 0.5), and the table is flagged in
``zero_corrected``. The chi-square, the IC, the
expected count and the EBGM use the raw counts; they need no correction. A table with an empty
margin has a chi-square of 0 (nothing can be tested) and E = 0, whose EBGM posterior is the
prior itself. Counts must be finite, non-negative
whole numbers with N > 0; anything else raises ``ValueError``. For valid counts no output holds
an infinity or a NaN.

Stratified tables (strata such as sex, age group or report year) are 2-D arrays shaped
(n_tables, n_strata), cell by cell as above. A stratum with n_k = 0 contributes nothing; every
table needs N > 0 summed over its strata. The Mantel-Haenszel ROR (``ror_mh``) applies the same
zero-cell rule to the pooled estimate: when sum_k a_k d_k / n_k or sum_k b_k c_k / n_k of a
table is 0 (the pooled ROR would be 0 or infinite), 0.5 is added to all four cells of every
non-empty stratum of that table, and the table is flagged in ``zero_corrected``; empty strata
stay empty. With one stratum this is exactly the rule above (R = ad/n is 0 iff a or d is 0, and
S = bc/n iff b or c is). Strata with zero cells but positive pooled sums are used as they are,
as the Mantel-Haenszel estimator intends. In ``stratified_signal_table`` the PRR, its chi-square
and the p-values are computed on the crude tables (summed over strata): they are not stratified.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, special, stats
from threadpoolctl import threadpool_limits

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]

Z_95 = float(stats.norm.ppf(0.975))
"""Two-sided 95% normal quantile used by the PRR and ROR intervals."""

EVANS_MIN_CASES = 3
EVANS_MIN_PRR = 2.0
EVANS_MIN_CHI2 = 4.0
ROR_MIN_CASES = 3
IC_SHRINKAGE = 0.5
EB05_THRESHOLD = 2.0
"""EBGM signal: EB05 >= 2, the usual FDA screening threshold (Szarfman et al. 2002)."""

FISHER_MAX_EXPECTED = 5.0
"""p_values uses Fisher's exact test when any expected cell is below this, else chi-square."""

DEFAULT_STARTS: tuple[tuple[float, float, float, float, float], ...] = (
    # (alpha1, beta1, alpha2, beta2, P): the starting points of openEBGM's vignettes
    # (Canida & Ihrie 2017, "Hyperparameter Estimation with openEBGM"), among the starts.
    (0.2, 0.1, 2.0, 4.0, 1 / 3),
    (0.1, 0.1, 10.0, 10.0, 0.2),
    (0.3, 0.5, 6.0, 6.0, 0.5),
    (0.5, 0.3, 12.0, 12.0, 0.8),
    (0.2, 0.2, 5.0, 5.0, 0.4),
)
PARAM_BOUNDS = (1e-4, 1e4)
"""Bounds on alpha1, beta1, alpha2, beta2; an estimate on a bound is reported not converged."""
BOUND_RTOL = 0.01
"""An estimate within this relative distance of a bound counts as on it (the optimiser stops
short of a bound that the likelihood keeps pushing towards)."""
P_BOUNDS = (1e-6, 1 - 1e-6)
P_EDGE = 1e-3
"""A fitted P within P_EDGE of 0 or 1 is in effect one gamma: reported not converged."""
HYPERCUBE_STARTS = 40
"""Latin-hypercube starts over log alpha, log(alpha/beta) and logit P, besides the others."""
SCREEN_ITERATIONS = 20
"""Every start first runs this many L-BFGS-B iterations on the coarse points (SCREEN_BINS)."""
POLISHED_STARTS = 6
"""The best screened starts are then run to convergence on the coarse points."""
SCREEN_BINS = 64
"""The coarse points: per count n, at most this many equal-count bins of the pairs' E."""
AGREE_RTOL = 0.01
"""Two optima agree when each of the five hyperparameters (components ordered) is this close."""
SQUASH_BIN_POINTS = 50
"""Squashing bins hold about SQUASH_BIN_POINTS / n pairs of count n (at least 2)."""
SQUASH_MIN_POINTS = 500
SQUASH_KEEP_BINS = 2
LIKELIHOOD_CHUNK = 8192
"""Points per block of the likelihood: its temporaries (64 KiB each) stay in the CPU cache."""
FIT_THREADS = min(4, os.cpu_count() or 1)
"""Threads that evaluate the likelihood's blocks during a fit (the sums are added in block order,
so the fit does not depend on the number)."""


@dataclass(frozen=True)
class PRRResult:
    """Proportional reporting ratio, its 95% CI, Yates' chi-square and Evans' signal."""

    prr: FloatArray
    lower: FloatArray
    upper: FloatArray
    chi2: FloatArray
    signal: BoolArray
    zero_corrected: BoolArray


@dataclass(frozen=True)
class RORResult:
    """Reporting odds ratio, its 95% CI and the signal lower > 1 with a >= 3."""

    ror: FloatArray
    lower: FloatArray
    upper: FloatArray
    signal: BoolArray
    zero_corrected: BoolArray


@dataclass(frozen=True)
class ICResult:
    """Shrunk information component, its 95% credibility interval and IC025 > 0."""

    ic: FloatArray
    ic025: FloatArray
    ic975: FloatArray
    expected: FloatArray
    signal: BoolArray


@dataclass(frozen=True)
class EBGMResult:
    """EBGM, the 5% and 95% posterior quantiles, posterior weight Q_n and EB05 >= 2."""

    ebgm: FloatArray
    eb05: FloatArray
    eb95: FloatArray
    qn: FloatArray
    signal: BoolArray


@dataclass(frozen=True)
class Prior:
    """DuMouchel's two-gamma mixture prior, P*Gamma(alpha1, beta1) + (1-P)*Gamma(alpha2, beta2).

    Component 1 is the one with the larger prior mean alpha/beta. ``loglik`` is the zero-truncated
    log-likelihood of the points fitted (squashed or not), ``loglik_full`` the same at the fitted
    hyperparameters on every pair (unsquashed), ``n_pairs`` the pairs with n >= min_count that
    went in, ``n_points`` the points the optimiser saw.
    """

    alpha1: float
    beta1: float
    alpha2: float
    beta2: float
    p: float
    loglik: float
    converged: bool
    n_pairs: int
    n_points: int
    method: str
    loglik_full: float = float("nan")


def _whole_cells(
    a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Broadcast the four cells and check they are finite, non-negative whole numbers."""
    arrays = np.broadcast_arrays(*(np.asarray(x, dtype=np.float64) for x in (a, b, c, d)))
    for name, x in zip("abcd", arrays, strict=True):
        if not np.all(np.isfinite(x)) or np.any(x < 0) or np.any(x != np.floor(x)):
            raise ValueError(f"cell {name} must hold finite, non-negative whole numbers")
    ca, cb, cc, cd = (np.array(x) for x in arrays)
    return ca, cb, cc, cd


def _cells(
    a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Broadcast and check the four cells: finite, non-negative whole numbers, N > 0."""
    ca, cb, cc, cd = _whole_cells(a, b, c, d)
    if np.any(ca + cb + cc + cd <= 0):
        raise ValueError("every table needs N = a + b + c + d > 0")
    return ca, cb, cc, cd


def _strata_cells(
    a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Cells of stratified tables, shaped (n_tables, n_strata); N > 0 over each table's strata."""
    ca, cb, cc, cd = _whole_cells(a, b, c, d)
    if ca.ndim != 2:
        raise ValueError("stratified cells must be 2-D arrays shaped (n_tables, n_strata)")
    if np.any(np.sum(ca + cb + cc + cd, axis=1) <= 0):
        raise ValueError("every table needs N = a + b + c + d > 0 summed over its strata")
    return ca, cb, cc, cd


def _per_stratum(x: FloatArray, n: FloatArray) -> FloatArray:
    """x / n_k, with 0 for empty strata (n_k = 0): they contribute nothing to a sum."""
    return np.where(n > 0, x / np.where(n > 0, n, 1.0), 0.0)


def _haldane(
    a: FloatArray, b: FloatArray, c: FloatArray, d: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray, BoolArray]:
    """The module's zero-cell rule: +0.5 on all four cells of tables with any zero cell."""
    zero = (a == 0) | (b == 0) | (c == 0) | (d == 0)
    shift = np.where(zero, 0.5, 0.0)
    return a + shift, b + shift, c + shift, d + shift, zero


def expected_count(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> FloatArray:
    """Expected a under independence, E = (a + b)(a + c) / N."""
    fa, fb, fc, fd = _cells(a, b, c, d)
    return (fa + fb) * (fa + fc) / (fa + fb + fc + fd)


def stratified_expected(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> FloatArray:
    """Stratified expected a, E = sum_k (a_k + b_k)(a_k + c_k) / n_k over strata with n_k > 0.

    Cells are shaped (n_tables, n_strata); returns one E per table. Independence is assumed
    within each stratum rather than over the pooled table, as the IC (Norén et al. 2006, Stat
    Med 25:3740) and the EBGM (DuMouchel 1999, Am Stat 53:177) stratify their expected counts.
    """
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    n = fa + fb + fc + fd
    return np.sum(_per_stratum((fa + fb) * (fa + fc), n), axis=1)


def chi2_yates(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> FloatArray:
    """Pearson chi-square with Yates' continuity correction on the raw counts.

    chi2 = N * max(|ad - bc| - N/2, 0)^2 / ((a+b)(c+d)(a+c)(b+d)) (Yates 1934). The correction
    is capped so it never overshoots, as in scipy.stats.chi2_contingency; 0 for an empty margin.
    """
    fa, fb, fc, fd = _cells(a, b, c, d)
    n = fa + fb + fc + fd
    margins = (fa + fb) * (fc + fd) * (fa + fc) * (fb + fd)
    excess = np.maximum(np.abs(fa * fd - fb * fc) - n / 2, 0.0)
    safe = np.where(margins > 0, margins, 1.0)
    return np.where(margins > 0, n * excess**2 / safe, 0.0)


def prr(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> PRRResult:
    """PRR = (a/(a+b)) / (c/(c+d)) with a log-normal 95% CI and Evans' criteria.

    Evans, Waller & Davis 2001 (Pharmacoepidemiol Drug Saf 10:483): SE(log PRR) =
    sqrt(1/a - 1/(a+b) + 1/c - 1/(c+d)); signal when a >= 3, PRR >= 2 and chi2 >= 4.
    """
    fa, fb, fc, fd = _cells(a, b, c, d)
    ha, hb, hc, hd, zero = _haldane(fa, fb, fc, fd)
    log_prr = np.log(ha / (ha + hb)) - np.log(hc / (hc + hd))
    se = np.sqrt(1 / ha - 1 / (ha + hb) + 1 / hc - 1 / (hc + hd))
    chi2 = chi2_yates(a=fa, b=fb, c=fc, d=fd)
    estimate = np.exp(log_prr)
    signal = (fa >= EVANS_MIN_CASES) & (estimate >= EVANS_MIN_PRR) & (chi2 >= EVANS_MIN_CHI2)
    return PRRResult(
        prr=estimate,
        lower=np.exp(log_prr - Z_95 * se),
        upper=np.exp(log_prr + Z_95 * se),
        chi2=chi2,
        signal=signal,
        zero_corrected=zero,
    )


def ror_signal(lower: ArrayLike, a: ArrayLike) -> BoolArray:
    """The ROR criterion: lower 95% bound > 1 with a >= ROR_MIN_CASES (a summed over strata)."""
    return (np.asarray(lower) > 1) & (np.asarray(a) >= ROR_MIN_CASES)


def ror(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> RORResult:
    """ROR = ad / bc with Woolf's log-normal 95% CI; signal when lower > 1 and a >= 3.

    van Puijenbroek et al. 2002 (Pharmacoepidemiol Drug Saf 11:3): SE(log ROR) =
    sqrt(1/a + 1/b + 1/c + 1/d).
    """
    fa, fb, fc, fd = _cells(a, b, c, d)
    ha, hb, hc, hd, zero = _haldane(fa, fb, fc, fd)
    log_ror = np.log(ha) + np.log(hd) - np.log(hb) - np.log(hc)
    se = np.sqrt(1 / ha + 1 / hb + 1 / hc + 1 / hd)
    lower = np.exp(log_ror - Z_95 * se)
    return RORResult(
        ror=np.exp(log_ror),
        lower=lower,
        upper=np.exp(log_ror + Z_95 * se),
        signal=ror_signal(lower, fa),
        zero_corrected=zero,
    )


def ror_mh(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> RORResult:
    """Mantel-Haenszel ROR pooled over strata, its 95% CI and the signal lower > 1, a >= 3.

    Cells are shaped (n_tables, n_strata). OR_MH = sum_k R_k / sum_k S_k with R_k = a_k d_k / n_k
    and S_k = b_k c_k / n_k (Mantel & Haenszel 1959, J Natl Cancer Inst 22:719). With
    P_k = (a_k + d_k) / n_k and Q_k = (b_k + c_k) / n_k, the variance of log OR_MH is
    sum P R / (2 (sum R)^2) + sum (P S + Q R) / (2 sum R sum S) + sum Q S / (2 (sum S)^2)
    (Robins, Breslow & Greenland 1986, Biometrics 42:311), consistent both for many sparse strata
    and for few large ones; with one stratum it is Woolf's 1/a + 1/b + 1/c + 1/d, so OR_MH equals
    ``ror``. The signal uses a summed over strata. Zero cells: see the module docstring.
    """
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    n = fa + fb + fc + fd
    zero = (np.sum(_per_stratum(fa * fd, n), axis=1) == 0) | (
        np.sum(_per_stratum(fb * fc, n), axis=1) == 0
    )
    shift = np.where(zero[:, np.newaxis] & (n > 0), 0.5, 0.0)
    ha, hb, hc, hd = fa + shift, fb + shift, fc + shift, fd + shift
    hn = ha + hb + hc + hd
    r, s = _per_stratum(ha * hd, hn), _per_stratum(hb * hc, hn)
    p, q = _per_stratum(ha + hd, hn), _per_stratum(hb + hc, hn)
    sum_r, sum_s = np.sum(r, axis=1), np.sum(s, axis=1)
    variance = (
        np.sum(p * r, axis=1) / (2 * sum_r**2)
        + np.sum(p * s + q * r, axis=1) / (2 * sum_r * sum_s)
        + np.sum(q * s, axis=1) / (2 * sum_s**2)
    )
    log_ror = np.log(sum_r) - np.log(sum_s)
    se = np.sqrt(variance)
    lower = np.exp(log_ror - Z_95 * se)
    return RORResult(
        ror=np.exp(log_ror),
        lower=lower,
        upper=np.exp(log_ror + Z_95 * se),
        signal=ror_signal(lower, np.sum(fa, axis=1)),
        zero_corrected=zero,
    )


def ic(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> ICResult:
    """Information component of each table with the crude E = (a + b)(a + c) / N.

    The formula, interval and signal are those of ``ic_given_expected``.
    """
    fa, fb, fc, fd = _cells(a, b, c, d)
    return ic_given_expected(a=fa, expected=expected_count(a=fa, b=fb, c=fc, d=fd))


def ic_given_expected(*, a: ArrayLike, expected: ArrayLike) -> ICResult:
    """Information component with Norén's shrinkage and its gamma credibility interval.

    IC = log2((a + 0.5) / (E + 0.5)) (Bate et al. 1998, Eur J Clin Pharmacol 54:315; shrinkage
    by Norén et al. 2006, Stat Med 25:3740); IC025 and IC975 are log2 of the 2.5% and 97.5%
    quantiles of Gamma(shape a + 0.5, rate E + 0.5) (Norén et al. 2013, Stat Methods Med Res
    22:57). Signal when IC025 > 0. ``expected`` is supplied, e.g. ``stratified_expected``; it
    must be finite, >= 0, and > 0 wherever a > 0, as for ``ebgm``.
    """
    fa, expected = _pairs(a, expected)
    shape = fa + IC_SHRINKAGE
    rate = expected + IC_SHRINKAGE
    ic025 = np.log2(special.gammaincinv(shape, 0.025) / rate)
    return ICResult(
        ic=np.log2(shape / rate),
        ic025=ic025,
        ic975=np.log2(special.gammaincinv(shape, 0.975) / rate),
        expected=expected,
        signal=ic025 > 0,
    )


def _fisher_two_sided(a: FloatArray, b: FloatArray, c: FloatArray, d: FloatArray) -> FloatArray:
    """Two-sided Fisher exact p: sum of hypergeometric tables no likelier than the observed.

    Fisher 1935; the same rule and relative tolerance (1e-7) as scipy.stats.fisher_exact, but
    vectorised: the pmf is unimodal, so the far tail starts where a bisection finds it.
    """
    total, row1, col1 = a + b + c + d, a + b, a + c
    dist = stats.hypergeom(total, col1, row1)
    low = np.maximum(0.0, row1 + col1 - total)
    high = np.minimum(row1, col1)
    mode = np.floor((row1 + 1) * (col1 + 1) / (total + 2))
    threshold = dist.logpmf(a) + np.log1p(1e-7)
    left_side = a <= mode
    # The far tail is searched on the other side of the mode, where the pmf is monotone.
    lo = np.where(left_side, np.maximum(mode, a + 1), low)
    hi = np.where(left_side, high, np.minimum(mode, a - 1))
    # Right side: first x in [lo, hi] with pmf <= threshold (hi + 1 if none).
    # Left side: last x in [lo, hi] with pmf <= threshold (lo - 1 if none).
    left_b = np.where(left_side, lo, lo - 1)
    right_b = np.where(left_side, hi + 1, hi)
    while True:
        active = right_b > left_b
        if not np.any(active):
            break
        mid = np.where(left_side, np.floor((left_b + right_b) / 2), np.ceil((left_b + right_b) / 2))
        below = np.where(active, dist.logpmf(np.where(active, mid, a)) <= threshold, False)
        # For the right side the pmf falls with x; for the left side it rises.
        right_b = np.where(active & left_side & below, mid, right_b)
        left_b = np.where(active & left_side & ~below, mid + 1, left_b)
        left_b = np.where(active & ~left_side & below, mid, left_b)
        right_b = np.where(active & ~left_side & ~below, mid - 1, right_b)
    near = np.where(left_side, dist.cdf(a), dist.sf(a - 1))
    far = np.where(left_side, dist.sf(left_b - 1), dist.cdf(right_b))
    return np.minimum(near + far, 1.0)


def p_values(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> FloatArray:
    """Two-sided p-value of independence for each table.

    Fisher's exact test where any expected cell is below 5 (Cochran's rule), otherwise the
    chi-square test with Yates' correction on one degree of freedom (the statistic of ``prr``).
    """
    fa, fb, fc, fd = _cells(a, b, c, d)
    n = fa + fb + fc + fd
    rows = (fa + fb, fc + fd)
    cols = (fa + fc, fb + fd)
    min_expected = np.minimum.reduce([r * k / n for r in rows for k in cols])
    use_fisher = min_expected < FISHER_MAX_EXPECTED
    p = stats.chi2.sf(chi2_yates(a=fa, b=fb, c=fc, d=fd), df=1)
    if np.any(use_fisher):
        p[use_fisher] = _fisher_two_sided(
            fa[use_fisher], fb[use_fisher], fc[use_fisher], fd[use_fisher]
        )
    return np.asarray(p, dtype=np.float64)


def bh_adjust(p: ArrayLike) -> FloatArray:
    """Benjamini-Hochberg (1995, JRSS B 57:289) adjusted p-values, same shape as ``p``."""
    values = np.asarray(p, dtype=np.float64)
    if np.any(~np.isfinite(values)) or np.any((values < 0) | (values > 1)):
        raise ValueError("p-values must lie in [0, 1]")
    flat = values.ravel()
    m = flat.size
    order = np.argsort(flat)
    scaled = flat[order] * m / np.arange(1, m + 1)
    adjusted = np.minimum.accumulate(scaled[::-1])[::-1]
    out = np.empty_like(flat)
    out[order] = np.minimum(adjusted, 1.0)
    return out.reshape(values.shape)


def _pairs(n: ArrayLike, e: ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Broadcast and check observed counts n (whole, >= 0) and expected counts e (>= 0).

    E = 0 (a table with an empty margin) is allowed only with n = 0; its posterior is the prior.
    """
    fn, fe = (np.array(x) for x in np.broadcast_arrays(np.asarray(n, float), np.asarray(e, float)))
    if not np.all(np.isfinite(fn)) or np.any(fn < 0) or np.any(fn != np.floor(fn)):
        raise ValueError("n must hold finite, non-negative whole numbers")
    if not np.all(np.isfinite(fe)) or np.any(fe < 0) or np.any((fe == 0) & (fn > 0)):
        raise ValueError("e must hold finite expected counts, > 0 wherever n > 0")
    return fn, fe


def _nb_logpmf(n: FloatArray, e: FloatArray, alpha: float, beta: float) -> FloatArray:
    """log P(N = n) for N ~ Poisson(lambda * E), lambda ~ Gamma(alpha, rate beta).

    The marginal is negative binomial with size alpha and probability beta / (beta + E)
    (DuMouchel 1999, eq. 5).
    """
    return (
        special.gammaln(alpha + n)
        - special.gammaln(alpha)
        - special.gammaln(n + 1)
        - alpha * np.log1p(e / beta)
        + n * (np.log(np.where(n > 0, e, 1.0)) - np.log(beta + e))
    )


@dataclass(frozen=True)
class _Points:
    """Weighted points (n, E, w) of a prior fit and the parts of their likelihood free of theta.

    The optimiser evaluates the likelihood hundreds of times: the gamma functions of alpha + n
    are computed once per distinct count (``counts``; ``count_of`` indexes each point's), and the
    weighted sum of n log E - log n!, which theta does not move, once (``log_const``)."""

    n: FloatArray
    e: FloatArray
    w: FloatArray
    counts: FloatArray
    count_of: NDArray[np.intp]
    log_const: float


def _fit_points(n: FloatArray, e: FloatArray, w: FloatArray) -> _Points:
    """The points (n >= 1, E > 0, weights w) with their theta-free constants."""
    counts, count_of = np.unique(n, return_inverse=True)
    log_const = float(np.dot(w, n * np.log(e) - special.gammaln(n + 1)))
    return _Points(n, e, w, counts, count_of.ravel(), log_const)


def _component(
    n: FloatArray,
    e: FloatArray,
    log_gamma: FloatArray,
    alpha: float,
    beta: float,
    min_count: int,
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """One component's log pmf less its theta-free part n log E - log n! (``log_gamma`` holds
    log Gamma(alpha + n) - log Gamma(alpha) of each point), P(N >= min_count), log(1 + E / beta)
    and 1 / (beta + E).

    log f(n) = log Gamma(alpha + n) - log Gamma(alpha) - log n! + n log E - (alpha + n) log(1 + E
    / beta) - n log beta: ``_nb_logpmf`` regrouped. P(N >= m) = I_x(m, alpha) with x = E / (beta
    + E), the regularised incomplete beta function, accurate also where E is tiny and the tail is
    nearly 0; for m = 1 it is the closed form 1 - (beta / (beta + E))^alpha, computed with expm1
    (the same accuracy, much faster).
    """
    log_ratio = np.log1p(e * (1 / beta))
    logf = log_gamma - alpha * log_ratio - n * (log_ratio + np.log(beta))
    if min_count == 1:
        tail = -np.expm1(-alpha * log_ratio)
    else:
        tail = special.betainc(float(min_count), alpha, e / (beta + e))
    return logf, tail, log_ratio, 1 / (beta + e)


def _component_gradient(
    n: FloatArray,
    e: FloatArray,
    digamma: FloatArray,
    alpha: float,
    beta: float,
    min_count: int,
    parts: tuple[FloatArray, FloatArray, FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """d log f / d alpha, d log f / d beta, d log S / d alpha, d log S / d beta of one component
    (S = P(N >= min_count)), from ``_component``'s ``parts``; ``digamma`` holds psi(alpha + n) -
    psi(alpha) of each point."""
    _, tail, log_ratio, inv_sum = parts
    dlogf_alpha = digamma - log_ratio
    dlogf_beta = alpha / beta - (alpha + n) * inv_sum
    # d S / d theta = -sum_{k < m} f(k) d log f(k) / d theta
    if min_count == 1:
        # f(0) = 1 - S: where S is near 1 this is f(0) to within 1e-16, its gradient terms nil.
        f0_over_s = (1 - tail) / tail
        return (
            dlogf_alpha,
            dlogf_beta,
            f0_over_s * log_ratio,
            f0_over_s * (alpha * inv_sum - alpha / beta),
        )
    dtail_alpha = np.zeros_like(e)
    dtail_beta = np.zeros_like(e)
    for k in range(min_count):
        fk = np.exp(_nb_logpmf(np.full_like(e, k), e, alpha, beta))
        dtail_alpha -= fk * (special.digamma(alpha + k) - special.digamma(alpha) - log_ratio)
        dtail_beta -= fk * (alpha / beta - (alpha + k) * inv_sum)
    return dlogf_alpha, dlogf_beta, dtail_alpha / tail, dtail_beta / tail


def prior_neg_loglik(
    theta: ArrayLike,
    n: ArrayLike,
    e: ArrayLike,
    *,
    weights: ArrayLike | None = None,
    min_count: int = 1,
) -> float:
    """Negative log-likelihood of (alpha1, beta1, alpha2, beta2, P) on pairs with n >= min_count.

    The marginal of N is DuMouchel's (1999, eq. 12) mixture of two negative binomials,
    P f1(n) + (1-P) f2(n); given that only pairs with N >= min_count are seen, each term is
    divided by P(N >= min_count) = P S1 + (1-P) S2 of the whole mixture. openEBGM's ``negLL``
    and ``negLLsquash`` (after DuMouchel & Pregibon 2001) truncate each component on its own,
    P f1/S1 + (1-P) f2/S2, which makes P a weight among the truncated components rather than
    the prior weight that Q_n and the EBGM use; on data simulated from the prior it does not
    recover the prior, so this module conditions the mixture. ``weights`` are squashing
    weights. Pairs with n < min_count are an error: they are not part of this model.
    """
    fn, fe = _pairs(n, e)
    if np.any(fn < min_count):
        raise ValueError(f"every pair must have n >= min_count = {min_count}")
    w = np.ones_like(fn) if weights is None else np.asarray(weights, dtype=np.float64)
    value, _ = _likelihood(_to_free(theta), _fit_points(fn, fe, w), min_count, gradient=False)
    return value


def _to_free(theta: ArrayLike) -> FloatArray:
    """(alpha1, beta1, alpha2, beta2, P) to the optimiser's unbounded log/logit scale."""
    a1, b1, a2, b2, p = np.asarray(theta, dtype=np.float64)
    return np.array([np.log(a1), np.log(b1), np.log(a2), np.log(b2), special.logit(p)])


def _objective(
    x: FloatArray, n: FloatArray, e: FloatArray, w: FloatArray, min_count: int
) -> tuple[float, FloatArray]:
    """Weighted negative log-likelihood of the pairs (n, e) and its gradient (``_likelihood``)."""
    value, grad = _likelihood(x, _fit_points(n, e, w), min_count, gradient=True)
    assert grad is not None
    return value, grad


def _log_mix(first: FloatArray, second: FloatArray) -> tuple[FloatArray, FloatArray]:
    """log(exp(first) + exp(second)) and the share exp(first) of the sum, without overflow."""
    high = np.maximum(first, second)
    rest = np.exp(-np.abs(first - second))
    total = 1 + rest
    share = np.where(first >= second, 1, rest) / total
    return high + np.log1p(rest), share


def _likelihood(
    x: FloatArray,
    pts: _Points,
    min_count: int,
    gradient: bool,
    mapper: Callable[..., Iterable[tuple[float, FloatArray]]] = map,
) -> tuple[float, FloatArray | None]:
    """Weighted negative log-likelihood on the log/logit scale, and its gradient if asked.

    log L = log(P f1(n) + (1-P) f2(n)) - log(P S1 + (1-P) S2), S_j = P_j(N >= min_count).
    The points are taken LIKELIHOOD_CHUNK at a time, so that the temporaries stay in cache;
    ``mapper`` (``map``, or a thread pool's) runs the blocks, whose sums are added in order.
    """
    a1, b1, a2, b2 = np.exp(x[:4])
    p = float(special.expit(x[4]))
    log_p, log_q = np.log(p), np.log1p(-p)
    gamma1 = special.gammaln(a1 + pts.counts) - special.gammaln(a1)
    gamma2 = special.gammaln(a2 + pts.counts) - special.gammaln(a2)
    if gradient:
        digamma1 = special.digamma(a1 + pts.counts) - special.digamma(a1)
        digamma2 = special.digamma(a2 + pts.counts) - special.digamma(a2)

    def block(lo: int) -> tuple[float, FloatArray]:
        """The block's -log L, and its sums of w (r1 d log f1 / d alpha1 - t1 d log S1 / d
        alpha1) etc., one per parameter."""
        part = slice(lo, lo + LIKELIHOOD_CHUNK)
        n, e, w, index = pts.n[part], pts.e[part], pts.w[part], pts.count_of[part]
        one = _component(n, e, gamma1[index], a1, b1, min_count)
        two = _component(n, e, gamma2[index], a2, b2, min_count)
        numerator, r1 = _log_mix(log_p + one[0], log_q + two[0])
        denominator = p * one[1] + (1 - p) * two[1]
        value = -float(np.dot(w, numerator) - np.dot(w, np.log(denominator)))
        if not gradient:
            return value, np.zeros(5)
        w_r1 = w * r1  # w times the posterior weight of component 1
        w_t1 = w * (p * one[1] / denominator)  # w times its weight given n >= min_count
        w_r2, w_t2 = w - w_r1, w - w_t1
        dl1_a, dl1_b, ds1_a, ds1_b = _component_gradient(
            n, e, digamma1[index], a1, b1, min_count, one
        )
        dl2_a, dl2_b, ds2_a, ds2_b = _component_gradient(
            n, e, digamma2[index], a2, b2, min_count, two
        )
        sums = (
            np.dot(w_r1, dl1_a) - np.dot(w_t1, ds1_a),
            np.dot(w_r1, dl1_b) - np.dot(w_t1, ds1_b),
            np.dot(w_r2, dl2_a) - np.dot(w_t2, ds2_a),
            np.dot(w_r2, dl2_b) - np.dot(w_t2, ds2_b),
            np.sum(w_r1) - np.sum(w_t1),
        )
        return value, np.array(sums)

    value = -pts.log_const
    total = np.zeros(5)
    for part_value, part_sums in mapper(block, range(0, pts.n.size, LIKELIHOOD_CHUNK)):
        value += part_value
        total += part_sums
    if not gradient:
        return value, None
    return value, -total * np.array([a1, b1, a2, b2, 1.0])


def _merged_pairs(n: FloatArray, e: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Identical (n, E) pairs merged into one point weighted by their number (lossless), sorted
    by n, then E."""
    order = np.argsort(n, kind="stable")
    sn, se = n[order], e[order]
    del order
    # Sorting E within each count sorts values in place: cheaper than a lexsort of indices.
    ends = np.r_[np.flatnonzero(sn[1:] != sn[:-1]) + 1, sn.size]
    starts = np.r_[0, ends[:-1]]
    for lo, hi in zip(starts[ends - starts > 1], ends[ends - starts > 1], strict=True):
        se[lo:hi].sort()
    new = np.ones(sn.size, dtype=bool)
    new[1:] = (sn[1:] != sn[:-1]) | (se[1:] != se[:-1])
    start = np.flatnonzero(new)
    weight = np.diff(np.append(start, sn.size)).astype(np.float64)
    return sn[start], se[start], weight


def squash_pairs(n: ArrayLike, e: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Data squashing for the prior fit: returns (n, e, weight) with far fewer points.

    After DuMouchel & Pregibon 2001 as openEBGM ``squashData`` does it: identical (n, E) pairs are
    merged first (lossless); then, for each count n with at least 500 distinct E, points sorted by E
    are binned in runs of max(2, 50 // n), each bin replaced by its mean E weighted by its size,
    and the largest 2 bins of E are kept unsquashed (they carry the most information).
    """
    fn, fe = _pairs(n, e)
    return _squash_merged(*_merged_pairs(fn.ravel(), fe.ravel()))


def _squash_merged(
    un: FloatArray, ue: FloatArray, weight: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """``squash_pairs`` of points already merged by ``_merged_pairs``."""
    # Rank of each distinct point within its count, and the size of that count's group.
    group_start = np.flatnonzero(np.r_[True, un[1:] != un[:-1]])
    group_size = np.diff(np.append(group_start, un.size))
    group_of = np.repeat(np.arange(group_start.size), group_size)
    rank = np.arange(un.size) - group_start[group_of]
    bin_size = np.maximum(2, SQUASH_BIN_POINTS // np.maximum(un, 1)).astype(np.int64)
    squashable = (group_size[group_of] >= SQUASH_MIN_POINTS) & (
        rank < group_size[group_of] - SQUASH_KEEP_BINS * bin_size
    )
    # Bin key: consecutive ranks share a bin when squashable; otherwise each point is its own.
    bin_index = np.where(squashable, rank // bin_size, -1 - rank)
    key = np.r_[True, (group_of[1:] != group_of[:-1]) | (bin_index[1:] != bin_index[:-1])]
    bin_id = np.cumsum(key) - 1
    out_w = np.bincount(bin_id, weights=weight).astype(np.float64)
    out_e = np.bincount(bin_id, weights=weight * ue) / out_w
    return un[key], out_e, out_w


def coarse_pairs(
    n: FloatArray, e: FloatArray, w: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Weighted points (n, E, w) merged to at most SCREEN_BINS per count n, for screening starts.

    Per count, the points sorted by E are cut into SCREEN_BINS runs of (nearly) equal size; each
    run becomes its weighted mean E with its total weight. The weights and sum w*E are kept."""
    order = np.lexsort((e, n))
    fn, fe, fw = n[order], e[order], w[order]
    group_start = np.flatnonzero(np.r_[True, fn[1:] != fn[:-1]])
    group_size = np.diff(np.append(group_start, fn.size))
    group_of = np.repeat(np.arange(group_start.size), group_size)
    rank = np.arange(fn.size) - group_start[group_of]
    bin_index = rank * SCREEN_BINS // group_size[group_of]
    key = np.r_[True, (group_of[1:] != group_of[:-1]) | (bin_index[1:] != bin_index[:-1])]
    bin_id = np.cumsum(key) - 1
    out_w = np.bincount(bin_id, weights=fw).astype(np.float64)
    out_e = np.bincount(bin_id, weights=fw * fe) / out_w
    return fn[key], out_e, out_w


def _weighted_quantile(x: FloatArray, w: FloatArray, q: float) -> float:
    """The q-quantile of x with weights w (the smallest x whose cumulative weight reaches q)."""
    order = np.argsort(x)
    cumulative = np.cumsum(w[order])
    return float(x[order][np.searchsorted(cumulative, q * cumulative[-1])])


def prior_starts(n: ArrayLike, e: ArrayLike, weights: ArrayLike | None = None) -> list[FloatArray]:
    """Starting points (alpha1, beta1, alpha2, beta2, P) spread over the parameter space.

    openEBGM's five, two-component starts from the data (a background component at n/E near 1
    and a second at the 90th or 99th percentile of n/E), and a Latin hypercube (fixed seed)
    over log alpha in [0.05, 50], log prior mean alpha/beta in [0.05, 200] and logit P in
    [-5, 5]: one gamma's optimum (P near 0 or 1) is then one start's basin, not every start's.
    """
    fn, fe = _pairs(n, e)
    w = np.ones_like(fn) if weights is None else np.asarray(weights, dtype=np.float64)
    ratio = fn / np.where(fe > 0, fe, 1.0)
    starts = [np.array(start, dtype=np.float64) for start in DEFAULT_STARTS]
    for quantile in (0.9, 0.99):
        high = float(np.clip(_weighted_quantile(ratio, w, quantile), 2.0, 1e3))
        for background in (1.0, 5.0):
            for p in (0.05, 0.2):
                starts.append(np.array([1.0, 1.0 / high, background, background, p]))
    unit = stats.qmc.LatinHypercube(d=5, seed=0).random(HYPERCUBE_STARTS)
    log_alpha = np.log(0.05) + unit[:, :2] * np.log(50 / 0.05)
    log_mean = np.log(0.05) + unit[:, 2:4] * np.log(200 / 0.05)
    p = special.expit(-5 + 10 * unit[:, 4])
    for (la1, la2), (lm1, lm2), pk in zip(log_alpha, log_mean, p, strict=True):
        starts.append(
            np.array([np.exp(la1), np.exp(la1 - lm1), np.exp(la2), np.exp(la2 - lm2), pk])
        )
    return starts


def _natural(x: FloatArray) -> FloatArray:
    """Free-scale optimum to (alpha1, beta1, alpha2, beta2, P), component 1 the larger mean."""
    a1, b1, a2, b2 = np.exp(x[:4])
    p = float(special.expit(x[4]))
    if a2 / b2 > a1 / b1:
        return np.array([a2, b2, a1, b1, 1.0 - p])
    return np.array([a1, b1, a2, b2, p])


def optima_agree(first: ArrayLike, second: ArrayLike, rtol: float = AGREE_RTOL) -> bool:
    """Whether two fitted (alpha1, beta1, alpha2, beta2, P), components ordered, are the same
    point: each hyperparameter within ``rtol`` relative, not merely an equal likelihood."""
    x, y = np.asarray(first, dtype=np.float64), np.asarray(second, dtype=np.float64)
    return bool(np.all(np.abs(x - y) <= rtol * np.maximum(np.abs(x), np.abs(y))))


def convergence(
    best: ArrayLike, success: bool, others: Sequence[ArrayLike]
) -> tuple[bool, int, str]:
    """The convergence rule of ``fit_prior``: (converged, starts agreeing, why not or '').

    Converged when the optimiser succeeded, no hyperparameter is on a bound, P is more than
    P_EDGE from 0 and 1, and at least two optima (``best`` among ``others``, all ordered as
    ``_natural`` gives them) agree on every parameter (``optima_agree``)."""
    theta = np.asarray(best, dtype=np.float64)
    agree = sum(1 for other in others if optima_agree(theta, other))
    lo, hi = PARAM_BOUNDS
    reasons = []
    if not success:
        reasons.append("the optimiser did not converge")
    if np.any(theta[:4] <= lo * (1 + BOUND_RTOL)) or np.any(theta[:4] >= hi / (1 + BOUND_RTOL)):
        reasons.append("a hyperparameter is on a bound")
    if not P_EDGE < theta[4] < 1 - P_EDGE:
        reasons.append(f"P = {theta[4]:.6g} is within {P_EDGE:g} of 0 or 1 (one gamma)")
    if agree < 2:
        reasons.append("no two starts agree on the hyperparameters")
    return not reasons, agree, "; ".join(reasons)


def fit_prior(
    n: ArrayLike,
    e: ArrayLike,
    *,
    squash: bool = True,
    starts: Sequence[Sequence[float]] | None = None,
    min_count: int = 1,
) -> Prior:
    """Maximum-likelihood fit of DuMouchel's two-gamma mixture prior over drug-term pairs.

    ``n`` are observed counts and ``e`` expected counts of every drug-term pair of the database.
    Zero counts: only pairs with n >= min_count (default 1) enter, with the likelihood truncated
    accordingly (see ``prior_neg_loglik``; the choice of openEBGM ``autoHyper(zeroes = FALSE,
    N_star = 1)``); pairs below it are dropped, so passing the zero pairs or not gives the same
    prior. L-BFGS-B with an analytic gradient, on the log/logit scale with bounds, runs
    SCREEN_ITERATIONS iterations from every start (``prior_starts`` unless given) on the coarse
    points (``coarse_pairs``); the POLISHED_STARTS best run to convergence there; the best
    optimum, and another start that reached it, are polished on the fitted points (squashed, or
    every pair with ``squash=False``) and the better kept. ``converged`` follows
    ``convergence``. ``loglik_full`` is the log-likelihood of every pair at the optimum (summed
    over the distinct (n, E) pairs, each weighted by its number: the same sum, fewer terms).
    """
    if min_count < 1:
        raise ValueError("min_count must be at least 1: zero counts are not modelled")
    fn, fe = (x.ravel() for x in _pairs(n, e))
    keep = fn >= min_count
    if not np.all(keep):
        fn, fe = fn[keep], fe[keep]
    del keep
    n_pairs = int(fn.size)
    if n_pairs < 5:
        raise ValueError("need at least 5 pairs with n >= min_count to fit five hyperparameters")
    if squash:
        # Every pair, with identical (n, E) merged: the same likelihood, fewer points.
        merged = _fit_points(*_merged_pairs(fn, fe))
        del fn, fe
        pn, pe, pw = _squash_merged(merged.n, merged.e, merged.w)
    else:
        pn, pe, pw = fn, fe, np.ones_like(fn)
    log_lo, log_hi = np.log(PARAM_BOUNDS)
    logit_lo, logit_hi = special.logit(P_BOUNDS)
    bounds = [(log_lo, log_hi)] * 4 + [(logit_lo, logit_hi)]
    lower, upper = [b[0] for b in bounds], [b[1] for b in bounds]

    def run(points: _Points, x0: FloatArray, maxiter: int) -> optimize.OptimizeResult:
        total = float(points.w.sum())

        def scaled(x: FloatArray) -> tuple[float, FloatArray]:
            value, grad = _likelihood(x, points, min_count, True, pool.map)
            assert grad is not None
            return value / total, grad / total

        result = optimize.minimize(
            scaled,
            np.clip(x0, lower, upper),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8},
        )
        result.fun = result.fun * total
        return result

    given = [np.asarray(s, dtype=np.float64) for s in starts] if starts is not None else None
    candidates = [_to_free(s) for s in (given or prior_starts(pn, pe, pw))]
    n_starts = len(candidates)
    coarse = _fit_points(*coarse_pairs(pn, pe, pw))
    fitted = _fit_points(pn, pe, pw)
    # scipy >= 1.15's L-BFGS-B calls BLAS on 5-vectors; OpenBLAS threads only slow that down.
    # The likelihood's blocks run on FIT_THREADS threads instead (numpy releases the GIL).
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(FIT_THREADS) as pool:
        if n_starts > POLISHED_STARTS:
            screened = [run(coarse, x0, SCREEN_ITERATIONS) for x0 in candidates]
            screened = sorted((r for r in screened if np.isfinite(r.fun)), key=lambda r: r.fun)
            candidates = [r.x for r in screened[:POLISHED_STARTS]]
        runs = sorted(
            (r for r in (run(coarse, x0, 1000) for x0 in candidates) if np.isfinite(r.fun)),
            key=lambda r: r.fun,
        )
        if not runs:
            raise RuntimeError("the prior likelihood was not finite from any start")
        lead = runs[0]
        # Polish the best optimum and one other start that reached the same point, if any.
        twins = [r for r in runs[1:] if r.success and optima_agree(_natural(r.x), _natural(lead.x))]
        polished = [run(fitted, r.x, 1000) for r in [lead, *twins[:1]]]
    best = min(polished, key=lambda r: r.fun)
    theta = _natural(best.x)
    converged, agree, why = convergence(
        theta, bool(best.success), [_natural(r.x) for r in polished if r.success]
    )
    a1, b1, a2, b2, p = (float(v) for v in theta)
    loglik = -float(best.fun)
    if squash:
        full = -_likelihood(_to_free(theta), merged, min_count, gradient=False)[0]
    else:
        full = loglik
    method = (
        f"L-BFGS-B from {n_starts} starts, the best {len(runs)} run to convergence on "
        f"{coarse.n.size:,} coarse points ({1 + len(twins)} reaching the best optimum), then "
        f"{len(polished)} polished ({agree} agreeing on parameters), "
        f"{'squashed' if squash else 'unsquashed'}, n >= {min_count} zero-truncated"
        f"{'; not converged: ' + why if why else ''}"
    )
    return Prior(
        alpha1=a1,
        beta1=b1,
        alpha2=a2,
        beta2=b2,
        p=p,
        loglik=loglik,
        converged=converged,
        n_pairs=n_pairs,
        n_points=int(pn.size),
        method=method,
        loglik_full=full,
    )


def _mixture_cdf_and_pdf(
    t: FloatArray,
    q: FloatArray,
    s1: FloatArray,
    r1: FloatArray,
    s2: FloatArray,
    r2: FloatArray,
) -> tuple[FloatArray, FloatArray]:
    """CDF of the posterior gamma mixture at x = exp(t) and its derivative in t."""
    x = np.exp(t)
    cdf = q * special.gammainc(s1, r1 * x) + (1 - q) * special.gammainc(s2, r2 * x)
    # x * pdf(x) = sum_j w_j * exp(s_j log(r_j x) - r_j x - lgamma(s_j))
    lp1 = s1 * np.log(r1 * x) - r1 * x - special.gammaln(s1)
    lp2 = s2 * np.log(r2 * x) - r2 * x - special.gammaln(s2)
    return cdf, q * np.exp(lp1) + (1 - q) * np.exp(lp2)


def _mixture_quantile(
    prob: float,
    q: FloatArray,
    s1: FloatArray,
    r1: FloatArray,
    s2: FloatArray,
    r2: FloatArray,
    rtol: float = 1e-10,
) -> FloatArray:
    """Exact quantile of q*Gamma(s1, r1) + (1-q)*Gamma(s2, r2), vectorised.

    The mixture quantile lies between the two component quantiles, which bracket the root;
    safeguarded Newton on log x (bisection whenever Newton leaves the bracket) then closes it
    to ``rtol`` relative in x.
    """
    x1 = special.gammaincinv(s1, prob) / r1
    x2 = special.gammaincinv(s2, prob) / r2
    lo, hi = np.log(np.minimum(x1, x2)), np.log(np.maximum(x1, x2))
    t = (lo + hi) / 2
    active = np.flatnonzero(hi - lo > rtol)
    t[hi - lo <= rtol] = lo[hi - lo <= rtol]
    for _ in range(200):
        if active.size == 0:
            break
        ta = t[active]
        cdf, dens = _mixture_cdf_and_pdf(
            ta, q[active], s1[active], r1[active], s2[active], r2[active]
        )
        f = cdf - prob
        lo_a = np.where(f < 0, ta, lo[active])
        hi_a = np.where(f < 0, hi[active], ta)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            newton = ta - f / dens
        inside = np.isfinite(newton) & (newton > lo_a) & (newton < hi_a)
        step = np.where(inside, newton, (lo_a + hi_a) / 2)
        done = (np.abs(step - ta) <= rtol) | (hi_a - lo_a <= rtol) | (f == 0)
        t[active] = np.where(f == 0, ta, step)
        lo[active], hi[active] = lo_a, hi_a
        active = active[~done]
    if active.size:
        raise RuntimeError("posterior quantile did not converge")
    return np.exp(t)


def ebgm(n: ArrayLike, e: ArrayLike, prior: Prior) -> EBGMResult:
    """EBGM, EB05 and EB95 of each pair under the fitted prior (DuMouchel 1999).

    The posterior of lambda given N = n is Q_n*Gamma(alpha1 + n, beta1 + E) +
    (1 - Q_n)*Gamma(alpha2 + n, beta2 + E), Q_n the posterior weight of component 1 (eq. 6);
    EBGM = exp(E[log lambda]) (eqs. 9-11); EB05/EB95 are its exact 5% and 95% quantiles.
    """
    fn, fe = _pairs(n, e)
    log_f1 = _nb_logpmf(fn, fe, prior.alpha1, prior.beta1)
    log_f2 = _nb_logpmf(fn, fe, prior.alpha2, prior.beta2)
    qn = special.expit(np.log(prior.p) + log_f1 - np.log1p(-prior.p) - log_f2)
    s1, r1 = prior.alpha1 + fn, prior.beta1 + fe
    s2, r2 = prior.alpha2 + fn, prior.beta2 + fe
    mean_log = qn * (special.digamma(s1) - np.log(r1)) + (1 - qn) * (
        special.digamma(s2) - np.log(r2)
    )
    eb05 = _mixture_quantile(0.05, qn, s1, r1, s2, r2)
    return EBGMResult(
        ebgm=np.exp(mean_log),
        eb05=eb05,
        eb95=_mixture_quantile(0.95, qn, s1, r1, s2, r2),
        qn=qn,
        signal=eb05 >= EB05_THRESHOLD,
    )


SignalColumns = dict[str, NDArray[np.float64] | NDArray[np.bool_]]


def _signal_columns(
    a: FloatArray,
    b: FloatArray,
    c: FloatArray,
    d: FloatArray,
    ror_r: RORResult,
    expected: FloatArray,
    prior: Prior | None,
) -> SignalColumns:
    """The columns of ``signal_table`` from 1-D cells, an ROR and an expected count."""
    prr_r = prr(a=a, b=b, c=c, d=d)
    ic_r = ic_given_expected(a=a, expected=expected)
    if prior is None:
        prior = fit_prior(a, expected)
    eb_r = ebgm(a, expected, prior)
    below = eb_r.ebgm < eb_r.eb05
    if not prior.converged:
        # A prior that did not converge never drives a result: no EBGM, no EBGM signal.
        missing = np.full_like(eb_r.ebgm, np.nan)
        eb_r = EBGMResult(missing, missing, missing, missing, np.zeros(a.shape, dtype=bool))
        below = np.zeros(a.shape, dtype=bool)
    p = p_values(a=a, b=b, c=c, d=d)
    return {
        "a": a,
        "b": b,
        "c": c,
        "d": d,
        "expected": ic_r.expected,
        "prr": prr_r.prr,
        "prr_lower": prr_r.lower,
        "prr_upper": prr_r.upper,
        "chi2": prr_r.chi2,
        "ror": ror_r.ror,
        "ror_lower": ror_r.lower,
        "ror_upper": ror_r.upper,
        "zero_corrected": prr_r.zero_corrected | ror_r.zero_corrected,
        "ic": ic_r.ic,
        "ic025": ic_r.ic025,
        "ic975": ic_r.ic975,
        "ebgm": eb_r.ebgm,
        "eb05": eb_r.eb05,
        "eb95": eb_r.eb95,
        "p_value": p,
        "p_adj": bh_adjust(p),
        "signal_prr": prr_r.signal,
        "signal_ror": ror_r.signal,
        "signal_ic": ic_r.signal,
        "signal_ebgm": eb_r.signal,
        "ebgm_below_eb05": below,
    }


def signal_table(
    *, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike, prior: Prior | None = None
) -> SignalColumns:
    """Every statistic of this module for each table, as named columns of equal length.

    ``prior`` should be fitted with ``fit_prior`` on all drug-term pairs of the database;
    without one it is fitted on the (a, E) of the tables given. Under a prior that did not
    converge, ebgm, eb05 and eb95 are NaN and signal_ebgm is false. ``ebgm_below_eb05`` flags
    the pairs whose EBGM lies below EB05: the posterior is a mixture of two well-separated
    gammas with a small weight (< 5%) on the lower one, whose log pulls the geometric mean
    below the 5% quantile; read EB05-EB95 there. p_adj is Benjamini-Hochberg over the tables
    given, from ``p_values``. ``zero_corrected`` flags tables whose PRR or ROR used the
    zero-cell rule.
    """
    fa, fb, fc, fd = (x.ravel() for x in _cells(a, b, c, d))
    ror_r = ror(a=fa, b=fb, c=fc, d=fd)
    return _signal_columns(fa, fb, fc, fd, ror_r, expected_count(a=fa, b=fb, c=fc, d=fd), prior)


def stratified_signal_table(
    *, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike, prior: Prior | None = None
) -> SignalColumns:
    """``signal_table`` for stratified tables: cells shaped (n_tables, n_strata).

    The columns are those of ``signal_table``. a, b, c, d are the crude counts (summed over
    strata), and the PRR, its CI, the chi-square and the p-values are crude: they are not
    stratified. The ROR columns are the Mantel-Haenszel ROR (``ror_mh``); ``expected`` is the
    stratified E (``stratified_expected``), and the IC and EBGM use it with the crude a.
    ``prior``: as for ``signal_table``, fitted on (a, stratified E) when not given.
    """
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    ror_r = ror_mh(a=fa, b=fb, c=fc, d=fd)
    expected = stratified_expected(a=fa, b=fb, c=fc, d=fd)
    ca, cb, cc, cd = (np.sum(x, axis=1) for x in (fa, fb, fc, fd))
    return _signal_columns(ca, cb, cc, cd, ror_r, expected, prior)


MH_CONFOUNDING_CHANGE = 0.10
"""Confounding flag: the Mantel-Haenszel ROR differs from the crude ROR by more than this
fraction of the crude (the usual 10% change-in-estimate rule, Greenland 1989, Am J Public
Health 79:340)."""
EFFECT_MODIFICATION_P = 0.05
"""Effect-modification flag: the Breslow-Day test (Tarone's statistic) rejects equal odds
ratios across strata at this level."""


@dataclass(frozen=True)
class MantelHaenszelResult:
    """Crude and Mantel-Haenszel ROR of stratified tables, Breslow-Day and MH tests, flags.

    One value per table. Missing values are NaN: the MH ROR and its test with no informative
    stratum, the Breslow-Day test with fewer than two or when the pooled ROR needed the
    zero-cell correction (see ``mantel_haenszel``)."""

    n_strata: NDArray[np.int64]
    n_informative: NDArray[np.int64]
    crude: RORResult
    mh: RORResult
    change: FloatArray
    bd_chi2: FloatArray
    bd_df: NDArray[np.int64]
    bd_p: FloatArray
    mh_chi2: FloatArray
    mh_p: FloatArray
    confounding: BoolArray
    effect_modification: BoolArray


def informative_strata(*, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike) -> BoolArray:
    """Strata whose 2x2 table bears on an odds ratio: exposed and unexposed cases, and cases
    with and without the term (all four margins > 0). Any other stratum has a_k d_k = b_k c_k = 0
    and no variance: it adds nothing to the MH estimate, its variance or either test."""
    fa, fb, fc, fd = _whole_cells(a, b, c, d)
    return (fa + fb > 0) & (fc + fd > 0) & (fa + fc > 0) & (fb + fd > 0)


def _null_expected(
    a: FloatArray, b: FloatArray, c: FloatArray, d: FloatArray, odds_ratio: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Expected a_k and its variance in each stratum under a common odds ratio (one per table).

    The expected a_k is the root inside (max(0, m1 - n0), min(n1, m1)) of
    (1 - OR) e^2 + (n0 - m1 + OR (n1 + m1)) e - OR n1 m1 = 0 (n1 = a + b exposed, n0 = c + d,
    m1 = a + c with the term), taken in a numerically stable form; the variance is
    1 / (1/e + 1/(n1 - e) + 1/(m1 - e) + 1/(n0 - m1 + e)) (Breslow & Day 1980, IARC Sci Publ
    32, eq. 4.30-4.31). Only meaningful in informative strata with 0 < OR < infinity."""
    n1, n0, m1 = a + b, c + d, a + c
    r = np.broadcast_to(odds_ratio[:, np.newaxis], a.shape)
    quad = 1 - r
    lin = n0 - m1 + r * (n1 + m1)
    const = -r * n1 * m1
    with np.errstate(divide="ignore", invalid="ignore"):
        q = -0.5 * (lin + np.where(lin >= 0, 1.0, -1.0) * np.sqrt(lin**2 - 4 * quad * const))
        first = q / quad
        second = const / q
        low, high = np.maximum(0.0, m1 - n0), np.minimum(n1, m1)
        inside = (first > low) & (first < high)
        e = np.where(quad == 0, -const / lin, np.where(inside, first, second))
        v = 1 / (1 / e + 1 / (n1 - e) + 1 / (m1 - e) + 1 / (n0 - m1 + e))
    return e, v


def breslow_day(
    *, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> tuple[FloatArray, NDArray[np.int64], FloatArray]:
    """Breslow-Day test of equal odds ratios across strata, with Tarone's correction.

    Cells shaped (n_tables, n_strata). Over the informative strata (``informative_strata``;
    the others are left out), chi2 = sum_k (a_k - e_k)^2 / v_k - (sum_k a_k - sum_k e_k)^2 /
    sum_k v_k, e_k and v_k under the Mantel-Haenszel ROR (``_null_expected``; Breslow & Day
    1980; Tarone 1985, Biometrika 72:91), on K - 1 degrees of freedom for K informative strata;
    the same statistic as statsmodels' ``StratifiedTable.test_equal_odds(adjust=True)``. NaN
    (df still K - 1, or 0) when K < 2 or the raw MH ROR is 0 or infinite (no zero-cell
    correction here: a common OR of 0 or infinity leaves nothing to test).
    Returns (chi2, df, p)."""
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    keep = informative_strata(a=fa, b=fb, c=fc, d=fd)
    fa, fb, fc, fd = (np.where(keep, x, 0.0) for x in (fa, fb, fc, fd))
    n = fa + fb + fc + fd
    sum_r = np.sum(_per_stratum(fa * fd, n), axis=1)
    sum_s = np.sum(_per_stratum(fb * fc, n), axis=1)
    k = np.sum(keep, axis=1)
    testable = (k >= 2) & (sum_r > 0) & (sum_s > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        odds_ratio = np.where(testable, sum_r / np.where(sum_s > 0, sum_s, 1.0), 1.0)
        e, v = _null_expected(fa, fb, fc, fd, odds_ratio)
        e, v = np.where(keep, e, 0.0), np.where(keep, v, 0.0)
        terms = np.where(keep, (fa - e) ** 2 / np.where(keep, v, 1.0), 0.0)
        sum_v = np.sum(v, axis=1)
        tarone = (np.sum(fa, axis=1) - np.sum(e, axis=1)) ** 2 / np.where(sum_v > 0, sum_v, 1.0)
    chi2 = np.where(testable, np.maximum(np.sum(terms, axis=1) - tarone, 0.0), np.nan)
    df = np.maximum(k - 1, 0).astype(np.int64)
    p = np.where(testable, stats.chi2.sf(np.nan_to_num(chi2), np.maximum(df, 1)), np.nan)
    return chi2, df, p


def mh_test(
    *, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Mantel-Haenszel test of a common odds ratio of 1, without continuity correction.

    chi2 = (sum_k a_k - sum_k n1_k m1_k / n_k)^2 / sum_k n1_k n0_k m1_k m0_k / (n_k^2 (n_k - 1))
    over the informative strata, 1 degree of freedom (Mantel & Haenszel 1959); statsmodels'
    ``StratifiedTable.test_null_odds()``. NaN with no informative stratum. Returns (chi2, p)."""
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    keep = informative_strata(a=fa, b=fb, c=fc, d=fd)
    n1, n0, m1, m0 = fa + fb, fc + fd, fa + fc, fb + fd
    n = n1 + n0
    safe = np.where(keep, n, 2.0)
    expected = np.where(keep, n1 * m1 / safe, 0.0)
    variance = np.where(keep, n1 * n0 * m1 * m0 / (safe**2 * (safe - 1)), 0.0)
    total_v = np.sum(variance, axis=1)
    has = total_v > 0
    observed = np.sum(np.where(keep, fa, 0.0), axis=1)
    chi2 = np.where(
        has, (observed - np.sum(expected, axis=1)) ** 2 / np.where(has, total_v, 1.0), np.nan
    )
    return chi2, np.where(has, stats.chi2.sf(np.nan_to_num(chi2), 1), np.nan)


def mantel_haenszel(
    *, a: ArrayLike, b: ArrayLike, c: ArrayLike, d: ArrayLike
) -> MantelHaenszelResult:
    """Crude ROR beside the Mantel-Haenszel ROR of stratified tables, with both tests and flags.

    Cells shaped (n_tables, n_strata). The crude ROR is ``ror`` of the cells summed over strata
    (the signals table's ROR). The MH ROR is ``ror_mh`` over the informative strata only
    (``informative_strata``): the others carry no information and are set aside before the
    zero-cell rule, so that it never shifts a stratum that says nothing into one that seems to.
    With no informative stratum the MH ROR, its CI and the MH test are NaN; with one, the MH
    ROR is that stratum's ROR. ``change`` = MH ROR / crude ROR - 1; ``confounding`` when
    |change| > MH_CONFOUNDING_CHANGE and neither ROR used the zero-cell correction (a corrected
    estimate moves with the 0.5 added, not with the strata), ``effect_modification`` when the
    Breslow-Day p < EFFECT_MODIFICATION_P (both false where their value is missing)."""
    fa, fb, fc, fd = _strata_cells(a, b, c, d)
    keep = informative_strata(a=fa, b=fb, c=fc, d=fd)
    k = np.sum(keep, axis=1).astype(np.int64)
    crude = ror(a=fa.sum(axis=1), b=fb.sum(axis=1), c=fc.sum(axis=1), d=fd.sum(axis=1))
    nan = np.full(fa.shape[0], np.nan)
    mh = RORResult(nan.copy(), nan.copy(), nan.copy(), np.zeros(k.shape, bool), k < 0)
    some = k > 0
    if np.any(some):
        ia, ib, ic_, id_ = (np.where(keep, x, 0.0)[some] for x in (fa, fb, fc, fd))
        pooled = ror_mh(a=ia, b=ib, c=ic_, d=id_)
        for name in ("ror", "lower", "upper", "signal", "zero_corrected"):
            getattr(mh, name)[some] = getattr(pooled, name)
    bd_chi2, bd_df, bd_p = breslow_day(a=fa, b=fb, c=fc, d=fd)
    mh_chi2, mh_p = mh_test(a=fa, b=fb, c=fc, d=fd)
    change = mh.ror / crude.ror - 1
    return MantelHaenszelResult(
        n_strata=np.sum(fa + fb + fc + fd > 0, axis=1).astype(np.int64),
        n_informative=k,
        crude=crude,
        mh=mh,
        change=change,
        bd_chi2=bd_chi2,
        bd_df=bd_df,
        bd_p=bd_p,
        mh_chi2=mh_chi2,
        mh_p=mh_p,
        confounding=(np.nan_to_num(np.abs(change), nan=0.0) > MH_CONFOUNDING_CHANGE)
        & ~crude.zero_corrected
        & ~mh.zero_corrected,
        effect_modification=np.nan_to_num(bd_p, nan=1.0) < EFFECT_MODIFICATION_P,
    )

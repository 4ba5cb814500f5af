"""Tests of surveillance.stats against independent numbers.

Sources of expected values: hand-worked tables (arithmetic written beside them), scipy.stats and
statsmodels where they compute the same quantity, the openEBGM vignette's published CAERS scores
(tests/data/stats_openebgm_caers.csv, source in its header), numerical integration of the
posterior, and data simulated from a known prior. Invariants are property tests (hypothesis).
"""

from __future__ import annotations

import csv
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats
from statsmodels.stats.contingency_tables import StratifiedTable, Table2x2
from statsmodels.stats.multitest import multipletests

from surveillance import stats as S

DATA = Path(__file__).parent / "data"

# A realistic prior: the openEBGM vignette's CAERS estimate (see the CSV header).
CAERS_PRIOR = S.Prior(
    alpha1=3.25379064,
    beta1=0.39988801,
    alpha2=2.02613219,
    beta2=1.90808279,
    p=0.06534557,
    loglik=float("nan"),
    converged=True,
    n_pairs=0,
    n_points=0,
    method="published",
)

counts = st.integers(min_value=0, max_value=5_000)
tables = st.tuples(counts, counts, counts, counts).filter(lambda t: sum(t) > 0)


def simulate_pairs(
    m: int, theta: tuple[float, float, float, float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(n, E) of m pairs: lambda from the two-gamma mixture, n ~ Poisson(lambda * E)."""
    a1, b1, a2, b2, p = theta
    rng = np.random.default_rng(seed)
    e = np.exp(rng.normal(-2.0, 1.8, m))
    first = rng.random(m) < p
    lam = np.where(first, rng.gamma(a1, 1 / b1, m), rng.gamma(a2, 1 / b2, m))
    return rng.poisson(lam * e).astype(float), e


# --- hand-worked tables -------------------------------------------------------------------


def test_prr_ror_ic_hand_worked() -> None:
    # a=20, b=80, c=100, d=1800, N=2000.
    # PRR = (20/100)/(100/1900) = 3.8; SE = sqrt(1/20 - 1/100 + 1/100 - 1/1900) = 0.2224272
    # CI = 3.8 * exp(-/+ 1.959964 * 0.2224272) = (2.457274, 5.876431)
    # ROR = 20*1800/(80*100) = 4.5; SE = sqrt(1/20 + 1/80 + 1/100 + 1/1800) = 0.2702879
    # CI = 4.5 * exp(-/+ 1.959964 * 0.2702879) = (2.649373, 7.643319)
    # chi2 = 2000 * (|36000 - 8000| - 1000)^2 / (100 * 1900 * 120 * 1880) = 34.01456
    # E = 100 * 120 / 2000 = 6; IC = log2(20.5 / 6.5) = 1.657112
    cells = {"a": 20, "b": 80, "c": 100, "d": 1800}
    p = S.prr(**cells)
    r = S.ror(**cells)
    i = S.ic(**cells)
    np.testing.assert_allclose([p.prr, p.lower, p.upper], [3.8, 2.457274, 5.876431], rtol=1e-6)
    np.testing.assert_allclose([r.ror, r.lower, r.upper], [4.5, 2.649373, 7.643319], rtol=1e-6)
    np.testing.assert_allclose(p.chi2, 34.01456, rtol=1e-6)
    np.testing.assert_allclose([i.expected, i.ic], [6.0, 1.657112], rtol=1e-6)
    assert p.signal and r.signal and i.signal
    assert not p.zero_corrected and not r.zero_corrected


def test_zero_cell_rule_hand_worked() -> None:
    # a=0 -> all cells +0.5: (0.5, 10.5, 5.5, 100.5)
    # PRR = (0.5/11)/(5.5/106) = 0.8760331; ROR = 0.5*100.5/(10.5*5.5) = 0.8701299
    p = S.prr(a=0, b=10, c=5, d=100)
    r = S.ror(a=0, b=10, c=5, d=100)
    np.testing.assert_allclose(p.prr, 0.8760331, rtol=1e-6)
    np.testing.assert_allclose(r.ror, 0.8701299, rtol=1e-6)
    assert p.zero_corrected and r.zero_corrected
    assert not p.signal and not r.signal


@pytest.mark.parametrize(
    "cells",
    [(0, 0, 5, 100), (5, 0, 0, 100), (5, 10, 0, 0), (0, 0, 0, 7), (3, 0, 0, 0), (0, 4, 0, 0)],
)
def test_zero_cells_never_give_inf_or_nan(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    table = S.signal_table(a=[a, 20], b=[b, 80], c=[c, 100], d=[d, 1800], prior=CAERS_PRIOR)
    for name, column in table.items():
        assert np.all(np.isfinite(column.astype(float))), name
    assert table["zero_corrected"][0] and not table["zero_corrected"][1]


def test_chi2_is_zero_for_an_empty_margin() -> None:
    assert S.chi2_yates(a=0, b=0, c=5, d=100) == 0.0


@pytest.mark.parametrize(
    "cells",
    [(-1, 1, 1, 1), (0.5, 1, 1, 1), (np.nan, 1, 1, 1), (np.inf, 1, 1, 1), (0, 0, 0, 0)],
)
def test_invalid_counts_raise(cells: tuple[float, float, float, float]) -> None:
    a, b, c, d = cells
    with pytest.raises(ValueError):
        S.prr(a=a, b=b, c=c, d=d)


def test_cells_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        S.prr(1, 2, 3, 4)  # type: ignore[misc]


def test_evans_criteria_thresholds() -> None:
    # a=3, b=0... use b=7, c=10, d=10000: PRR = 0.3/(10/10010) = 300.3, chi2 large.
    assert S.prr(a=3, b=7, c=10, d=10_000).signal
    assert not S.prr(a=2, b=8, c=10, d=10_000).signal  # a < 3
    assert not S.prr(a=30, b=70, c=200, d=1_000).signal  # PRR = 0.3/(200/1200) = 1.8 < 2


def test_broadcasting() -> None:
    result = S.prr(a=np.array([[1], [5]]), b=10, c=np.array([3, 4, 5]), d=1000)
    assert result.prr.shape == (2, 3)


# --- scipy and statsmodels ----------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(tables)
def test_prr_ror_match_statsmodels(cells: tuple[int, int, int, int]) -> None:
    # statsmodels' shift_zeros=True replaces only the zero cells by 0.5 (its docstring says it
    # adds 0.5 to all four), so the +0.5-on-all-cells rule is applied here and shifting is off.
    a, b, c, d = cells
    shift = 0.5 if 0 in cells else 0.0
    table = Table2x2(np.array([[a, b], [c, d]], dtype=float) + shift, shift_zeros=False)
    p = S.prr(a=a, b=b, c=c, d=d)
    r = S.ror(a=a, b=b, c=c, d=d)
    np.testing.assert_allclose(p.prr, table.riskratio, rtol=1e-10)
    np.testing.assert_allclose([p.lower, p.upper], table.riskratio_confint(method="normal"))
    np.testing.assert_allclose(r.ror, table.oddsratio, rtol=1e-10)
    np.testing.assert_allclose([r.lower, r.upper], table.oddsratio_confint(method="normal"))


@settings(max_examples=200, deadline=None)
@given(tables)
def test_chi2_matches_scipy_chi2_contingency(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    if 0 in (a + b, c + d, a + c, b + d):
        return  # scipy refuses a table with an empty margin; ours is 0, tested above
    expected = stats.chi2_contingency([[a, b], [c, d]], correction=True).statistic
    np.testing.assert_allclose(S.chi2_yates(a=a, b=b, c=c, d=d), expected, rtol=1e-9, atol=1e-12)


def test_p_values_fisher_and_chi2_branches() -> None:
    small = [(3, 5, 40, 900), (0, 2, 1, 50), (7, 0, 0, 3), (1, 1, 1, 1), (2, 100, 30, 1_000)]
    large = [(50, 150, 200, 5_000), (100, 400, 300, 2_000)]
    a, b, c, d = (np.array(x, dtype=float) for x in zip(*(small + large), strict=True))
    p = S.p_values(a=a, b=b, c=c, d=d)
    for i, (ai, bi, ci, di) in enumerate(small):
        np.testing.assert_allclose(p[i], stats.fisher_exact([[ai, bi], [ci, di]]).pvalue)
    for i, (ai, bi, ci, di) in enumerate(large, start=len(small)):
        reference = stats.chi2_contingency([[ai, bi], [ci, di]], correction=True).pvalue
        np.testing.assert_allclose(p[i], reference, rtol=1e-10)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(st.tuples(*(st.integers(0, 60),) * 4).filter(lambda t: sum(t) > 0))
def test_fisher_matches_scipy(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    mine = S._fisher_two_sided(*(np.array([x], dtype=float) for x in cells))[0]
    np.testing.assert_allclose(mine, stats.fisher_exact([[a, b], [c, d]]).pvalue, rtol=1e-9)


def test_bh_matches_statsmodels() -> None:
    p = np.random.default_rng(3).uniform(0, 0.2, 500) ** 2
    p[:5] = [0.0, 1.0, 0.01, 0.01, 0.04]
    np.testing.assert_allclose(S.bh_adjust(p), multipletests(p, method="fdr_bh")[1])
    assert S.bh_adjust(p.reshape(20, 25)).shape == (20, 25)
    with pytest.raises(ValueError):
        S.bh_adjust([0.1, 1.2])


@settings(max_examples=200, deadline=None)
@given(tables)
def test_ic_matches_gamma_ppf(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    e = (a + b) * (a + c) / (a + b + c + d)
    result = S.ic(a=a, b=b, c=c, d=d)
    gamma = stats.gamma(a + 0.5, scale=1 / (e + 0.5))
    np.testing.assert_allclose(result.ic, np.log2((a + 0.5) / (e + 0.5)), atol=1e-12)
    np.testing.assert_allclose(result.ic025, np.log2(gamma.ppf(0.025)), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(result.ic975, np.log2(gamma.ppf(0.975)), rtol=1e-9, atol=1e-12)


def test_ic_published_properties() -> None:
    # O = E = 1 gives IC = 0 (Norén et al. 2006: log2((O + 0.5)/(E + 0.5))).
    assert S.ic(a=1, b=1, c=1, d=1).ic == 0.0
    # With +0.5 shrinkage and the gamma interval, IC025 > 0 needs at least 3 reports
    # (Norén et al. 2013): true even as E -> 0.
    assert not S.ic(a=2, b=0, c=0, d=10**9).signal
    assert S.ic(a=3, b=0, c=0, d=10**9).signal


# --- EBGM -----------------------------------------------------------------------------------


def read_caers_rows() -> list[dict[str, str]]:
    with open(DATA / "stats_openebgm_caers.csv", newline="") as handle:
        lines = [line for line in handle if not line.startswith("#")]
    return list(csv.DictReader(lines))


def test_ebgm_matches_openebgm_vignette() -> None:
    rows = read_caers_rows()
    n = np.array([float(r["N"]) for r in rows])
    e = np.array([float(r["E"]) for r in rows])
    result = S.ebgm(n, e, CAERS_PRIOR)
    for i, row in enumerate(rows):
        if row["qn"]:
            np.testing.assert_allclose(result.qn[i], float(row["qn"]), atol=5e-8)
        np.testing.assert_allclose(result.ebgm[i], float(row["ebgm"]), atol=0.005 + 1e-9)
        # openEBGM stops bisecting at half-width 0.005, then rounds: within 0.01.
        np.testing.assert_allclose(result.eb05[i], float(row["quant_05"]), atol=0.0101)
        np.testing.assert_allclose(result.eb95[i], float(row["quant_95"]), atol=0.0101)


def mixture_pdf(x: float, q: float, s1: float, r1: float, s2: float, r2: float) -> float:
    return float(
        q * stats.gamma.pdf(x, s1, scale=1 / r1) + (1 - q) * stats.gamma.pdf(x, s2, scale=1 / r2)
    )


@pytest.mark.parametrize(
    ("n", "e"), [(0, 0.5), (1, 0.001), (1, 0.2), (3, 0.05), (16, 0.4), (40, 30.0), (2, 5.0)]
)
def test_ebgm_and_quantiles_match_numerical_integration(n: int, e: float) -> None:
    pr = CAERS_PRIOR
    result = S.ebgm(np.array([n], float), np.array([e]), pr)
    q = float(result.qn[0])
    args = (q, pr.alpha1 + n, pr.beta1 + e, pr.alpha2 + n, pr.beta2 + e)
    mean_log, _ = integrate.quad(
        lambda x: np.log(x) * mixture_pdf(x, *args), 0, np.inf, epsabs=1e-12, limit=500
    )
    np.testing.assert_allclose(result.ebgm[0], np.exp(mean_log), rtol=1e-7)
    for prob, quantile in ((0.05, result.eb05[0]), (0.95, result.eb95[0])):
        mass, _ = integrate.quad(lambda x: mixture_pdf(x, *args), 0, quantile, epsabs=1e-13)
        np.testing.assert_allclose(mass, prob, rtol=1e-7)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(0, 500),
    st.floats(1e-4, 1e3),
    st.tuples(st.floats(0.05, 20), st.floats(0.05, 20), st.floats(0.05, 20), st.floats(0.05, 20)),
    st.floats(0.01, 0.99),
)
def test_ebgm_interval_contains_estimate_and_rises_with_n(
    n: int, e: float, params: tuple[float, float, float, float], p: float
) -> None:
    pr = S.Prior(*params, p=p, loglik=0.0, converged=True, n_pairs=0, n_points=0, method="")
    result = S.ebgm(np.array([n, n + 1], float), np.array([e, e]), pr)
    assert np.all(result.eb05 <= result.ebgm) and np.all(result.ebgm <= result.eb95)
    # The Poisson likelihood has a monotone likelihood ratio, so the posterior is
    # stochastically increasing in n whatever the prior.
    assert result.ebgm[1] >= result.ebgm[0] * (1 - 1e-12)
    assert result.eb05[1] >= result.eb05[0] * (1 - 1e-9)
    assert result.eb95[1] >= result.eb95[0] * (1 - 1e-9)


def test_ebgm_rejects_nonpositive_expected() -> None:
    with pytest.raises(ValueError):
        S.ebgm(np.array([1.0]), np.array([0.0]), CAERS_PRIOR)


# --- prior fit ------------------------------------------------------------------------------


def truncated_mixture_nll(theta: tuple[float, ...], n: np.ndarray, e: np.ndarray, m: int) -> float:
    """Hand computation with scipy.stats.nbinom: mixture pmf over mixture P(N >= m)."""
    a1, b1, a2, b2, p = theta
    f1, f2 = stats.nbinom(a1, b1 / (b1 + e)), stats.nbinom(a2, b2 / (b2 + e))
    numerator = p * f1.pmf(n) + (1 - p) * f2.pmf(n)
    denominator = p * f1.sf(m - 1) + (1 - p) * f2.sf(m - 1)
    return float(-np.sum(np.log(numerator / denominator)))


@pytest.mark.parametrize("min_count", [1, 2])
def test_likelihood_matches_scipy_nbinom(min_count: int) -> None:
    # openEBGM's likelihood-test data (tests/testthat/testC_Likelihoods.R): N, E = 1..17.
    n = np.array([0] * 5 + [1] * 4 + [2] * 6 + [3] * 2, dtype=float)
    e = np.arange(1, 18, dtype=float)
    theta = (0.125874, 0.13587, 1.24578, 3.01587, 0.05)
    keep = n >= min_count
    expected = truncated_mixture_nll(theta, n[keep], e[keep], min_count)
    actual = S.prior_neg_loglik(theta, n[keep], e[keep], min_count=min_count)
    np.testing.assert_allclose(actual, expected, rtol=1e-12)
    weights = np.linspace(0.5, 3, keep.sum())
    weighted = S.prior_neg_loglik(theta, n[keep], e[keep], weights=weights, min_count=min_count)
    per_pair = [
        truncated_mixture_nll(theta, n[keep][i : i + 1], e[keep][i : i + 1], min_count)
        for i in range(keep.sum())
    ]
    np.testing.assert_allclose(weighted, np.dot(weights, per_pair), rtol=1e-12)
    with pytest.raises(ValueError):
        S.prior_neg_loglik(theta, n, e, min_count=min_count)


def test_gradient_matches_finite_differences() -> None:
    n, e = simulate_pairs(5_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=5)
    keep = n >= 1
    x = S._to_free((0.5, 0.3, 2.5, 2.0, 0.2))
    w = np.ones(keep.sum())
    _, grad = S._objective(x, n[keep], e[keep], w, 1)
    step = 1e-6
    numeric = [
        (
            S._objective(x + h, n[keep], e[keep], w, 1)[0]
            - S._objective(x - h, n[keep], e[keep], w, 1)[0]
        )
        / (2 * step)
        for h in np.eye(5) * step
    ]
    np.testing.assert_allclose(grad, numeric, rtol=1e-5)


@pytest.mark.slow
def test_fit_prior_ignores_zero_count_pairs() -> None:
    n, e = simulate_pairs(60_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=11)
    keep = n >= 1
    with_zeros = S.fit_prior(n, e)
    without = S.fit_prior(n[keep], e[keep])
    assert with_zeros == without
    assert with_zeros.n_pairs == int(keep.sum())


def test_squash_preserves_pairs_and_expected_totals() -> None:
    n, e = simulate_pairs(200_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=2)
    n, e = n[n >= 1], e[n >= 1]
    sn, se, sw = S.squash_pairs(np.r_[n, n[:100]], np.r_[e, e[:100]])
    assert sn.size < n.size / 5
    assert sw.sum() == n.size + 100
    for count in np.unique(n)[:5]:
        mask = sn == count
        both = np.r_[n, n[:100]] == count
        assert sw[mask].sum() == both.sum()
        np.testing.assert_allclose(np.dot(sw[mask], se[mask]), np.r_[e, e[:100]][both].sum())


@pytest.mark.slow
def test_squashed_fit_is_close_to_unsquashed_fit() -> None:
    n, e = simulate_pairs(200_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=4)
    n, e = n[n >= 1], e[n >= 1]
    squashed = S.fit_prior(n, e, squash=True)
    plain = S.fit_prior(n, e, squash=False)
    assert squashed.converged and plain.converged
    assert plain.n_points == plain.n_pairs > squashed.n_points
    truth_like = S.prior_neg_loglik(
        (squashed.alpha1, squashed.beta1, squashed.alpha2, squashed.beta2, squashed.p), n, e
    )
    # Squashing costs little likelihood on the full data.
    assert truth_like - (-plain.loglik) < 1.0
    scores = S.ebgm(n, e, squashed).ebgm / S.ebgm(n, e, plain).ebgm
    assert np.max(np.abs(scores - 1)) < 0.02


@pytest.mark.slow
def test_fit_prior_recovers_simulated_prior() -> None:
    # Its time is measured by bench/bench.py (prior), not asserted here.
    truth = (3.25, 0.40, 2.0, 1.9, 0.065)
    n, e = simulate_pairs(800_000, truth, seed=7)
    n, e = n[n >= 1], e[n >= 1]
    assert n.size > 200_000
    prior = S.fit_prior(n, e)
    assert prior.converged
    estimate = (prior.alpha1, prior.beta1, prior.alpha2, prior.beta2, prior.p)
    np.testing.assert_allclose(estimate, truth, rtol=0.15)


@pytest.mark.slow
def test_ebgm_on_many_pairs_is_finite() -> None:
    # The time for a million pairs is measured by bench/bench.py (ebgm), not asserted here.
    n, e = simulate_pairs(200_000, (3.25, 0.40, 2.0, 1.9, 0.065), seed=8)
    result = S.ebgm(n, e, CAERS_PRIOR)
    assert np.all(np.isfinite(result.eb05)) and np.all(np.isfinite(result.eb95))
    assert np.all(result.eb05 <= result.eb95)


def test_fit_prior_input_checks() -> None:
    with pytest.raises(ValueError):
        S.fit_prior(np.array([1.0, 2.0]), np.array([0.1, 0.2]))
    with pytest.raises(ValueError):
        S.fit_prior(np.ones(10), np.ones(10), min_count=0)


# --- properties of the frequentist measures --------------------------------------------------


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(tables)
def test_intervals_contain_estimates(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    p, r, i = S.prr(a=a, b=b, c=c, d=d), S.ror(a=a, b=b, c=c, d=d), S.ic(a=a, b=b, c=c, d=d)
    assert p.lower <= p.prr <= p.upper
    assert r.lower <= r.ror <= r.upper
    assert i.ic025 <= i.ic <= i.ic975


@settings(max_examples=300, deadline=None)
@given(tables)
def test_ror_symmetry_when_rows_swap(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    r = S.ror(a=a, b=b, c=c, d=d)
    swapped = S.ror(a=c, b=d, c=a, d=b)
    np.testing.assert_allclose(r.ror, 1 / swapped.ror, rtol=1e-12)
    np.testing.assert_allclose([r.lower, r.upper], [1 / swapped.upper, 1 / swapped.lower])


@settings(max_examples=300, deadline=None)
@given(tables)
def test_prr_rises_with_a(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    assert S.prr(a=a + 1, b=b, c=c, d=d).prr >= S.prr(a=a, b=b, c=c, d=d).prr


@settings(max_examples=300, deadline=None)
@given(tables)
def test_ic_rises_when_a_report_moves_from_b_to_a(cells: tuple[int, int, int, int]) -> None:
    # With the substance's total a + b fixed, IC rises with a. With b, c, d fixed it need
    # not: see the next test.
    a, b, c, d = cells
    if b == 0:
        return
    assert S.ic(a=a + 1, b=b - 1, c=c, d=d).ic >= S.ic(a=a, b=b, c=c, d=d).ic


def test_ic_is_not_monotone_in_a_with_b_c_d_fixed() -> None:
    # b = 0: E = a(a + c)/N grows about as fast as a, so IC falls towards 0 as a grows.
    assert S.ic(a=50, b=0, c=1, d=1).ic < S.ic(a=5, b=0, c=1, d=1).ic


# --- the combined table and the import rule --------------------------------------------------


def test_signal_table_columns() -> None:
    a = np.array([20, 0, 3, 1, 50])
    b = np.array([80, 10, 7, 0, 950])
    c = np.array([100, 5, 10, 40, 400])
    d = np.array([1800, 100, 10_000, 5000, 20_000])
    table = S.signal_table(a=a, b=b, c=c, d=d, prior=CAERS_PRIOR)
    names = (
        "a,b,c,d,expected,prr,prr_lower,prr_upper,chi2,ror,ror_lower,ror_upper,ic,ic025,ic975,"
        "ebgm,eb05,eb95,p_adj,signal_prr,signal_ror,signal_ic,signal_ebgm"
    ).split(",")
    assert set(names) <= set(table)
    assert all(len(column) == 5 for column in table.values())
    np.testing.assert_allclose(table["prr"], S.prr(a=a, b=b, c=c, d=d).prr)
    np.testing.assert_array_equal(table["signal_ebgm"], table["eb05"] >= S.EB05_THRESHOLD)


def test_signal_table_under_an_unconverged_prior_has_no_ebgm() -> None:
    a = np.array([20, 0, 3, 1, 50])
    b = np.array([80, 10, 7, 0, 950])
    c = np.array([100, 5, 10, 40, 400])
    d = np.array([1800, 100, 10_000, 5000, 20_000])
    good = S.signal_table(a=a, b=b, c=c, d=d, prior=CAERS_PRIOR)
    bad = S.signal_table(a=a, b=b, c=c, d=d, prior=replace(CAERS_PRIOR, converged=False))
    assert good["signal_ebgm"].any() and np.isfinite(good["ebgm"]).all()
    for name in ("ebgm", "eb05", "eb95"):
        assert np.isnan(bad[name]).all()
    assert not bad["signal_ebgm"].any() and not bad["ebgm_below_eb05"].any()
    for name in ("prr", "ror", "ic025", "p_adj", "signal_prr", "signal_ic"):
        np.testing.assert_array_equal(bad[name], good[name])


def test_ebgm_below_eb05_is_flagged() -> None:
    # Two tight, well-separated components (means 10 and 0.01). When the posterior weight of
    # the lower one is a few percent (under 5%), its log pulls the geometric mean below the 5%
    # quantile, which stays in the upper component.
    prior = replace(CAERS_PRIOR, alpha1=1000.0, beta1=100.0, alpha2=1000.0, beta2=1e5, p=0.1)
    a = np.array([1, 2, 1, 3])
    b = np.array([9, 8, 0, 7])
    c = np.array([99, 98, 9, 97])
    d = np.array([9891, 9892, 9990, 9893])
    table = S.signal_table(a=a, b=b, c=c, d=d, prior=prior)
    below = table["ebgm"] < table["eb05"]
    assert below.any() and not below.all()
    np.testing.assert_array_equal(table["ebgm_below_eb05"], below)
    result = S.ebgm(a, table["expected"], prior)
    assert np.all((result.qn[below] > 0.95) & (result.qn[below] < 1))


def test_import_loads_no_heavy_modules() -> None:
    code = (
        "import sys, surveillance.stats; "
        "bad = [m for m in ('pandas', 'matplotlib', 'duckdb') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


# --- stratified tables ------------------------------------------------------------------------

strata_lists = st.lists(st.tuples(counts, counts, counts, counts), min_size=1, max_size=5).filter(
    lambda strata: sum(map(sum, strata)) > 0
)


def strata_cells(strata: list[tuple[int, int, int, int]]) -> dict[str, np.ndarray]:
    """One table's strata as the (1, n_strata) cells a, b, c, d."""
    columns = np.array(strata, dtype=float).T[:, np.newaxis, :]
    return dict(zip("abcd", columns, strict=True))


def test_ror_mh_hand_worked() -> None:
    # Stratum 1: a=10, b=40, c=20, d=130, n=200: R = 10*130/200 = 6.5, S = 40*20/200 = 4,
    #   P = 140/200 = 0.7, Q = 0.3.
    # Stratum 2: a=6, b=14, c=30, d=250, n=300: R = 6*250/300 = 5, S = 14*30/300 = 1.4,
    #   P = 256/300, Q = 44/300.
    # OR_MH = 11.5 / 5.4 = 2.1296296
    # sum PR = 4.55 + 4.2666667 = 8.8166667; sum (PS + QR) = 2.8 + 1.1946667 + 1.95 + 0.7333333
    #   = 6.678; sum QS = 1.2 + 0.2053333 = 1.4053333
    # Var = 8.8166667/(2*11.5^2) + 6.678/(2*11.5*5.4) + 1.4053333/(2*5.4^2) = 0.1111984
    # CI = 2.1296296 * exp(-/+ 1.959964 * sqrt(0.1111984)) = (1.107794, 4.094014)
    r = S.ror_mh(a=[[10, 6]], b=[[40, 14]], c=[[20, 30]], d=[[130, 250]])
    np.testing.assert_allclose(
        [r.ror[0], r.lower[0], r.upper[0]], [2.1296296, 1.107794, 4.094014], rtol=1e-6
    )
    assert r.signal[0] and not r.zero_corrected[0]


def test_ror_mh_zero_cell_rule_hand_worked() -> None:
    # Strata (5, 3, 4, 0), (0, 2, 6, 8) and an empty one: sum a_k d_k / n_k = 0, so 0.5 goes on
    # every cell of the two non-empty strata: (5.5, 3.5, 4.5, 0.5), n=14; (0.5, 2.5, 6.5, 8.5),
    # n=18. R = 2.75/14 + 4.25/18 = 0.4325397; S = 15.75/14 + 16.25/18 = 2.0277778;
    # OR_MH = 0.2133072. The empty stratum stays empty and changes nothing.
    r = S.ror_mh(a=[[5, 0, 0]], b=[[3, 2, 0]], c=[[4, 6, 0]], d=[[0, 8, 0]])
    without_empty = S.ror_mh(a=[[5, 0]], b=[[3, 2]], c=[[4, 6]], d=[[0, 8]])
    np.testing.assert_allclose(r.ror, 0.2133072, rtol=1e-6)
    assert r.zero_corrected[0] and not r.signal[0]
    assert np.isfinite(r.lower[0]) and np.isfinite(r.upper[0])
    np.testing.assert_array_equal(
        [r.ror, r.lower, r.upper], [without_empty.ror, without_empty.lower, without_empty.upper]
    )


def test_ror_mh_matches_statsmodels_stratified_table() -> None:
    rng = np.random.default_rng(21)
    for n_strata in (2, 3, 6):
        cells = rng.integers(1, 400, size=(4, 50, n_strata)).astype(float)
        a, b, c, d = cells
        r = S.ror_mh(a=a, b=b, c=c, d=d)
        for i in range(a.shape[0]):
            table = StratifiedTable(np.array([[a[i], b[i]], [c[i], d[i]]]))
            np.testing.assert_allclose(r.ror[i], table.oddsratio_pooled, rtol=1e-10)
            np.testing.assert_allclose(
                [r.lower[i], r.upper[i]], table.oddsratio_pooled_confint(), rtol=1e-10
            )
        assert not np.any(r.zero_corrected)


def test_ror_mh_uses_zero_cells_as_they_are_when_the_pooled_sums_are_positive() -> None:
    # No correction here: statsmodels (shift_zeros=False) computes the same numbers.
    a, b, c, d = np.array([[3, 0, 12], [7, 2, 0], [20, 30, 10], [100, 0, 5]], dtype=float)
    r = S.ror_mh(a=a[np.newaxis], b=b[np.newaxis], c=c[np.newaxis], d=d[np.newaxis])
    table = StratifiedTable(np.array([[a, b], [c, d]]))
    assert not r.zero_corrected[0]
    np.testing.assert_allclose(r.ror[0], table.oddsratio_pooled, rtol=1e-10)
    np.testing.assert_allclose([r.lower[0], r.upper[0]], table.oddsratio_pooled_confint())


@settings(max_examples=300, deadline=None)
@given(strata_lists)
def test_ror_mh_interval_contains_estimate(strata: list[tuple[int, int, int, int]]) -> None:
    r = S.ror_mh(**strata_cells(strata))
    assert np.isfinite(r.lower[0]) and np.isfinite(r.upper[0])
    assert r.lower[0] <= r.ror[0] <= r.upper[0]


@settings(max_examples=300, deadline=None)
@given(tables)
def test_ror_mh_with_one_stratum_is_ror(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    single = S.ror(a=a, b=b, c=c, d=d)
    pooled = S.ror_mh(a=[[a]], b=[[b]], c=[[c]], d=[[d]])
    np.testing.assert_allclose(
        [pooled.ror[0], pooled.lower[0], pooled.upper[0]],
        [single.ror, single.lower, single.upper],
        rtol=1e-10,
    )
    assert pooled.zero_corrected[0] == single.zero_corrected
    assert pooled.signal[0] == single.signal


@settings(max_examples=200, deadline=None)
@given(strata_lists, st.randoms(use_true_random=False))
def test_ror_mh_ignores_stratum_order_and_empty_strata(
    strata: list[tuple[int, int, int, int]], rng: random.Random
) -> None:
    shuffled = [*strata, (0, 0, 0, 0)]
    rng.shuffle(shuffled)
    r, s = S.ror_mh(**strata_cells(strata)), S.ror_mh(**strata_cells(shuffled))
    np.testing.assert_allclose([s.ror, s.lower, s.upper], [r.ror, r.lower, r.upper], rtol=1e-10)
    assert s.zero_corrected[0] == r.zero_corrected[0]


def test_stratified_cells_are_checked() -> None:
    with pytest.raises(ValueError):
        S.ror_mh(a=[1, 2], b=[1, 2], c=[1, 2], d=[1, 2])  # 1-D: not (n_tables, n_strata)
    with pytest.raises(ValueError):
        S.stratified_expected(a=[[0, 0]], b=[[0, 0]], c=[[0, 0]], d=[[0, 0]])  # N = 0
    with pytest.raises(ValueError):
        S.ror_mh(a=[[1, -1]], b=[[1, 1]], c=[[1, 1]], d=[[1, 1]])
    with pytest.raises(TypeError):
        S.ror_mh([[1]], [[1]], [[1]], [[1]])  # type: ignore[misc]


# Simpson's paradox (strata = sex). Within each stratum the substance is reported with the term
# less than expected; pooled, more, because women both use it more and report the term more.
#   women: a=36, b=64, c=200, d=300, n=600: E = 100*236/600 = 39.333333, OR = 10800/12800
#   men:   a=1, b=19, c=98, d=882, n=1000:  E = 20*99/1000 = 1.98, OR = 882/1862
#   crude: a=37, b=83, c=298, d=1182, N=1600: E = 120*335/1600 = 25.125, OR = 43734/24734
SIMPSON = {
    "a": [[36, 1]],
    "b": [[64, 19]],
    "c": [[200, 98]],
    "d": [[300, 882]],
}
SIMPSON_CRUDE = {"a": 37, "b": 83, "c": 298, "d": 1182}


def test_stratified_expected_differs_from_crude_in_simpsons_paradox() -> None:
    stratified = S.stratified_expected(**SIMPSON)
    np.testing.assert_allclose(stratified, [39.333333 + 1.98], rtol=1e-7)
    np.testing.assert_allclose(S.expected_count(**SIMPSON_CRUDE), 25.125, rtol=1e-12)
    # a = 37 is above the crude E and below the stratified one: the IC changes sign.
    assert S.ic(**SIMPSON_CRUDE).ic > 0
    assert S.ic_given_expected(a=[37], expected=stratified).ic[0] < 0
    # The MH ROR lies between the stratum ORs (0.474, 0.844); the crude ROR is 1.768.
    np.testing.assert_allclose(S.ror(**SIMPSON_CRUDE).ror, 43734 / 24734, rtol=1e-12)
    assert 882 / 1862 < S.ror_mh(**SIMPSON).ror[0] < 10800 / 12800


@settings(max_examples=200, deadline=None)
@given(tables)
def test_stratified_expected_with_one_stratum_is_expected_count(
    cells: tuple[int, int, int, int],
) -> None:
    a, b, c, d = cells
    np.testing.assert_allclose(
        S.stratified_expected(a=[[a]], b=[[b]], c=[[c]], d=[[d]]),
        [S.expected_count(a=a, b=b, c=c, d=d)],
        rtol=1e-12,
    )


@settings(max_examples=200, deadline=None)
@given(strata_lists)
def test_stratified_expected_is_the_sum_of_stratum_expected_counts(
    strata: list[tuple[int, int, int, int]],
) -> None:
    total = sum(S.expected_count(a=a, b=b, c=c, d=d) for a, b, c, d in strata if a + b + c + d)
    np.testing.assert_allclose(S.stratified_expected(**strata_cells(strata)), [total], rtol=1e-10)


@settings(max_examples=200, deadline=None)
@given(tables)
def test_ic_given_crude_expected_is_ic(cells: tuple[int, int, int, int]) -> None:
    a, b, c, d = cells
    crude = S.ic(a=a, b=b, c=c, d=d)
    given_e = S.ic_given_expected(a=a, expected=S.expected_count(a=a, b=b, c=c, d=d))
    for name in ("ic", "ic025", "ic975", "expected", "signal"):
        np.testing.assert_array_equal(getattr(given_e, name), getattr(crude, name), err_msg=name)


def test_ic_given_expected_checks_its_input() -> None:
    with pytest.raises(ValueError):
        S.ic_given_expected(a=1, expected=0.0)  # a report where none can be expected
    with pytest.raises(ValueError):
        S.ic_given_expected(a=1.5, expected=1.0)
    assert S.ic_given_expected(a=0, expected=0.0).ic == 0.0


STRATIFIED = {
    # Four tables of three strata; table 1 has sum a_k d_k / n_k = 0 (a zero-corrected MH ROR
    # although its crude table has no zero cell) and an empty stratum; table 3 has crude a = 0.
    "a": [[10, 6, 3], [5, 0, 0], [36, 1, 0], [0, 0, 0]],
    "b": [[40, 14, 20], [3, 2, 0], [64, 19, 4], [50, 30, 80]],
    "c": [[20, 30, 8], [4, 6, 0], [200, 98, 12], [15, 7, 30]],
    "d": [[130, 250, 900], [0, 8, 0], [300, 882, 400], [2000, 900, 3000]],
}


def test_stratified_signal_table_columns() -> None:
    table = S.stratified_signal_table(**STRATIFIED, prior=CAERS_PRIOR)
    crude = {k: np.sum(v, axis=1) for k, v in STRATIFIED.items()}
    reference = S.signal_table(**crude, prior=CAERS_PRIOR)
    assert list(table) == list(reference)
    assert all(column.shape == (4,) for column in table.values())
    for name in ("a", "b", "c", "d", "prr", "prr_lower", "prr_upper", "chi2", "p_value"):
        np.testing.assert_array_equal(table[name], reference[name], err_msg=name)
    r = S.ror_mh(**STRATIFIED)
    e = S.stratified_expected(**STRATIFIED)
    i = S.ic_given_expected(a=crude["a"], expected=e)
    eb = S.ebgm(crude["a"], e, CAERS_PRIOR)
    expected_columns = {
        "ror": r.ror,
        "ror_lower": r.lower,
        "ror_upper": r.upper,
        "signal_ror": r.signal,
        "expected": e,
        "ic": i.ic,
        "ic025": i.ic025,
        "ic975": i.ic975,
        "signal_ic": i.signal,
        "ebgm": eb.ebgm,
        "eb05": eb.eb05,
        "eb95": eb.eb95,
        "signal_ebgm": eb.signal,
    }
    for name, column in expected_columns.items():
        np.testing.assert_array_equal(table[name], column, err_msg=name)
    np.testing.assert_array_equal(table["zero_corrected"], [False, True, False, True])
    for name, column in table.items():
        assert np.all(np.isfinite(column.astype(float))), name


def test_stratified_signal_table_with_one_stratum_is_signal_table() -> None:
    a = np.array([20, 0, 3, 1, 50])
    b = np.array([80, 10, 7, 0, 950])
    c = np.array([100, 5, 10, 40, 400])
    d = np.array([1800, 100, 10_000, 5000, 20_000])
    plain = S.signal_table(a=a, b=b, c=c, d=d, prior=CAERS_PRIOR)
    cells = {"a": a[:, None], "b": b[:, None], "c": c[:, None], "d": d[:, None]}
    stratified = S.stratified_signal_table(**cells, prior=CAERS_PRIOR)
    assert list(stratified) == list(plain)
    for name, column in plain.items():
        np.testing.assert_allclose(
            stratified[name].astype(float), column.astype(float), rtol=1e-10, err_msg=name
        )


def _statsmodels_mh(strata: np.ndarray) -> tuple[float, ...] | None:
    """statsmodels' MH OR, CI, Breslow-Day (Tarone) and MH test over the informative strata
    (rows a, b, c, d of `strata`), or None where statsmodels has no finite answer: fewer than
    two informative strata, a pooled OR of 0 or infinity, or of exactly 1 (where statsmodels'
    Breslow-Day divides by 1 - OR; see test_breslow_day_at_a_common_or_of_exactly_one)."""
    a, b, c, d = strata
    keep = (a + b > 0) & (c + d > 0) & (a + c > 0) & (b + d > 0)
    if keep.sum() < 2 or not np.any((a * d)[keep]) or not np.any((b * c)[keep]):
        return None
    table = StratifiedTable(np.array([[a[keep], b[keep]], [c[keep], d[keep]]]))
    if table.oddsratio_pooled == 1:
        return None
    bd = table.test_equal_odds(adjust=True)
    null = table.test_null_odds()
    lower, upper = table.oddsratio_pooled_confint()
    return (
        table.oddsratio_pooled,
        lower,
        upper,
        bd.statistic,
        bd.pvalue,
        null.statistic,
        null.pvalue,
    )


def _ours(r: S.MantelHaenszelResult, i: int) -> tuple[float, ...]:
    return (
        r.mh.ror[i],
        r.mh.lower[i],
        r.mh.upper[i],
        r.bd_chi2[i],
        r.bd_p[i],
        r.mh_chi2[i],
        r.mh_p[i],
    )


def test_mantel_haenszel_matches_statsmodels_on_random_tables_with_zero_cells() -> None:
    rng = np.random.default_rng(13)
    compared = 0
    for n_strata in (2, 3, 6):
        # Small counts, so zero cells, zero margins and uninformative strata all occur.
        cells = rng.integers(0, 12, size=(4, 120, n_strata)).astype(float)
        r = S.mantel_haenszel(a=cells[0], b=cells[1], c=cells[2], d=cells[3])
        for i in range(cells.shape[1]):
            want = _statsmodels_mh(cells[:, i, :])
            if want is None:
                continue
            np.testing.assert_allclose(_ours(r, i), want, rtol=1e-9, atol=1e-12)
            assert r.bd_df[i] == r.n_informative[i] - 1
            compared += 1
    assert compared > 200


@settings(max_examples=150, deadline=None)
@given(strata_lists)
def test_mantel_haenszel_matches_statsmodels_or_says_why_not(
    strata: list[tuple[int, int, int, int]],
) -> None:
    cells = strata_cells(strata)
    with np.errstate(all="raise"):  # no floating-point error escapes, whatever the strata
        r = S.mantel_haenszel(**cells)
    want = _statsmodels_mh(np.array(strata, dtype=float).T)
    if want is not None:
        np.testing.assert_allclose(_ours(r, 0), want, rtol=1e-7, atol=1e-10)
        return
    if r.mh.ror[0] == 1 and r.n_informative[0] >= 2:
        assert np.isfinite(r.bd_chi2[0]) and np.isfinite(r.bd_p[0])
        return
    # Not testable: Breslow-Day is missing, never a number, and never flags.
    assert np.isnan(r.bd_chi2[0]) and np.isnan(r.bd_p[0]) and not r.effect_modification[0]
    if r.n_informative[0] == 0:
        assert np.isnan(r.mh.ror[0]) and np.isnan(r.mh_p[0]) and not r.confounding[0]
    else:
        assert np.isfinite([r.mh.ror[0], r.mh.lower[0], r.mh.upper[0]]).all()


def test_mantel_haenszel_sets_uninformative_strata_aside() -> None:
    # Stratum 3 has no unexposed case, stratum 4 no case with the term: neither changes the
    # MH ROR, its CI or either test, nor the degrees of freedom; the crude table takes them in.
    base = [(10, 40, 20, 130), (6, 14, 30, 250)]
    padded = [*base, (5, 7, 0, 0), (0, 9, 0, 60)]
    r, s = S.mantel_haenszel(**strata_cells(base)), S.mantel_haenszel(**strata_cells(padded))
    np.testing.assert_allclose(_ours(s, 0), _ours(r, 0), rtol=1e-12)
    assert (s.n_strata[0], s.n_informative[0], s.bd_df[0]) == (4, 2, 1)
    np.testing.assert_allclose(s.crude.ror, S.ror(a=21, b=70, c=50, d=440).ror, rtol=1e-12)
    # Hand-worked in test_ror_mh_hand_worked: OR_MH = 2.1296296, CI (1.107794, 4.094014).
    np.testing.assert_allclose(
        [s.mh.ror[0], s.mh.lower[0], s.mh.upper[0]], [2.1296296, 1.107794, 4.094014], rtol=1e-6
    )
    # No unexposed case with the term (sum b_k c_k / n_k = 0): the zero-cell rule shifts the
    # informative strata only; the stratum without exposed cases stays out of the estimate.
    corrected = [(3, 5, 0, 10), (2, 4, 0, 8)]
    t = S.mantel_haenszel(**strata_cells([*corrected, (0, 0, 5, 50)]))
    want = S.ror_mh(**strata_cells(corrected))
    assert t.mh.zero_corrected[0] and np.isnan(t.bd_p[0])
    np.testing.assert_allclose(
        [t.mh.ror[0], t.mh.lower[0], t.mh.upper[0]], [want.ror[0], want.lower[0], want.upper[0]]
    )


def test_mantel_haenszel_with_nothing_informative_is_missing_not_a_number() -> None:
    # Every case exposed in one stratum, none in the other: the crude table has a ROR, the
    # strata have nothing to say (ror_mh alone would shift them into saying something).
    cells = strata_cells([(4, 6, 0, 0), (0, 0, 10, 90)])
    r = S.mantel_haenszel(**cells)
    assert r.n_informative[0] == 0 and r.n_strata[0] == 2
    for value in _ours(r, 0):
        assert np.isnan(value)
    assert r.bd_df[0] == 0 and not r.confounding[0] and not r.effect_modification[0]
    assert np.isfinite(r.crude.ror[0]) and np.isfinite(S.ror_mh(**cells).ror[0])


def test_mantel_haenszel_with_one_informative_stratum_is_its_ror() -> None:
    r = S.mantel_haenszel(**strata_cells([(12, 30, 25, 400), (0, 0, 3, 7)]))
    single = S.ror(a=12, b=30, c=25, d=400)
    np.testing.assert_allclose(
        [r.mh.ror[0], r.mh.lower[0], r.mh.upper[0]], [single.ror, single.lower, single.upper]
    )
    assert r.bd_df[0] == 0 and np.isnan(r.bd_p[0]) and np.isfinite(r.mh_p[0])


def test_breslow_day_at_a_common_or_of_exactly_one() -> None:
    # (2, 1, 1, 1) and (1, 2, 1, 1), n = 5 each: sum R = 2/5 + 1/5 = sum S, so OR_MH = 1 and
    # the quadratic for the expected a_k is linear: e_k = n1_k m1_k / n_k = 9/5 and 6/5
    # (statsmodels divides by 1 - OR = 0 here). Variances 1 / (1/e + 1/(n1-e) + 1/(m1-e) +
    # 1/(n0-m1+e)): stratum 1: 1/(1/1.8 + 1/1.2 + 1/1.2 + 1/0.8) = 0.288; stratum 2 (n1 = 3,
    # m1 = 2, n0 = 2): 1/(1/1.2 + 1/1.8 + 1/0.8 + 1/1.2) = 0.288. sum (a - e)^2 / v =
    # (0.04 + 0.04) / 0.288 = 0.2777778; Tarone: (3 - 3)^2 / 0.576 = 0.
    chi2, df, p = S.breslow_day(**strata_cells([(2, 1, 1, 1), (1, 2, 1, 1)]))
    np.testing.assert_allclose(chi2, [0.2777778], rtol=1e-6)
    np.testing.assert_allclose(p, stats.chi2.sf(0.2777778, 1), rtol=1e-6)
    assert df[0] == 1


@settings(max_examples=150, deadline=None)
@given(strata_lists)
def test_breslow_day_expected_cells_have_the_pooled_odds_ratio(
    strata: list[tuple[int, int, int, int]],
) -> None:
    # The root chosen for each stratum lies inside its table and has the pooled OR exactly.
    a, b, c, d = (np.array(x, dtype=float)[np.newaxis, :] for x in zip(*strata, strict=True))
    keep = S.informative_strata(a=a, b=b, c=c, d=d)[0]
    sum_r, sum_s = (
        np.sum((a * d / (a + b + c + d))[:, keep]),
        np.sum((b * c / (a + b + c + d))[:, keep]),
    )
    if not keep.any() or sum_r == 0 or sum_s == 0:
        return
    odds_ratio = sum_r / sum_s
    e, v = S._null_expected(a, b, c, d, np.array([odds_ratio]))
    e, v = e[0, keep], v[0, keep]
    n1, n0, m1 = (a + b)[0, keep], (c + d)[0, keep], (a + c)[0, keep]
    assert np.all(e > np.maximum(0, m1 - n0)) and np.all(e < np.minimum(n1, m1)) and np.all(v > 0)
    np.testing.assert_allclose(e * (n0 - m1 + e) / ((n1 - e) * (m1 - e)), odds_ratio, rtol=1e-7)


def test_mh_flags_follow_their_thresholds() -> None:
    # Table 0: Simpson (crude 1.768, MH about 0.6): confounding, no effect modification.
    # Table 1: ORs 9 and 1 over large strata: Breslow-Day rejects; table 2: identical strata.
    # Table 3: no unexposed case with the term (c = 0): both RORs zero-corrected, they differ
    # by far more than 10% but only through the 0.5 added, so no confounding is claimed.
    a = [[36, 1], [100, 5], [10, 10], [3, 9]]
    b = [[64, 19], [100, 45], [40, 40], [50, 10]]
    c = [[200, 98], [20, 80], [20, 20], [0, 0]]
    d = [[300, 882], [180, 720], [130, 130], [900, 40]]
    r = S.mantel_haenszel(a=a, b=b, c=c, d=d)
    change = r.mh.ror / r.crude.ror - 1
    np.testing.assert_allclose(r.change, change)
    corrected = r.crude.zero_corrected | r.mh.zero_corrected
    np.testing.assert_array_equal(
        r.confounding, (np.abs(change) > S.MH_CONFOUNDING_CHANGE) & ~corrected
    )
    np.testing.assert_array_equal(r.effect_modification, r.bd_p < S.EFFECT_MODIFICATION_P)
    assert list(r.confounding) == [True, True, False, False]
    assert list(r.effect_modification) == [False, True, False, False]
    assert list(corrected) == [False, False, False, True] and abs(change[3]) > 0.5
    np.testing.assert_allclose(r.bd_chi2[2], 0.0, atol=1e-12)

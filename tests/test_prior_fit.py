"""The EBGM prior fit finds the best optimum of its own likelihood and says when it has none.

Data are simulated from planted priors (lambda from the two-gamma mixture or one gamma,
n ~ Poisson(lambda * E)); the convergence rule is checked on its own and through fit_prior.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from scipy import special, stats

from surveillance import stats as S


def simulate(
    m: int, theta: tuple[float, float, float, float, float], seed: int, log_e: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """(n, E) of the pairs with n >= 1 among m simulated from the prior theta."""
    a1, b1, a2, b2, p = theta
    rng = np.random.default_rng(seed)
    e = np.exp(rng.normal(*log_e, m))
    first = rng.random(m) < p
    lam = np.where(first, rng.gamma(a1, 1 / b1, m), rng.gamma(a2, 1 / b2, m))
    n = rng.poisson(lam * e).astype(float)
    return n[n >= 1], e[n >= 1]


def theta_of(prior: S.Prior) -> np.ndarray:
    return np.array([prior.alpha1, prior.beta1, prior.alpha2, prior.beta2, prior.p])


def loglik(prior: S.Prior, n: np.ndarray, e: np.ndarray) -> float:
    return -S.prior_neg_loglik(theta_of(prior), n, e)


# --- the convergence rule -------------------------------------------------------------------

GOOD = np.array([3.2, 0.4, 2.0, 1.9, 0.065])


def test_agreeing_optima_off_the_bounds_converge() -> None:
    twin = GOOD * (1 + 1e-4)
    assert S.convergence(GOOD, True, [GOOD, twin]) == (True, 2, "")


def test_equal_likelihood_is_not_agreement() -> None:
    # Two optima with the same log-likelihood but alpha2/beta2 50% apart: not converged.
    other = GOOD * np.array([1, 1, 1.5, 1.5, 1])
    converged, agree, why = S.convergence(GOOD, True, [GOOD, other])
    assert not converged and agree == 1 and "agree" in why
    assert not S.optima_agree(GOOD, other)
    assert S.optima_agree(GOOD, GOOD * (1 + S.AGREE_RTOL / 2))


@pytest.mark.parametrize(
    ("theta", "reason"),
    [
        (GOOD * np.array([1, 1, 1, 1, 0]) + np.array([0, 0, 0, 0, 1 - 1e-4]), "P = "),
        (GOOD * np.array([1, 1, 1, 1, 0]) + np.array([0, 0, 0, 0, 1e-4]), "P = "),
        (np.array([1e4 * 0.999, 900.0, 2.0, 1.9, 0.01]), "bound"),
        (np.array([3.2, 0.4, 1e-4, 1.9, 0.05]), "bound"),
    ],
)
def test_edges_and_bounds_are_not_convergence(theta: np.ndarray, reason: str) -> None:
    converged, agree, why = S.convergence(theta, True, [theta, theta])
    assert not converged and agree == 2 and reason in why


def test_optimiser_failure_is_not_convergence() -> None:
    assert not S.convergence(GOOD, False, [GOOD, GOOD])[0]


# --- fits of planted priors -------------------------------------------------------------------


def test_a_degenerate_table_is_not_converged() -> None:
    # Every pair reported at its expected rate (lambda = 1, a gamma of infinite shape): the
    # likelihood pushes a shape to its bound, or P to 0 or 1; either is not convergence.
    rng = np.random.default_rng(11)
    e = np.exp(rng.normal(-1.5, 1.0, 30_000))
    n = rng.poisson(e).astype(float)
    prior = S.fit_prior(n[n >= 1], e[n >= 1])
    assert not prior.converged
    assert "not converged: " in prior.method


def test_loglik_full_is_the_likelihood_of_every_pair() -> None:
    n, e = simulate(30_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=5, log_e=(-2.0, 1.8))
    prior = S.fit_prior(n, e)
    assert prior.n_points < prior.n_pairs == n.size
    assert prior.loglik_full == pytest.approx(loglik(prior, n, e), rel=1e-12)
    plain = S.fit_prior(n, e, squash=False)
    assert plain.loglik_full == plain.loglik


def test_planted_two_gamma_prior_escapes_the_trap_of_the_five_default_starts() -> None:
    # A small tight component at 10 times the expected count (P = 1%) over a gamma at 1. All
    # five openEBGM starts reach the same wrong optimum (a gamma of shape ~0.03 holding 84% of
    # the weight, whose heavy tail stands in for the second component) and agree on it; the
    # spread starts find the planted structure, more than 5 log-likelihood units higher.
    truth = (100.0, 10.0, 2.0, 2.0, 0.01)
    n, e = simulate(60_000, truth, seed=2, log_e=(np.log(0.3), 0.8))
    planted = S.Prior(*truth, loglik=0.0, converged=True, n_pairs=0, n_points=0, method="truth")
    five = S.fit_prior(n, e, starts=S.DEFAULT_STARTS)
    best = S.fit_prior(n, e)
    assert best.converged
    assert best.loglik_full > five.loglik_full + 5
    assert best.loglik_full >= loglik(planted, n, e)
    assert best.alpha1 / best.beta1 == pytest.approx(10.0, rel=0.15)
    assert best.alpha2 / best.beta2 == pytest.approx(1.0, rel=0.15)
    assert best.p == pytest.approx(0.01, rel=0.5)
    assert min(five.alpha1, five.alpha2) < 0.1  # the trap: one heavy-tailed gamma
    truth_ebgm = S.ebgm(n, e, planted).ebgm
    np.testing.assert_allclose(S.ebgm(n, e, best).ebgm, truth_ebgm, rtol=0.25)
    assert np.max(np.abs(S.ebgm(n, e, five).ebgm / truth_ebgm - 1)) > 0.5


# --- the fast likelihood against a reference computed with scipy.stats ------------------------


def reference_nll(theta: np.ndarray, n: np.ndarray, e: np.ndarray, w: np.ndarray) -> float:
    """The zero-truncated mixture likelihood of ``prior_neg_loglik``, computed point by point with
    scipy's negative binomial: -sum w log((P f1 + (1-P) f2) / (P S1 + (1-P) S2))."""
    a1, b1, a2, b2, p = theta
    one, two = stats.nbinom(a1, b1 / (b1 + e)), stats.nbinom(a2, b2 / (b2 + e))
    numerator = np.logaddexp(np.log(p) + one.logpmf(n), np.log1p(-p) + two.logpmf(n))
    denominator = np.log(p * one.sf(0) + (1 - p) * two.sf(0))
    return float(-np.dot(w, numerator - denominator))


def test_fitted_prior_is_the_optimum_of_the_reference_likelihood(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Blocks of 1,000 points (LIKELIHOOD_CHUNK): several, the last one partial.
    monkeypatch.setattr(S, "LIKELIHOOD_CHUNK", 1_000)
    n, e = simulate(30_000, (3.25, 0.4, 2.0, 1.9, 0.065), seed=3, log_e=(-1.0, 1.5))
    prior = S.fit_prior(n, e)
    assert prior.converged
    pn, pe, pw = S.squash_pairs(n, e)
    assert pn.size == prior.n_points > 2 * S.LIKELIHOOD_CHUNK
    assert pn.size % S.LIKELIHOOD_CHUNK != 0
    theta = theta_of(prior)
    assert -prior.loglik == pytest.approx(reference_nll(theta, pn, pe, pw), rel=1e-12)
    every = reference_nll(theta, n, e, np.ones_like(n))
    assert -prior.loglik_full == pytest.approx(every, rel=1e-12)
    # The gradient of the reference on the optimiser's log/logit scale, per unit of weight, is
    # nil at the fit: an optimum of this likelihood, not a point where a faster one stopped.
    x, total, step = S._to_free(theta), pw.sum(), 1e-5

    def scaled(free: np.ndarray) -> float:
        a1, b1, a2, b2 = np.exp(free[:4])
        return reference_nll(np.array([a1, b1, a2, b2, special.expit(free[4])]), pn, pe, pw)

    gradient = [(scaled(x + h) - scaled(x - h)) / (2 * step * total) for h in np.eye(5) * step]
    assert np.max(np.abs(gradient)) < 1e-6
    value, analytic = S._objective(x, pn, pe, pw, 1)
    np.testing.assert_allclose(analytic / total, gradient, atol=1e-7)
    assert value == pytest.approx(scaled(x), rel=1e-12)
    # Blocks on threads (as in fit_prior) add up to exactly the same sums.
    with ThreadPoolExecutor(3) as pool:
        threaded = S._likelihood(x, S._fit_points(pn, pe, pw), 1, True, pool.map)
    assert threaded[0] == value
    np.testing.assert_array_equal(threaded[1], analytic)

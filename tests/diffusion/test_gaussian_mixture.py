"""The exact Gaussian-mixture score: closed forms, data limit, samples, flow map, bad inputs.

A 3-component mixture in 3-D with full, correlated covariances. Its marginal under each
forward SDE is checked against an independent NumPy evaluation of
sum_k w_k N(alpha_t mu_k, alpha_t^2 S_k + sigma_t^2 I) (solves and log-determinants, no
eigenbasis), and the score against jax.grad of the log-density.
"""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde.diffusion as nd

WEIGHTS = np.array([0.2, 0.5, 0.3])
MEANS = np.array([[1.0, -0.5, 0.3], [-1.2, 0.4, 0.0], [0.2, 1.5, -1.0]])
_A = np.array([[[0.6, 0.1, 0.0], [0.2, 0.4, 0.1], [0.0, 0.3, 0.5]]])
COVS = np.stack([_A[0] @ _A[0].T + 0.05 * np.eye(3), np.diag([0.3, 0.2, 0.4]), 0.25 * np.eye(3)])
COVS[2, 0, 1] = COVS[2, 1, 0] = 0.1
SDES = {"VE": nd.VESDE(sigma_max=5.0), "VP": nd.VPSDE(), "subVP": nd.SubVPSDE()}
POINTS = np.array([[0.3, 0.2, -0.1], [2.5, -1.0, 1.0], [-4.0, 3.0, 2.0]])


def mixture(sde, dtype=jnp.float64):
    return nd.GaussianMixtureScore(
        sde, jnp.asarray(WEIGHTS, dtype), jnp.asarray(MEANS, dtype), jnp.asarray(COVS, dtype)
    )


def numpy_marginal(sde, t, x):
    """log p_t(x) and its gradient, by solves with each C_k = alpha^2 S_k + sigma^2 I."""
    alpha, sigma = float(sde.mean_coeff(t)), float(sde.std(t))
    logs, grads = [], []
    for w, mu, cov in zip(WEIGHTS, MEANS, COVS, strict=True):
        c = alpha**2 * cov + sigma**2 * np.eye(3)
        r = x - alpha * mu
        sol = np.linalg.solve(c, r)
        logs.append(np.log(w) - 0.5 * (r @ sol + np.linalg.slogdet(2 * np.pi * c)[1]))
        grads.append(-sol)
    logs = np.array(logs)
    post = np.exp(logs - logs.max())
    post /= post.sum()
    return logs.max() + np.log(np.exp(logs - logs.max()).sum()), post @ np.array(grads)


@functools.cache
def _score_and_logp():
    # One compiled function for every SDE, time and point.
    @eqx.filter_jit
    def fn(model, t, x):
        grad = jax.grad(model.log_prob, argnums=1)
        return model(t, x), model.log_prob(t, x), grad(t, x)

    return fn


@pytest.mark.parametrize("name", list(SDES))
def test_score_and_log_prob_match_the_closed_form_and_each_other(name):
    sde = SDES[name]
    with jax.enable_x64(True):
        model = mixture(sde)
        for t in (1e-3, 0.1, 0.5, 1.0):
            for x in POINTS:
                score, logp, grad = _score_and_logp()(model, jnp.asarray(t), jnp.asarray(x))
                ref_logp, ref_score = numpy_marginal(sde, t, x)
                np.testing.assert_allclose(float(logp), ref_logp, rtol=1e-10)
                np.testing.assert_allclose(score, ref_score, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(score, grad, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", list(SDES))
def test_one_component_is_the_gaussian_score(name):
    sde = SDES[name]
    with jax.enable_x64(True):
        one = nd.GaussianMixtureScore(sde, jnp.ones(1), MEANS[:1], COVS[:1])
        gaussian = nd.GaussianScore(sde, MEANS[0], COVS[0])
        for t in (1e-3, 0.3, 1.0):
            for x in POINTS:
                np.testing.assert_allclose(one(t, x), gaussian(t, x), rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(
                    one.log_prob(t, x), gaussian.marginal_logp(t, x), rtol=1e-12
                )


def test_at_time_zero_it_is_the_data_score_and_diagonal_covs_are_a_shorthand():
    with jax.enable_x64(True):
        model = mixture(nd.VPSDE())
        for x in POINTS:
            # t -> 0: alpha -> 1, sigma -> 0, the data mixture itself; at 1e-8 the marginal
            # differs from the data by O(sigma^2) = O(beta_min t) = 1e-9.
            data_logp, data_score = numpy_marginal(nd.VPSDE(), 0.0, x)
            np.testing.assert_allclose(model(1e-8, x), data_score, rtol=1e-7)
            np.testing.assert_allclose(model.log_prob(0.0, x), data_logp, rtol=1e-12)
        diagonal = np.stack([np.diag(c) for c in COVS]) + 0.5
        full = np.stack([np.diag(d) for d in diagonal])
        a = nd.GaussianMixtureScore(nd.VESDE(), WEIGHTS, MEANS, diagonal)
        b = nd.GaussianMixtureScore(nd.VESDE(), WEIGHTS, MEANS, full)
        np.testing.assert_allclose(a(0.4, POINTS[1]), b(0.4, POINTS[1]), rtol=1e-12)


def test_samples_have_the_mixture_mean_and_covariance():
    n = 40_000
    xs = np.asarray(mixture(nd.VPSDE(), jnp.float32).sample(jr.key(0), n), np.float64)
    mean = WEIGHTS @ MEANS
    second = np.einsum("k,kij->ij", WEIGHTS, COVS + np.einsum("ki,kj->kij", MEANS, MEANS))
    cov = second - np.outer(mean, mean)
    # 5 standard errors: of the mean sqrt(diag cov / n); of each covariance entry the
    # sample standard deviation of the centred products over sqrt(n).
    centred = xs - xs.mean(0)
    products = np.einsum("ni,nj->nij", centred, centred)
    np.testing.assert_array_less(np.abs(xs.mean(0) - mean), 5 * np.sqrt(np.diag(cov) / n))
    np.testing.assert_array_less(np.abs(products.mean(0) - cov), 5 * products.std(0) / np.sqrt(n))


@pytest.mark.parametrize("name", ["VE", "subVP"])
def test_the_flow_map_is_invertible_and_exact_for_one_component(name):
    sde = SDES[name]
    with jax.enable_x64(True):
        model = mixture(sde)
        x_T = sde.prior_std * jr.normal(jr.key(1), (8, 3), jnp.float64)
        # The times are traced: one compilation serves both directions.
        flow = eqx.filter_jit(lambda m, x, a, b: jax.vmap(lambda y: m.flow(y, a, b))(x))
        t_T, t_eps = jnp.asarray(1.0), jnp.asarray(1e-3)
        x_eps = flow(model, x_T, t_T, t_eps)
        # Observed round-trip error about 1e-10 at the default rtol = atol = 1e-10.
        np.testing.assert_allclose(flow(model, x_eps, t_eps, t_T), x_T, atol=1e-7 * sde.prior_std)
        # One Gaussian: the map is linear, x_t = alpha_t m + C_t^{1/2} C_T^{-1/2}(x_T - alpha_T m).
        # A mixture of three copies of one Gaussian is that Gaussian (and compiles as one).
        one = nd.GaussianMixtureScore(sde, WEIGHTS, MEANS[[0, 0, 0]], COVS[[0, 0, 0]])
        w, u = np.linalg.eigh(COVS[0])

        def sd(t):
            return np.sqrt(float(sde.mean_coeff(t)) ** 2 * w + float(sde.std(t)) ** 2)

        a_T, a_eps = float(sde.mean_coeff(1.0)), float(sde.mean_coeff(1e-3))
        exact = (
            a_eps * MEANS[0] + ((np.asarray(x_T) - a_T * MEANS[0]) @ u * sd(1e-3) / sd(1.0)) @ u.T
        )
        got = flow(one, x_T, t_T, t_eps)
        np.testing.assert_allclose(got, exact, atol=1e-8)


def test_bad_inputs_are_named():
    sde = nd.VPSDE()
    with pytest.raises(ValueError, match=r"`weights` must be positive and sum to 1.*sum 1\.1"):
        nd.GaussianMixtureScore(sde, np.array([0.6, 0.5]), MEANS[:2], COVS[:2])
    with pytest.raises(ValueError, match=r"`weights` must be positive.*Normalize"):
        nd.GaussianMixtureScore(sde, np.array([1.5, -0.5]), MEANS[:2], COVS[:2])
    with pytest.raises(ValueError, match=r"`weights` and `means` must have shapes \(K,\) and"):
        nd.GaussianMixtureScore(sde, WEIGHTS, MEANS[:2], COVS[:2])
    with pytest.raises(ValueError, match=r"`covs` must have shape \(K, d, d\) = \(3, 3, 3\)"):
        nd.GaussianMixtureScore(sde, WEIGHTS, MEANS, COVS[:, :2])
    bad = COVS.copy()
    bad[1] = np.diag([1.0, -0.1, 1.0])
    with pytest.raises(ValueError, match=r"positive definite, got component 1 with smallest"):
        nd.GaussianMixtureScore(sde, WEIGHTS, MEANS, bad)
    bad[1] = np.array([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    with pytest.raises(ValueError, match=r"`covs` must be symmetric, got a largest asymmetry"):
        nd.GaussianMixtureScore(sde, WEIGHTS, MEANS, bad)
    with pytest.raises(ValueError, match=r"`covs` must be > 0"):
        nd.GaussianMixtureScore(sde, WEIGHTS, MEANS, np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"GaussianMixtureScore: `means` must be finite, got"):
        nd.GaussianMixtureScore(sde, WEIGHTS, np.where(MEANS > 1, np.nan, MEANS), COVS)
    with pytest.raises(TypeError, match=r"GaussianMixtureScore: `sde` must be a forward SDE"):
        nd.GaussianMixtureScore("VP", WEIGHTS, MEANS, COVS)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"`num_samples` must be an integer >= 1, got 0"):
        mixture(sde, jnp.float32).sample(jr.key(0), 0)

"""Probability-flow log-likelihoods against closed forms for Gaussian data."""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde.diffusion as nd

MEAN = np.array([0.5, -0.3])
COV = np.array([[1.0, 0.6], [0.6, 0.8]])
EPS = 1e-5


def flow_logp(sde, x):
    """log-density of the exact flow model: the prior pulled back through the PF-ODE map.

    The map from eps to T is x_T = alpha_T m + A (x - alpha_eps m) with
    A = Sigma_T^{1/2} Sigma_eps^{-1/2} (S's eigenbasis), so
    log p(x) = log p_prior(x_T) + log det A.
    """
    w, u = np.linalg.eigh(COV)

    def var(t):
        return float(sde.mean_coeff(t)) ** 2 * w + float(sde.std(t)) ** 2

    scale = np.sqrt(var(1.0) / var(EPS))
    a_T, a_eps = float(sde.mean_coeff(1.0)), float(sde.mean_coeff(EPS))
    x_T = a_T * MEAN + ((x - a_eps * MEAN) @ u * scale) @ u.T
    return float(sde.prior_logp(jnp.asarray(x_T))) + np.sum(np.log(scale))


POINTS = np.array([[0.2, 0.1], [1.5, -1.0], [-0.7, 0.4]])


@pytest.mark.parametrize(
    ("sde", "prior_gap"), [(nd.VPSDE(), 0.01), (nd.VESDE(), 0.05)], ids=["VP", "VE"]
)
def test_exact_trace_likelihood_matches_the_change_of_variables(sde, prior_gap):
    # float64, rtol = atol = 1e-8; tolerance 1e-5 nats against the exact change of
    # variables. The flow model differs from the true marginal N(alpha m, Sigma_eps) only
    # through the prior's mismatch with p_T (VP: alpha_T = 0.0066; VE: mean 0 instead of m
    # at scale 50), observed up to 0.028 nats (VE) at these points: `prior_gap`.
    with jax.enable_x64(True):
        score = nd.GaussianScore(sde, jnp.asarray(MEAN), jnp.asarray(COV))

        @jax.jit
        def logp(x):
            return nd.log_likelihood(score, sde, x, eps=EPS, rtol=1e-8, atol=1e-8)

        out = jax.vmap(logp)(jnp.asarray(POINTS))
        expected = np.array([flow_logp(sde, x) for x in POINTS])
        np.testing.assert_allclose(out.logp, expected, atol=1e-5)
        true = np.asarray(jax.vmap(lambda x: score.marginal_logp(EPS, x))(jnp.asarray(POINTS)))
        np.testing.assert_allclose(out.logp, true, atol=prior_gap)
        np.testing.assert_allclose(out.bits_per_dim, -out.logp / (2 * np.log(2)), rtol=1e-12)
        assert np.all(np.asarray(out.nfe) > 0)


def test_hutchinson_estimate_is_unbiased():
    # With probes held fixed along the solve, each estimate is log p_T(x_T) + v^T A v with
    # A = integral of the Jacobian; its mean over probes is the exact-trace value, here the
    # closed form `flow_logp`. 400 probes per distribution, tolerance 4 standard errors of
    # the mean plus 1e-3 for the float32 solve at rtol = atol = 1e-5.
    sde = nd.VPSDE()
    x = jnp.asarray(POINTS[1], jnp.float32)
    score = nd.GaussianScore(sde, jnp.asarray(MEAN, jnp.float32), jnp.asarray(COV, jnp.float32))
    exact = flow_logp(sde, POINTS[1])
    for probe in ("rademacher", "gaussian"):

        @jax.jit
        def estimate(key, probe=probe):
            return nd.log_likelihood(
                score, sde, x, eps=EPS, estimator="hutchinson", probe=probe, key=key
            ).logp

        values = np.asarray(jax.vmap(estimate)(jr.split(jr.key(0), 400)), np.float64)
        assert values.std() > 1e-3  # the estimates really are random
        assert abs(values.mean() - exact) < 4 * values.std() / np.sqrt(400) + 1e-3, probe


def test_divergence_runs_over_every_entry_of_an_image_shaped_example():
    # The same 2-D Gaussian stored as a (1, 1, 2) "image": the same log-likelihood (float32,
    # tolerance 1e-3 nats against the closed form).
    sde = nd.VPSDE()
    flat = nd.GaussianScore(sde, jnp.asarray(MEAN, jnp.float32), jnp.asarray(COV, jnp.float32))

    def image_score(t, x, args):
        return flat(t, x.reshape(2)).reshape(x.shape)

    x = jnp.asarray(POINTS[0], jnp.float32).reshape(1, 1, 2)
    out = nd.log_likelihood(image_score, sde, x, eps=EPS)
    np.testing.assert_allclose(out.logp, flow_logp(sde, POINTS[0]), atol=1e-3)


def test_reported_nfe_counts_every_evaluation():
    calls = []
    sde = nd.VESDE()
    score = nd.GaussianScore(sde, jnp.asarray(MEAN, jnp.float32), jnp.asarray(COV, jnp.float32))

    def counting(t, x, args):
        jax.debug.callback(lambda: calls.append(1))
        return score(t, x)

    out = nd.log_likelihood(counting, sde, jnp.array([0.1, 0.2]), rtol=1e-4, atol=1e-4)
    jax.effects_barrier()
    # One (jvp-batched) evaluation of the field per stage; vmap over probes calls once.
    assert int(out.nfe) == len(calls) > 0


def test_bits_per_dim_with_dequantisation_offset():
    logp = -100.0
    np.testing.assert_allclose(nd.bits_per_dim(logp, 64), 100 / (64 * np.log(2)))
    np.testing.assert_allclose(
        nd.bits_per_dim(logp, 64, bin_width=1 / 256), 100 / (64 * np.log(2)) + 8, rtol=1e-6
    )
    np.testing.assert_allclose(
        nd.bits_per_dim(logp, 64, bin_width=2 / 256), 100 / (64 * np.log(2)) + 7, rtol=1e-6
    )

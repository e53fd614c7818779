"""The probability-flow ODE goes through `neurde.NeuralODE`; the drifts have one definition.

`ProbabilityFlow` and `log_likelihood` solve with a `NeuralODE`, so they raise neurde's own
error when `max_steps` is reached and take their tolerances as arrays, which change without
recompiling. The fixed-step reverse-SDE samplers evaluate `neurde.diffusion.reverse_drift`.
"""

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde.diffusion as nd

SDE = nd.VPSDE()
SCORE = nd.GaussianScore(SDE, jnp.array([0.5, -0.3]), jnp.array([[1.0, 0.6], [0.6, 0.8]]))
X = jnp.array([0.2, 0.1])
MAX_STEPS = r"the solver reached `max_steps=2` before the end of the"


def test_probability_flow_reports_neurdes_max_steps_error():
    with pytest.raises(Exception, match="ProbabilityFlow: " + MAX_STEPS):
        xs, _ = nd.sample(nd.ProbabilityFlow(max_steps=2), SCORE, SDE, 4, (2,), key=jr.key(0))
        jax.block_until_ready(xs)


def test_log_likelihood_reports_neurdes_max_steps_error():
    with pytest.raises(Exception, match="log_likelihood: " + MAX_STEPS):
        jax.block_until_ready(nd.log_likelihood(SCORE, SDE, X, max_steps=2).logp)


def counting_traces(traces):
    def score(t, x, args):
        traces.append(1)  # Python side effect: runs once per trace, never when compiled
        return SCORE(t, x, args)

    return score


def test_probability_flow_tolerances_are_arrays_that_do_not_recompile():
    traces = []
    score = counting_traces(traces)
    x_T = jr.normal(jr.key(1), (16, 2))
    loose, n_loose = nd.sample_from(nd.ProbabilityFlow(rtol=1e-2, atol=1e-2), score, SDE, x_T)
    after_first = len(traces)
    tight, n_tight = nd.sample_from(
        nd.ProbabilityFlow(rtol=jnp.asarray(1e-6), atol=jnp.asarray(1e-6)), score, SDE, x_T
    )
    assert len(traces) == after_first > 0  # the second call reused the compiled solve
    assert int(n_tight) > int(n_loose)
    # Both near each other (the loose solve's error is ~1e-2 at most).
    np.testing.assert_allclose(loose, tight, atol=5e-2)


def test_log_likelihood_tolerances_are_arrays_that_do_not_recompile():
    traces = []
    score = counting_traces(traces)

    @jax.jit
    def logp(rtol, atol):
        return nd.log_likelihood(score, SDE, X, rtol=rtol, atol=atol)

    loose = logp(jnp.asarray(1e-2), jnp.asarray(1e-2))
    after_first = len(traces)
    tight = logp(jnp.asarray(1e-6), jnp.asarray(1e-6))
    assert len(traces) == after_first > 0
    assert int(tight.nfe) > int(loose.nfe)
    # Float32, tolerance 1e-6: the same number as with Python-float tolerances.
    eager = nd.log_likelihood(SCORE, SDE, X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(tight.logp, eager.logp, rtol=1e-6)


def test_one_euler_maruyama_step_is_the_reverse_drift():
    # With one step and `denoise`, Euler–Maruyama adds no noise: x_eps = x_T - b(T, x_T) (T -
    # eps) with b = `reverse_drift`, the public definition, vmapped over the batch.
    x_T = jr.normal(jr.key(2), (8, 2))
    sampler = nd.EulerMaruyama(1)
    xs, _ = nd.sample_from(sampler, SCORE, SDE, x_T, key=jr.key(3))
    drift = jax.vmap(lambda x: nd.reverse_drift(SDE, SCORE, 1.0, x))(x_T)
    np.testing.assert_allclose(xs, x_T - drift * (1.0 - sampler.eps), rtol=1e-6)


def test_probability_flow_drift_transports_the_gaussian_marginals():
    # For N(m, S) data the marginal mean alpha_t m moves as d/dt (alpha_t m) = f(t) alpha_t m,
    # and the probability-flow drift at the mean is exactly that (the score vanishes there).
    with jax.enable_x64(True):
        mean = jnp.array([0.5, -0.3])
        score = nd.GaussianScore(SDE, mean, jnp.array([[1.0, 0.6], [0.6, 0.8]]))
        t = 0.37
        at_mean = SDE.mean_coeff(t) * mean
        drift = nd.probability_flow_drift(SDE, score, t, at_mean)
        dalpha = jax.grad(SDE.mean_coeff)(t)
        np.testing.assert_allclose(drift, dalpha * mean, rtol=1e-12)

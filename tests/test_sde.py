"""NeuralSDE statistics: OU moments, noise shapes, Itô vs Stratonovich, keys, inference mode."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import central_differences

import neurde
from neurde.data import ou_mean, ou_variance

THETA, MU, SIGMA = 1.5, 0.3, 0.8
N_PATHS = 20_000


def ou_model(**kwargs):
    return neurde.NeuralSDE(
        lambda t, y, args: THETA * (MU - y),
        lambda t, y, args: SIGMA * jnp.ones_like(y),
        **kwargs,
    )


@pytest.fixture(scope="module")
def ou_paths():
    # float64, dt = 1/200: Euler–Maruyama's bias on OU moments is O(dt) ~ 1e-3 relative,
    # well below the statistical tolerance.
    with jax.enable_x64(True):
        model = ou_model(dt0=1 / 200, t1=2.0, brownian="grid")
        ts = jnp.array([0.25, 0.5, 1.0, 2.0])
        y0 = jnp.array([1.0])
        paths = jax.jit(jax.vmap(lambda k: model(y0, ts, key=k)))(jr.split(jr.key(0), N_PATHS))
        return np.asarray(ts), np.asarray(paths[..., 0])


def test_ou_mean_and_variance_match_closed_form(ou_paths):
    ts, paths = ou_paths
    mean, var = paths.mean(0), paths.var(0)
    exact_mean = np.asarray(ou_mean(ts, 1.0, THETA, MU))
    exact_var = np.asarray(ou_variance(ts, THETA, SIGMA))
    # Tolerance: 4 standard errors of the estimators plus 1% for the discretization bias.
    se_mean = np.sqrt(exact_var / N_PATHS)
    se_var = exact_var * np.sqrt(2 / N_PATHS)
    assert np.all(np.abs(mean - exact_mean) < 4 * se_mean + 0.01 * np.abs(exact_mean))
    assert np.all(np.abs(var - exact_var) < 4 * se_var + 0.01 * exact_var)


def test_same_key_same_path_and_different_keys_differ():
    model = ou_model(dt0=0.01, t1=1.0)
    ts = jnp.linspace(0.1, 1.0, 10)
    a = model(jnp.ones(3), ts, key=jr.key(7))
    b = model(jnp.ones(3), ts, key=jr.key(7))
    c = model(jnp.ones(3), ts, key=jr.key(8))
    np.testing.assert_array_equal(a, b)
    assert np.max(np.abs(a - c)) > 1e-2


def test_inference_mode_is_the_drift_ode():
    model = ou_model(dt0=0.01, t1=1.0)
    quiet = eqx.nn.inference_mode(model)
    ts = jnp.linspace(0.1, 1.0, 10)
    out = quiet(jnp.ones(2), ts)
    np.testing.assert_array_equal(out, quiet(jnp.ones(2), ts))
    ode = neurde.NeuralODE(model.drift, solver=diffrax.Euler(), dt0=0.01, t1=1.0)
    np.testing.assert_allclose(out, ode(jnp.ones(2), ts), rtol=1e-6)


def _terminal_samples(model, y0, n=N_PATHS):
    return np.asarray(jax.jit(jax.vmap(lambda k: model(y0, key=k)))(jr.split(jr.key(1), n)))


def test_scalar_noise_is_shared_and_diagonal_is_independent():
    grid = dict(dt0=0.02, t1=1.0, brownian="grid")
    ys_scalar = _terminal_samples(ou_model(noise="scalar", **grid), jnp.zeros(2))
    ys_diag = _terminal_samples(ou_model(**grid), jnp.zeros(2))
    np.testing.assert_allclose(ys_scalar[:, 0], ys_scalar[:, 1])
    # Correlation of independent coordinates: |r| < 4 / sqrt(N) with N samples.
    r = np.corrcoef(ys_diag.T)[0, 1]
    assert abs(r) < 4 / np.sqrt(N_PATHS)


def test_general_noise_covariance_is_g_g_transpose():
    # dy = G dW with constant G (2x3): Cov y(t) = G G^T t.
    g = np.array([[1.0, 0.5, 0.0], [0.0, -0.5, 2.0]])
    model = neurde.NeuralSDE(
        lambda t, y, args: jnp.zeros_like(y),
        lambda t, y, args: jnp.asarray(g, y.dtype),
        noise="general",
        noise_size=3,
        dt0=0.1,
        t1=1.0,
        brownian="grid",
    )
    ys = _terminal_samples(model, jnp.zeros(2))
    cov = np.cov(ys.T)
    # Entry-wise standard error of a sample covariance <= sqrt((s_ii s_jj + s_ij^2) / N).
    exact = g @ g.T
    se = np.sqrt((np.outer(np.diag(exact), np.diag(exact)) + exact**2) / N_PATHS)
    assert np.all(np.abs(cov - exact) < 4 * se)


@pytest.mark.parametrize(
    ("solver", "correction"),
    [(diffrax.Euler(), 0.0), (diffrax.ItoMilstein(), 0.0), (diffrax.Heun(), 0.5)],
)
def test_ito_and_stratonovich_calculus(solver, correction):
    # Geometric Brownian motion dy = mu y dt + s y dW: E y(1) = exp(mu + correction s^2) with
    # correction 0 (Itô) or 1/2 (Stratonovich). Tolerance: 4 standard errors + 1% bias.
    mu, s = 0.2, 0.5
    model = neurde.NeuralSDE(
        lambda t, y, args: mu * y,
        lambda t, y, args: s * y,
        solver=solver,
        stepsize_controller=diffrax.ConstantStepSize(),
        dt0=0.01,
        t1=1.0,
    )
    ys = _terminal_samples(model, jnp.ones(1))[:, 0]
    exact = np.exp(mu + correction * s**2)
    se = ys.std() / np.sqrt(ys.size)
    assert abs(ys.mean() - exact) < 4 * se + 0.01 * exact


def test_adaptive_solve_with_virtual_brownian_tree():
    model = ou_model(
        solver=diffrax.Heun(), dt0=0.05, rtol=1e-3, atol=1e-3, t1=1.0, brownian_tol=1e-4
    )
    sol = model.solve(jnp.ones(2), key=jr.key(3))
    stats = sol.stats
    assert int(stats["num_rejected_steps"]) >= 0
    assert np.all(np.isfinite(np.asarray(sol.ys)))


def test_pathwise_gradient_matches_finite_differences():
    # With the key fixed the sample is a smooth function of the parameters and of y0.
    with jax.enable_x64(True):
        drift = neurde.MLPField(2, 8, 1, activation=jnp.tanh, key=jr.key(0))
        diffusion = neurde.MLPField(2, 8, 1, final_activation=jnp.tanh, key=jr.key(1))
        model = neurde.NeuralSDE(drift, diffusion, dt0=0.05, t1=1.0)
        params, static = eqx.partition(model, neurde.trainable(model))
        flat, unravel = jax.flatten_util.ravel_pytree(params)

        @jax.jit
        def loss(vec):
            m = eqx.combine(unravel(vec), static)
            return jnp.sum(m(jnp.array([0.2, -0.4]), key=jr.key(5)) ** 2)

        np.testing.assert_allclose(
            jax.jit(jax.grad(loss))(flat), central_differences(loss, flat), rtol=1e-6, atol=1e-9
        )


def test_missing_key_in_training_mode():
    with pytest.raises(ValueError, match=r"`key` is needed.*inference_mode"):
        ou_model(dt0=0.1, t1=1.0)(jnp.ones(2))


def test_general_noise_needs_noise_size():
    with pytest.raises(ValueError, match="general noise needs `noise_size`"):
        ou_model(noise="general", dt0=0.1)


def test_milstein_with_general_noise():
    with pytest.raises(ValueError, match="needs diagonal or scalar noise"):
        ou_model(noise="general", noise_size=2, solver=diffrax.ItoMilstein(), dt0=0.1)


def test_diffusion_of_wrong_shape():
    model = ou_model(noise="general", noise_size=3, dt0=0.1, t1=1.0)
    with pytest.raises(ValueError, match=r"diffusion \(noise='general'\) returns shape"):
        model(jnp.ones(2), key=jr.key(0))


def test_unsafe_path_with_adaptive_steps():
    with pytest.raises(ValueError, match="constant step size; got an adaptive"):
        ou_model(solver=diffrax.Heun(), brownian="grid", dt0=0.1)


def test_state_must_be_a_vector():
    with pytest.raises(ValueError, match=r"one vector \(shape \(d,\)\)"):
        ou_model(dt0=0.1, t1=1.0)(jnp.ones((2, 2)), key=jr.key(0))


def test_unknown_noise_type():
    with pytest.raises(ValueError, match="unknown `noise='diag'`"):
        ou_model(noise="diag", dt0=0.1)


@pytest.mark.parametrize("solver", [diffrax.SRA1(), diffrax.ShARK()], ids=["sra1", "shark"])
def test_solvers_that_need_levy_areas_run_on_the_tree(solver):
    # They declare an abstract Lévy area; the tree is built with the concrete one (space-time).
    # OU with additive noise, the terminal mean against the closed form.
    model = ou_model(solver=solver, dt0=0.05, t1=1.0)
    ys = _terminal_samples(model, jnp.array([1.0]), n=2000)[:, 0]
    exact = float(ou_mean(1.0, 1.0, THETA, MU))
    se = float(np.sqrt(ou_variance(1.0, THETA, SIGMA) / 2000))
    assert abs(ys.mean() - exact) < 4 * se

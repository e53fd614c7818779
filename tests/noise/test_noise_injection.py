"""Noise-injection transforms on continuous models: one Euler–Maruyama step, composition,
inference mode, and noise added to an existing SDE."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import neurde
from neurde import noise

H = 0.1
N = 20_000
Y0 = jnp.array([0.5, -1.0, 2.0])
A = jnp.array([[-0.5, 0.3, 0.0], [0.2, -0.4, 0.1], [0.0, -0.3, 0.2]])


def _ode():
    # One step of size H over [0, H].
    return neurde.NeuralODE(neurde.LinearField(A), t1=H, dt0=H)


@eqx.filter_jit
def _increments(model, key):
    keys = jr.split(key, N)
    return jax.vmap(lambda k: model(Y0, key=k))(keys) - Y0


def _check_moments(dy, mean, cov):
    """Sample mean within 4 standard errors; covariance within 5% of its scale (N = 20 000:
    the standard error of a variance is sqrt(2/N) ~ 1% of it)."""
    dy = np.asarray(dy, dtype=np.float64)
    se = np.sqrt(np.diag(cov) / len(dy))
    np.testing.assert_array_less(np.abs(dy.mean(0) - mean), 4 * se + 1e-7)
    scale = np.max(np.diag(cov))
    np.testing.assert_allclose(np.cov(dy.T), cov, atol=0.05 * scale)


F0 = np.asarray(A @ Y0)


@pytest.mark.parametrize(
    ("transform", "g"),
    [
        (lambda m: noise.additive(m, 0.3), 0.3 * np.ones(3)),
        (lambda m: noise.multiplicative(m, 0.4), 0.4 * np.asarray(Y0)),
        (lambda m: noise.dropout_diffusion(m, 0.2), np.sqrt(0.2 / 0.8) * F0),
        (lambda m: noise.additive(m, 0.3, schedule=lambda t: 2.0 + t), 0.6 * np.ones(3)),
    ],
    ids=["additive", "multiplicative", "dropout", "scheduled"],
)
def test_one_euler_maruyama_step_has_drift_mean_and_ggt_covariance(transform, g):
    # E[dy] = f(y0) h and Cov[dy] = G G^T h with G = diag(g), for one step of size h.
    dy = _increments(transform(_ode()), jr.key(0))
    _check_moments(dy, F0 * H, np.diag(g**2) * H)


def test_composed_noises_sum_their_covariances_in_either_order():
    a_then_m = noise.multiplicative(noise.additive(_ode(), 0.3), 0.4)
    m_then_a = noise.additive(noise.multiplicative(_ode(), 0.4), 0.3)
    dy = _increments(a_then_m, jr.key(1))
    g2 = 0.3**2 + (0.4 * np.asarray(Y0)) ** 2
    _check_moments(dy, F0 * H, np.diag(g2) * H)
    # The combined diffusion sqrt(g_a^2 + g_m^2) is symmetric, so the same key gives the same
    # path whatever the order.
    np.testing.assert_array_equal(dy, _increments(m_then_a, jr.key(1)))
    # Each transform wraps the model it is given; the noises meet in one diffusion.
    assert isinstance(a_then_m.model, noise.NoisyModel)
    assert isinstance(a_then_m.model.model, neurde.NeuralODE)


def test_noise_on_a_diagonal_sde_adds_to_its_variance():
    sde = neurde.NeuralSDE(neurde.LinearField(A), lambda t, y, args: 0.2 * jnp.ones(3), t1=H, dt0=H)
    dy = _increments(noise.additive(sde, 0.3), jr.key(2))
    _check_moments(dy, F0 * H, np.diag(np.full(3, 0.2**2 + 0.3**2)) * H)


def test_noise_on_a_scalar_noise_sde_adds_independent_columns():
    # dY = f dt + g dW (one W shared): covariance g g^T h, plus sigma^2 I h for the new noise.
    g = jnp.array([0.3, -0.2, 0.1])
    sde = neurde.NeuralSDE(neurde.LinearField(A), lambda t, y, args: g, noise="scalar", t1=H, dt0=H)
    noisy = noise.additive(sde, 0.25)
    dy = _increments(noisy, jr.key(3))
    cov = (np.outer(g, g) + 0.25**2 * np.eye(3)) * H
    _check_moments(dy, F0 * H, cov)
    problem = noisy.problem(Y0, None, args=None, key=jr.key(0))
    assert problem.noise == "general" and problem.noise_size == 4


def test_inference_mode_is_exactly_the_ode():
    ode = neurde.NeuralODE(neurde.MLPField(3, 16, 2, key=jr.key(0)), t1=1.0)
    noisy = noise.dropout_diffusion(noise.additive(ode, 0.5, dt0=0.05), 0.3)
    off = eqx.nn.inference_mode(noisy)
    ts = jnp.linspace(0.2, 1.0, 5)
    np.testing.assert_array_equal(off(Y0, ts), ode(Y0, ts))
    np.testing.assert_array_equal(off(Y0), ode(Y0))
    # ... and the stats are those of the ODE's own (adaptive Tsit5) solve.
    assert int(off.solve(Y0).stats["nfe"]) == int(ode.solve(Y0).stats["nfe"])
    # With the noise on, the SDE runs Euler–Maruyama on the grid dt0 = 0.05: 20 steps.
    assert int(noisy.solve(Y0, key=jr.key(0)).stats["num_steps"]) == 20


def test_inference_mode_of_a_noisy_sde_is_its_drift_ode():
    sde = neurde.NeuralSDE(neurde.LinearField(A), lambda t, y, args: 0.1 * y, t1=1.0, dt0=0.1)
    off = eqx.nn.inference_mode(noise.additive(sde, 0.3))
    np.testing.assert_array_equal(off(Y0), eqx.nn.inference_mode(sde)(Y0))


def test_noise_inside_a_user_module_is_placed_with_where():
    class Model(eqx.Module):
        embed: eqx.nn.Linear
        ode: neurde.NeuralODE

        def __call__(self, x, *, key=None):
            return self.ode(self.embed(x), key=key)

    model = Model(eqx.nn.Linear(2, 3, key=jr.key(0)), _ode())
    noisy = noise.additive(model, 0.3, where=lambda m: m.ode)
    assert isinstance(noisy.ode, noise.NoisyModel) and noisy.embed.weight is model.embed.weight
    x = jnp.ones(2)
    assert not np.allclose(noisy(x, key=jr.key(0)), noisy(x, key=jr.key(1)))
    np.testing.assert_array_equal(eqx.nn.inference_mode(noisy)(x), model(x))


def test_gradients_flow_to_the_field_through_the_noisy_solve():
    ode = neurde.NeuralODE(neurde.MLPField(3, 8, 1, key=jr.key(0)), t1=0.5, dt0=0.1)
    noisy = noise.multiplicative(ode, 0.2)

    @eqx.filter_grad
    def grad(m):
        return jnp.sum(m(Y0, key=jr.key(0)) ** 2)

    g = grad(noisy)
    leaves = jax.tree.leaves(eqx.filter(g.model, eqx.is_inexact_array))
    assert all(np.all(np.isfinite(x)) for x in leaves)
    assert any(np.any(x != 0) for x in leaves)


def test_adaptive_stratonovich_solver_can_be_chosen():
    ode = neurde.NeuralODE(neurde.LinearField(A), t1=1.0)
    noisy = noise.additive(ode, 0.1, solver=diffrax.Heun(), dt0=0.05)
    assert noisy.problem(Y0, None, args=None, key=jr.key(0)).brownian == "tree"
    out = noisy(Y0, key=jr.key(0))
    assert out.shape == (3,) and np.all(np.isfinite(out))

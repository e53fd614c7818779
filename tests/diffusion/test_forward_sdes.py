"""Forward SDEs: closed-form marginals against simulation, log-SNR inverses, DDPM limit."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import fitted_order
from scipy import stats

import neurde.diffusion as nd

SDES = [nd.VPSDE(), nd.SubVPSDE(), nd.VESDE(sigma_min=0.01, sigma_max=50.0)]
IDS = ["VP", "subVP", "VE"]
N_PATHS = 20_000


@eqx.filter_jit
def euler_maruyama_paths(sde, x0, key, steps=1000):
    """Euler–Maruyama paths of dx = f(t) x dt + g(t) dW, saved every `steps // 10` steps."""
    dt = 1.0 / steps

    def step(x, inputs):
        t, k = inputs
        dw = jnp.sqrt(dt) * jr.normal(k, x.shape)
        x = x + sde.drift(t, x) * dt + sde.diffusion(t) * dw
        return x, x

    ts = jnp.arange(steps) * dt
    _, xs = jax.lax.scan(step, jnp.full((N_PATHS,), x0), (ts, jr.split(key, steps)))
    return xs[steps // 10 - 1 :: steps // 10]


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_marginals_match_euler_maruyama_simulation(sde):
    # Simulate from x0 = 1.5 (dt = 1/1000) and compare mean and variance at t = 0.1, 0.2,
    # ..., 1 with the closed forms. Tolerance: 4 standard errors plus 2% for the O(dt) bias
    # (VE's g^2 grows like exp(17 t), so its left-point rule is ~0.9% low).
    paths = np.asarray(euler_maruyama_paths(sde, 1.5, jr.key(0)), np.float64)
    ts = jnp.linspace(0.1, 1.0, 10)
    mean, std = sde.marginal(jnp.asarray(1.5), ts)
    mean, var = np.asarray(mean), np.asarray(std) ** 2
    se_mean, se_var = np.sqrt(var / N_PATHS), var * np.sqrt(2 / N_PATHS)
    np.testing.assert_array_less(np.abs(paths.mean(1) - mean), 4 * se_mean + 0.02 * np.abs(mean))
    np.testing.assert_array_less(np.abs(paths.var(1) - var), 4 * se_var + 0.02 * var)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_diffusion_is_consistent_with_the_marginals(sde):
    # For x_t = alpha_t x0 + sigma_t z to be the SDE's transition: f = d log(alpha)/dt and
    # g^2 = d sigma^2/dt - 2 f sigma^2 (Lu et al. 2022, eq. 2.3; Kingma et al. 2021).
    with jax.enable_x64(True):
        ts = jnp.linspace(1e-3, 1.0, 50, dtype=jnp.float64)
        dlog_alpha = jax.vmap(jax.grad(lambda t: jnp.log(sde.mean_coeff(t))))(ts)
        dvar = jax.vmap(jax.grad(lambda t: sde.std(t) ** 2))(ts)
        f, g = sde.drift_coeff(ts), sde.diffusion(ts)
        np.testing.assert_allclose(dlog_alpha, f, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(g**2, dvar - 2 * f * sde.std(ts) ** 2, rtol=1e-10)


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_log_snr_and_importance_integrals_invert_in_closed_form(sde):
    with jax.enable_x64(True):
        ts = jnp.geomspace(1e-5, 1.0, 60, dtype=jnp.float64)
        lam = sde.log_snr(ts)
        np.testing.assert_allclose(lam, jnp.log(sde.mean_coeff(ts) / sde.std(ts)), rtol=1e-12)
        assert np.all(np.diff(np.asarray(lam)) < 0)
        np.testing.assert_allclose(sde.time_from_log_snr(lam), ts, rtol=1e-9)
        phi = sde.likelihood_weight_integral(ts)
        np.testing.assert_allclose(sde.likelihood_weight_integral_inverse(phi), ts, rtol=1e-9)
        # Phi' = g^2 / sigma^2.
        dphi = jax.vmap(jax.grad(sde.likelihood_weight_integral))(ts)
        np.testing.assert_allclose(dphi, sde.diffusion(ts) ** 2 / sde.std(ts) ** 2, rtol=1e-9)


def test_ve_std_subtracts_sigma_min_and_vp_preserves_variance():
    ve = nd.VESDE(0.01, 50.0)
    np.testing.assert_allclose(ve.std(0.0), 0.0, atol=1e-7)
    np.testing.assert_allclose(ve.std(1.0) ** 2, 50.0**2 - 0.01**2, rtol=1e-5)
    vp, sub = nd.VPSDE(), nd.SubVPSDE()
    ts = jnp.linspace(0.01, 1.0, 20)
    np.testing.assert_allclose(vp.mean_coeff(ts) ** 2 + vp.std(ts) ** 2, 1.0, rtol=1e-6)
    np.testing.assert_array_less(sub.std(ts), vp.std(ts))


@pytest.mark.parametrize("sde", SDES, ids=IDS)
def test_prior_sampling_and_log_density(sde):
    x = sde.sample_prior(jr.key(0), (50_000,))
    s = sde.prior_std
    assert abs(float(jnp.std(x)) / s - 1) < 4 * np.sqrt(0.5 / 50_000)
    point = jnp.array([0.3, -1.0, 2.0]) * s
    expected = stats.norm(scale=s).logpdf(np.asarray(point)).sum()
    np.testing.assert_allclose(sde.prior_logp(point), expected, rtol=1e-5)


def test_ddpm_alphas_cumprod_converge_to_the_vp_marginal():
    # max_i |alphabar_i - alpha_{t_i}^2| at t_i = i / N shrinks like 1/N (fitted slope).
    sde = nd.VPSDE()
    ns, errors = [100, 1000, 10_000], []
    with jax.enable_x64(True):
        for n in ns:
            schedule = jax.jit(nd.ddpm_schedule, static_argnums=1)(sde, n)
            exact = sde.mean_coeff(schedule.times) ** 2
            errors.append(float(jnp.max(jnp.abs(schedule.alphas_cumprod - exact))))
        ho = nd.ddpm_schedule(sde, 1000)
        np.testing.assert_allclose(ho.betas[jnp.array([0, -1])], [1e-4, 0.02], rtol=1e-12)
    assert errors[-1] < 1e-4, errors
    assert abs(fitted_order([1 / n for n in ns], errors) - 1) < 0.15, errors


def test_respaced_betas_reproduce_the_marginal_exactly():
    sde = nd.VPSDE()
    with jax.enable_x64(True):
        times = jnp.linspace(1e-3, 1.0, 17, dtype=jnp.float64)
        betas = nd.respaced_betas(sde, times)
        np.testing.assert_allclose(jnp.cumprod(1 - betas), sde.mean_coeff(times) ** 2, rtol=1e-12)

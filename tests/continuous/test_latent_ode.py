"""LatentODE: the KL in closed form (against Monte Carlo and by hand), the reparameterized
sample and the ELBO against hand computations, interpolation and extrapolation, gradients
against finite differences, the family's behavior (vmap, fit, ensembles, checkpoints,
noise on the latent ODE), the errors, and (slow) the acceptance ordering of the paper."""

import functools

import equinox as eqx
import jax
import jax.flatten_util
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from conftest import central_differences

import neurde
from neurde import noise
from neurde.continuous import ODERNN, IrregularSeries, LatentODE, elbo, gaussian_kl

TIMES = np.array([0.2, 0.5, 0.8, 1.1])
VALUES = np.array([[0.3], [0.7], [0.1], [-0.4]])
MASK = np.array([[1.0], [0.0], [1.0], [1.0]])
FAST = {"solver": neurde.RK4(), "dt0": 0.1}


# One compiled call shared by the tests (eager calls would re-trace the encoder's scan).
_call = eqx.filter_jit(lambda model, series, ts, key=None: model(series, ts, key=key))


def _series(dtype=jnp.float32):
    return IrregularSeries(*(jnp.asarray(a, dtype) for a in (TIMES, VALUES, MASK)))


def _model(key=0, **kw):
    encoder = ODERNN(1, 4, 4, width_size=8, key=jr.key(key + 100), solver=neurde.RK4(), dt0=0.5)
    return LatentODE(1, 2, encoder=encoder, width_size=8, key=jr.key(key), **{**FAST, **kw})


def test_gaussian_kl_closed_form_against_monte_carlo_and_by_hand():
    mean, std = jnp.array([0.5, -1.0, 0.2]), jnp.array([0.8, 1.5, 0.3])
    by_hand = sum(
        np.log(1 / s) + (s**2 + m**2) / 2 - 0.5
        for m, s in zip(np.asarray(mean), np.asarray(std), strict=True)
    )
    np.testing.assert_allclose(gaussian_kl(mean, std), by_hand, rtol=1e-6)
    z = mean + std * jr.normal(jr.key(0), (200_000, 3))
    log_q = jnp.sum(jax.scipy.stats.norm.logpdf(z, mean, std), axis=1)
    log_p = jnp.sum(jax.scipy.stats.norm.logpdf(z), axis=1)
    monte_carlo = jnp.mean(log_q - log_p)
    assert abs(float(monte_carlo) - by_hand) < 0.02
    assert float(gaussian_kl(jnp.zeros(2), jnp.ones(2))) == 0.0
    with pytest.raises(ValueError, match="gaussian_kl: `mean` and `std` must have the same shape"):
        gaussian_kl(jnp.zeros(2), jnp.ones(3))


def test_solve_is_encoder_sample_latent_solve_decoder():
    model = _model()
    series, ts, key = _series(), jnp.array([0.2, 0.8, 1.5, 2.0]), jr.key(1)
    mean, std, encoded = model.posterior(series)
    hs, _, _ = model.encoder.hidden(series, jnp.zeros(1), reverse=True)
    np.testing.assert_allclose(
        jnp.concatenate([mean, jnp.log(std)]), model.encoder.readout(hs[0]), rtol=1e-5
    )
    z0 = mean + std * jr.normal(jr.fold_in(key, 102), (2,))
    by_hand = jax.vmap(model.decoder)(model.model(z0, ts))
    solution = eqx.filter_jit(model.solve)(series, ts, key=key)
    np.testing.assert_allclose(solution.ys, by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(solution.extras["kl"], gaussian_kl(mean, std), rtol=1e-6)
    inner = model.model.solve(z0, ts)
    total = int(inner.stats["nfe"]) + int(encoded.stats["nfe"])
    assert int(solution.stats["nfe"]) == total
    # Inference mode: the posterior mean, no key needed.
    quiet = eqx.nn.inference_mode(model)
    mean_path = jax.vmap(model.decoder)(model.model(mean, ts))
    np.testing.assert_allclose(_call(quiet, series, ts), mean_path, rtol=1e-5, atol=1e-6)
    # Other keys, other samples.
    assert np.abs(np.asarray(_call(model, series, ts, jr.key(2)) - solution.ys)).max() > 1e-4


def test_elbo_is_the_masked_gaussian_likelihood_minus_the_kl():
    model = _model()
    series, key, sigma = _series(), jr.key(3), 0.2
    solution = model.solve(series, series.times, key=key)
    residual = (VALUES - np.asarray(solution.ys)) / sigma
    log_lik = np.sum(MASK * (-0.5 * residual**2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)))
    expected = log_lik - float(solution.extras["kl"])
    value = elbo(model, series, series.times, VALUES, MASK, key=key, noise_std=sigma)
    np.testing.assert_allclose(value, expected, rtol=1e-5)
    # Extrapolation: encode the first half, score the second.
    first = IrregularSeries(series.times[:2], series.values[:2], series.mask[:2])
    value = elbo(model, first, series.times[2:], VALUES[2:], MASK[2:], key=key, noise_std=sigma)
    assert np.isfinite(float(value))


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        encoder = ODERNN(1, 2, 2, width_size=2, key=jr.key(5), rtol=1e-10, atol=1e-12)
        model = LatentODE(
            1, 1, encoder=encoder, width_size=2, key=jr.key(6), rtol=1e-10, atol=1e-12
        )
        series = _series(jnp.float64)
        # `trainable`: not the tolerances, which a difference step of 1e-6 would make negative.
        params, static = eqx.partition(model, neurde.trainable(model))
        flat, unflatten = jax.flatten_util.ravel_pytree(params)

        def loss(p):
            m = eqx.combine(unflatten(p), static)
            return -elbo(m, series, series.times, VALUES, MASK, key=jr.key(7), noise_std=0.5)

        loss = jax.jit(loss)
        grad = jax.grad(loss)(flat)
        # atol: the adaptive steps move with the parameters, an O(tol) error in the differences.
        np.testing.assert_allclose(grad, central_differences(loss, flat), rtol=1e-5, atol=1e-6)


def _data():
    traj = neurde.data.periodic(16, times=10, keep_prob=0.7, key=jr.key(8))
    series = neurde.data.irregular_series(traj)
    return jax.tree.map(lambda x: x[:, :5], series), jax.tree.map(lambda x: x[:, 5:], series)


def _loss(model, batch, key):
    first, second = batch
    keys = jr.split(key, first.times.shape[0])
    values = jax.vmap(
        lambda x, y, k: elbo(model, x, y.times, y.values, y.mask, key=k, noise_std=0.1)
    )(first, second, keys)
    return -jnp.mean(values) / 10


def test_vmap_fit_ensemble_checkpoint(tmp_path):
    first, second = _data()
    model = _model(1)
    out = jax.vmap(lambda x, t: model(x, t, key=jr.key(0)))(first, second.times)
    assert out.shape == (16, 5, 1)
    single = _call(model, jax.tree.map(lambda x: x[3], first), second.times[3], jr.key(0))
    np.testing.assert_allclose(out[3], single, rtol=1e-5, atol=1e-6)
    # In inference mode (z0 = the posterior mean) the loss is deterministic, so a short
    # run shows the decrease; the sampled path is tested above.
    result = neurde.fit(
        eqx.nn.inference_mode(model),
        _loss,
        (first, second),
        steps=25,
        key=jr.key(9),
        optim=optax.adam(1e-2),
        progress=False,
    )
    losses = result.history.loss
    assert float(np.mean(losses[-5:])) < 0.95 * float(np.mean(losses[:5]))
    ensemble = neurde.make_ensemble(_model_from_key, 2, key=jr.key(10))
    x = jax.tree.map(lambda a: a[0], first)
    preds = eqx.filter_vmap(lambda m: m(x, second.times[0], key=jr.key(0)))(ensemble)
    assert preds.shape == (2, 5, 1) and float(jnp.abs(preds[0] - preds[1]).max()) > 0
    neurde.save(tmp_path / "latent.eqx", result.model)
    loaded = neurde.load(tmp_path / "latent.eqx", _model(2))
    np.testing.assert_array_equal(
        _call(loaded, x, second.times[0], jr.key(1)),
        _call(result.model, x, second.times[0], jr.key(1)),
    )


def _model_from_key(key):
    k1, k2 = jr.split(key)
    encoder = ODERNN(1, 4, 4, width_size=8, key=k1, solver=neurde.RK4(), dt0=0.5)
    return LatentODE(1, 2, encoder=encoder, width_size=8, key=k2, **FAST)


def test_noise_acts_on_the_latent_ode():
    model = _model()
    noisy = noise.additive(model, 0.5, dt0=0.1)
    assert type(noisy.model).__name__ == "NoisyModel" and isinstance(noisy.encoder, ODERNN)
    by_hand = eqx.tree_at(lambda m: m.model, model, noise.additive(model.model, 0.5, dt0=0.1))
    series, ts, key = _series(), jnp.array([0.5, 1.0, 2.0]), jr.key(11)
    out = _call(noisy, series, ts, key)
    np.testing.assert_array_equal(out, _call(by_hand, series, ts, key))
    assert np.abs(np.asarray(out - _call(model, series, ts, key))).max() > 1e-3
    quiet = eqx.nn.inference_mode(noisy)
    np.testing.assert_allclose(
        _call(quiet, series, ts), _call(eqx.nn.inference_mode(model), series, ts), rtol=1e-6
    )
    penalized = noise.rnode(model, estimator="exact")
    extras = penalized.solve(series, ts, key=key).extras
    assert {"kl", "kinetic", "jacobian"} <= set(extras)


def test_errors():
    model, series, ts = _model(), _series(), jnp.array([1.5])
    with pytest.raises(ValueError, match="LatentODE: `ts` \\(the prediction times\\) is required"):
        model(series, key=jr.key(0))
    with pytest.raises(ValueError, match="LatentODE: sampling z0 from the posterior needs a key"):
        model(series, ts)
    with pytest.raises(
        TypeError, match=r"LatentODE: `y0` must be a `neurde\.continuous\.Irregular"
    ):
        model(jnp.zeros((4, 1)), ts, key=jr.key(0))
    with pytest.raises(ValueError, match="LatentODE: the series starts before the latent ODE's t0"):
        _model(t0=0.5)(series, ts, key=jr.key(0))
    with pytest.raises(ValueError, match="LatentODE: `t1` must be None"):
        _model(t1=2.0)
    with pytest.raises(ValueError, match="2 \\* latent_size = 4 outputs, got 3"):
        LatentODE(1, 2, encoder=ODERNN(1, 4, 3, key=jr.key(0)), key=jr.key(0))
    with pytest.raises(ValueError, match="LatentODE: `latent_size` must be a positive int"):
        LatentODE(1, 0, key=jr.key(0))
    with pytest.raises(ValueError, match="NeuralODE: `ts` must lie inside"):
        model(series, jnp.array([-1.0, 1.0]), key=jr.key(0))
    with pytest.raises(ValueError, match="elbo: `target_values` must have shape"):
        elbo(model, series, jnp.array([1.5, 2.0]), jnp.zeros((3, 1)), jnp.ones((3, 1)), key=None)
    with pytest.raises(ValueError, match="elbo: `target_mask` must have the shape"):
        elbo(model, series, ts, jnp.zeros((1, 1)), jnp.ones(1), key=None)
    with pytest.raises(ValueError, match="elbo: `noise_std` must be > 0"):
        elbo(model, series, ts, jnp.zeros((1, 1)), jnp.ones((1, 1)), key=None, noise_std=0.0)


@functools.cache
def _acceptance_numbers():
    from neurde.experiments.zoo_latent import train_latent

    return train_latent(size="quick", seed=0)[0]


@pytest.mark.expensive
def test_acceptance_continuous_models_extrapolate_better_than_the_rnn():
    numbers = _acceptance_numbers()
    assert numbers["latent_ode_mse"] < numbers["rnn_mse"]
    assert numbers["ode_rnn_mse"] < numbers["rnn_mse"]


# Measured at size "quick" (protocol in neurde.experiments.zoo_latent: the authors' toy
# sizes, latent 10 = the baselines' hidden size, recognition ODE-RNN 20), test MSE at seeds
# 0-4: latent ODE 0.095, 0.083, 0.094, 0.134, 0.061; ODE-RNN 0.127, 0.091, 0.198, 0.126,
# 0.217; RNN 0.239, 0.187, 0.300, 0.236, 0.332 (medians 0.094, 0.127, 0.239: the paper's
# order; the ODE-RNN is ahead only at seed 3). With the earlier sizes (16 units for the
# encoder and the baselines, latent 4) the ODE-RNN was ahead at seeds 0 and 1 (0.086 vs
# 0.089, 0.051 vs 0.090); z0 at the cut time with the ELBO of the second half only (what
# the authors' code does with --extrap) gave 0.088 and 0.132 there.
@pytest.mark.expensive
def test_acceptance_latent_ode_extrapolates_best():
    numbers = _acceptance_numbers()
    assert numbers["latent_ode_mse"] < numbers["ode_rnn_mse"]

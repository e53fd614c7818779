"""A `NeuralSDE` on a given Brownian motion (`brownian=` a Diffrax path or pre-drawn
increments): the same solve as on the key's path with the same numbers, equal to a
hand-written Euler–Maruyama loop on those increments, one path per example under `vmap`,
never trained, and clear errors where it cannot work."""

from unittest import mock

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import neurde

THETA, SIGMA, DT, T = 1.2, 0.5, 0.1, 1.0


def drift(t, y, args):
    return -THETA * y + jnp.sin(t)


def diffusion(t, y, args):
    return SIGMA * (1.0 + 0.1 * y**2)


def _model(**kwargs):
    return neurde.NeuralSDE(drift, diffusion, dt0=DT, t1=T, **kwargs)


def _euler_maruyama(y0, increments):
    """Euler–Maruyama by hand in NumPy (float64) on given increments."""
    y = np.asarray(y0, np.float64)
    for k, dw in enumerate(np.asarray(increments, np.float64)):
        t = k * DT
        y = y + (-THETA * y + np.sin(t)) * DT + SIGMA * (1.0 + 0.1 * y**2) * dw
    return y


def test_given_increments_reproduce_the_keys_path_and_a_hand_written_loop():
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, -0.5])
        drawn = neurde.GridBrownianPath(0.0, T, DT, (2,), key=jr.key(3))
        by_key = _model()(y0, key=jr.key(3))
        for given in (drawn, drawn.increments):
            model = _model(brownian=given)
            np.testing.assert_allclose(model(y0), by_key, rtol=0, atol=1e-14)
        np.testing.assert_allclose(by_key, _euler_maruyama(y0, drawn.increments), rtol=1e-13)


def test_given_increments_run_on_the_scan_and_other_paths_through_diffeqsolve():
    calls = []
    original = diffrax.diffeqsolve

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    increments = jr.normal(jr.key(0), (10, 2)) * np.sqrt(DT)
    tree = diffrax.VirtualBrownianTree(0.0, T, tol=DT / 2, shape=(2,), key=jr.key(1))
    with mock.patch.object(diffrax, "diffeqsolve", counting):
        _model(brownian=increments)(jnp.ones(2))
        assert not calls
        out = _model(brownian=tree)(jnp.ones(2))
        assert calls
    # Any Diffrax path: the same as diffeqsolve by hand on that tree.
    terms = diffrax.MultiTerm(
        diffrax.ODETerm(drift),
        diffrax.ControlTerm(lambda t, y, a: jnp.diag(diffusion(t, y, a)), tree),
    )
    ref = diffrax.diffeqsolve(terms, diffrax.Euler(), 0.0, T, DT, jnp.ones(2)).ys
    np.testing.assert_allclose(out, ref[0], rtol=1e-6)  # pyright: ignore[reportOptionalSubscript]


def test_one_path_per_example_under_vmap():
    with jax.enable_x64(True):
        model = _model()
        ys = jr.normal(jr.key(1), (4, 3))
        dws = jr.normal(jr.key(2), (4, 10, 3)) * np.sqrt(DT)
        out = jax.jit(jax.vmap(lambda y, dw: model.with_brownian(dw)(y)))(ys, dws)
        for i in range(4):
            np.testing.assert_allclose(out[i], _euler_maruyama(ys[i], dws[i]), rtol=1e-13)


def test_the_path_is_not_trained_and_is_saved(tmp_path):
    model = _model(brownian=jr.normal(jr.key(0), (10, 2)) * np.sqrt(DT))
    assert not any(jax.tree.leaves(neurde.trainable(model.path)))
    data = jr.normal(jr.key(1), (16, 2))

    def loss(m, batch, key):
        return jnp.mean(jax.vmap(m)(batch) ** 2)

    # The given path is the only array, and it is not a parameter: nothing to train.
    with pytest.raises(ValueError, match="`model` has no trainable arrays"):
        neurde.fit(model, loss, data, steps=3, optim=optax.adam(0.1), key=jr.key(2))
    neurde.save(tmp_path / "sde.eqx", model)
    loaded = neurde.load(tmp_path / "sde.eqx", _model(brownian=jnp.zeros((10, 2))))
    np.testing.assert_array_equal(loaded(data[0]), model(data[0]))


def test_inference_mode_ignores_the_path():
    model = _model(brownian=jr.normal(jr.key(0), (10, 2)))
    quiet = eqx.nn.inference_mode(model)
    ode = neurde.NeuralODE(drift, solver=diffrax.Euler(), dt0=DT, t1=T)
    np.testing.assert_allclose(quiet(jnp.ones(2)), ode(jnp.ones(2)), rtol=1e-6)


def test_errors():
    y0 = jnp.ones(2)
    with pytest.raises(ValueError, match=r"given Brownian motion \(`brownian=`\) has shape \(3,\)"):
        _model(brownian=jnp.zeros((10, 3)))(y0)
    with pytest.raises(ValueError, match=r"covers \[0.0, 0.5\], but the solve needs \[0.0, 1.0\]"):
        _model(brownian=jnp.zeros((5, 2)))(y0)
    with pytest.raises(ValueError, match=r"lie on the grid of `dt0`.*pass `dt0=...`"):
        adaptive = dict(solver=diffrax.Heun(), rtol=1e-3, atol=1e-3)
        neurde.NeuralSDE(drift, diffusion, t1=T, brownian=jnp.zeros((10, 2)), **adaptive)
    with pytest.raises(TypeError, match=r"`brownian` must be 'grid', 'tree', None, a Diffrax"):
        _model(brownian=object())
    with pytest.raises(ValueError, match=r"`brownian` must be 'tree' or 'grid'"):
        _model(brownian="sobol")
    given = _model(brownian=jnp.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"NoisyModel: the wrapped SDE runs on a given Brownian"):
        neurde.noise.additive(given, 0.1)(y0, key=jr.key(0))
    with pytest.raises(ValueError, match=r"STEER: the wrapped SDE runs on given increments"):
        neurde.noise.steer(given, 0.2)(y0, key=jr.key(0))
    with pytest.raises(ValueError, match=r"pass exactly one of `key`.*and `increments`"):
        neurde.GridBrownianPath(0.0, 1.0, 0.1, (2,))
    with pytest.raises(ValueError, match=r"`increments` must have shape \(10, \*shape\)"):
        neurde.GridBrownianPath(0.0, 1.0, 0.1, increments=jnp.zeros((9, 2)))

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import lotka_volterra, lotka_volterra_field, lotka_volterra_invariant

_PARAMS = (1.5, 1.0, 3.0, 1.0)


def test_invariant_conserved_along_clean_trajectories():
    with jax.enable_x64(True):
        traj = lotka_volterra(16, 60, noise=0.1, dtype=jnp.float64, key=jr.key(0))
        invariant = np.asarray(lotka_volterra_invariant(traj.clean, *_PARAMS))
        noisy = np.asarray(lotka_volterra_invariant(jnp.abs(traj.ys), *_PARAMS))
    assert traj.clean.dtype == jnp.float64
    # Solver at rtol = atol = 1e-8; the invariant drifts by ~1e-8, bound 1e-6.
    np.testing.assert_allclose(
        invariant, np.broadcast_to(invariant[:, :1], invariant.shape), atol=1e-6
    )
    # The check has teeth: noisy observations do not conserve it.
    assert np.abs(noisy - noisy[:, :1]).max() > 1e-2


def test_invariant_is_conserved_by_the_field():
    # dV/dt = grad V . f = 0 at arbitrary positive states, independently of any solver.
    states = jr.uniform(jr.key(1), (100, 2), minval=0.1, maxval=5.0)
    grad = jax.vmap(jax.grad(lambda y: lotka_volterra_invariant(y, *_PARAMS)))(states)
    field = jax.vmap(lambda y: lotka_volterra_field(0.0, y, _PARAMS))(states)
    np.testing.assert_allclose(jnp.sum(grad * field, axis=-1), 0.0, atol=1e-4)


def _generate(**kwargs):
    # One shape and dtype for every test: the generator compiles once.
    with jax.enable_x64(True):
        return jax.tree_util.tree_map(
            np.asarray, lotka_volterra(16, 60, dtype=jnp.float64, **kwargs)
        )


def test_initial_states_positive_and_oscillating():
    traj = _generate(key=jr.key(2))
    y0 = np.asarray(traj.y0)
    assert y0.min() >= 0.5 and y0.max() <= 2.0
    clean = np.asarray(traj.clean)
    assert clean.min() > 0
    # Closed orbits around (gamma / delta, alpha / beta) = (3, 1.5): every prey curve
    # crosses the equilibrium level repeatedly.
    crossings = np.sum(np.diff(np.sign(clean[..., 0] - 3.0), axis=1) != 0, axis=1)
    assert crossings.min() >= 4
    np.testing.assert_array_equal(traj.ys, traj.clean)


def test_deterministic_for_a_key():
    a = _generate(noise=0.1, key=jr.key(3))
    b = _generate(noise=0.1, key=jr.key(3))
    c = _generate(noise=0.1, key=jr.key(4))
    np.testing.assert_array_equal(a.ys, b.ys)
    assert not np.allclose(a.ys, c.ys)
    residual = np.asarray(a.ys - a.clean)
    # 1920 values: relative standard error of the std ~ 1.6%; allow 4.
    assert abs(residual.std() / 0.1 - 1) < 0.065


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trajectories": -3}, "n_trajectories` must be >= 1, got -3"),
        ({"n_times": 0}, "n_times` must be >= 2"),
        ({"t1": 0}, "t1` must be > 0"),
        ({"alpha": 0.0}, "alpha` must be > 0"),
        ({"beta": -1.0}, "beta` must be > 0"),
        ({"gamma": float("nan")}, "gamma` must be finite"),
        ({"delta": 0.0}, "delta` must be > 0"),
        ({"noise": -0.01}, "noise` must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        lotka_volterra(key=jr.key(0), **kwargs)

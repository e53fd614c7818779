import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import spiral, spiral_field


def _central_difference(ys, dt):
    # Fourth-order stencil; truncation error dt^4 / 30 * |y^(5)|.
    return (-ys[:, 4:] + 8 * ys[:, 3:-1] - 8 * ys[:, 1:-3] + ys[:, :-4]) / (12 * dt)


def test_clean_trajectories_satisfy_the_ode():
    with jax.enable_x64(True):
        traj = spiral(4, 1001, noise=0.0, dtype=jnp.float64, key=jr.key(0))
        dt = float(traj.ts[1] - traj.ts[0])
        derivative = _central_difference(np.asarray(traj.clean), dt)
        field = jax.vmap(jax.vmap(lambda y: spiral_field(0.0, y, None)))(traj.clean[:, 2:-2])
        field = np.asarray(field)
    assert traj.clean.dtype == np.float64
    scale = np.abs(field).max()
    # dt = 0.01: the stencil error is ~1e-8 of |f|; the solver error (rtol 1e-8) amplified
    # by the stencil (1.5 / dt) dominates, about 3e-6 of max |f| for this key.
    assert np.abs(derivative - field).max() < 1e-5 * scale


def test_field_matches_demo_formula():
    y = jnp.array([0.7, -1.2])
    expected = jnp.array([-0.1 * 0.7**3 + 2.0 * 1.2**3, 2.0 * 0.7**3 + 0.1 * 1.2**3])
    np.testing.assert_allclose(spiral_field(0.0, y, None), expected, rtol=1e-6)


def test_initial_states_and_shapes():
    traj = spiral(64, 20, noise=0.0, min_radius=1.0, max_radius=1.5, key=jr.key(1))
    assert traj.ys.shape == (64, 20, 2) and traj.ys.dtype == jnp.float32
    np.testing.assert_allclose(traj.ts, np.linspace(0, 10, 20), rtol=1e-6)
    radius = np.linalg.norm(traj.y0, axis=-1)
    assert radius.min() >= 1.0 and radius.max() <= 1.5
    np.testing.assert_array_equal(traj.ys, traj.clean)
    # A spiral: every trajectory ends closer to the origin after at least one full turn.
    final = np.linalg.norm(traj.clean[:, -1], axis=-1)
    assert np.all(final < 0.85 * radius)
    angle = np.unwrap(np.arctan2(traj.clean[..., 1], traj.clean[..., 0]), axis=1)
    assert np.all(angle[:, -1] - angle[:, 0] > 2 * np.pi)


def test_deterministic_for_a_key():
    a = spiral(64, 20, key=jr.key(3))
    b = spiral(64, 20, key=jr.key(3))
    c = spiral(64, 20, key=jr.key(4))
    np.testing.assert_array_equal(a.ys, b.ys)
    np.testing.assert_array_equal(a.clean, b.clean)
    assert np.abs(a.y0 - c.y0).min() > 0
    assert not np.allclose(a.ys, c.ys)


def test_noise_level():
    traj = spiral(64, 20, noise=0.05, key=jr.key(5))
    residual = np.asarray(traj.ys - traj.clean)
    # 2560 values: the sample std has relative standard error 1/sqrt(2 * 2560) ~ 1.4%; allow 4.
    assert abs(residual.std() / 0.05 - 1) < 0.056
    assert abs(residual.mean()) < 4 * 0.05 / np.sqrt(residual.size)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trajectories": 0}, "n_trajectories` must be >= 1, got 0"),
        ({"n_times": 1}, "n_times` must be >= 2, got 1"),
        ({"t1": 0.0}, "t1` must be > 0, got 0.0"),
        ({"t1": float("inf")}, "t1` must be finite"),
        ({"noise": -0.1}, "noise` must be >= 0, got -0.1"),
        ({"min_radius": -1.0}, "min_radius` must be >= 0"),
        ({"min_radius": 2.0, "max_radius": 1.0}, "max_radius` must be >= `min_radius"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        spiral(key=jr.key(0), **kwargs)


def test_bad_types():
    with pytest.raises(TypeError, match="n_trajectories` must be a Python integer"):
        spiral(2.5, key=jr.key(0))
    with pytest.raises(TypeError, match="must be a floating dtype"):
        spiral(4, 4, dtype=jnp.int32, key=jr.key(0))
    with pytest.raises(TypeError, match="must be a single JAX PRNG key"):
        spiral(4, 4, key=0)
    if not jax.config.read("jax_enable_x64"):
        with pytest.raises(ValueError, match="jax_enable_x64"):
            spiral(4, 4, dtype=jnp.float64, key=jr.key(0))

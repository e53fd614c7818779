import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import ornstein_uhlenbeck, ou_mean, ou_variance

_N = 20_000


def _check_moments(paths, ts, x0, theta, mu, sigma):
    mean = ou_mean(ts, x0, theta, mu)
    variance = ou_variance(ts, theta, sigma)
    # Within 4 standard errors: sqrt(var / N) for the mean, var * sqrt(2 / (N - 1)) for the
    # sample variance of Gaussian data. At t = 0 the variance is exactly 0.
    np.testing.assert_array_less(np.abs(paths.mean(0) - mean), 4 * np.sqrt(variance / _N) + 1e-6)
    np.testing.assert_array_less(
        np.abs(paths.var(0, ddof=1) - variance), 4 * variance * np.sqrt(2 / (_N - 1)) + 1e-6
    )


def test_moments_match_closed_forms():
    theta, mu, sigma, x0 = 1.3, 0.4, 0.7, 2.0
    traj = ornstein_uhlenbeck(_N, 11, t1=3.0, theta=theta, mu=mu, sigma=sigma, x0=x0, key=jr.key(0))
    assert traj.ys.shape == (_N, 11, 1) and traj.clean is None
    np.testing.assert_array_equal(traj.y0, np.full((_N, 1), x0))
    _check_moments(
        np.asarray(traj.ys[..., 0], np.float64), np.asarray(traj.ts), x0, theta, mu, sigma
    )


def test_exact_on_a_coarse_grid():
    # Steps of length 2.5 = 2.5 / theta: an Euler-Maruyama scheme would be far off (its
    # variance per step, sigma^2 * dt, is 1.25 versus the exact 0.25); the exact one is not.
    theta, sigma = 1.0, 1.0
    with jax.enable_x64(True):
        traj = ornstein_uhlenbeck(
            _N,
            3,
            t1=5.0,
            theta=theta,
            sigma=sigma,
            x0=3.0,
            dim=2,
            dtype=jnp.float64,
            key=jr.key(1),
        )
        ts = np.asarray(traj.ts)
        paths = np.asarray(traj.ys)
    assert paths.dtype == np.float64
    for d in range(2):
        _check_moments(paths[..., d], ts, 3.0, theta, 0.0, sigma)
    # Independent coordinates; Cov[X_s, X_t] = Var[X_s] e^{-theta (t - s)}.
    s, t = ts[1], ts[2]
    covariance = np.mean(
        (paths[:, 1, 0] - paths[:, 1, 0].mean()) * (paths[:, 2, 0] - paths[:, 2, 0].mean())
    )
    expected = ou_variance(s, theta, sigma) * np.exp(-theta * (t - s))
    # Standard error of a sample covariance ~ sqrt((var_s var_t + cov^2) / N); 4 of them.
    bound = 4 * np.sqrt(
        (ou_variance(s, theta, sigma) * ou_variance(t, theta, sigma) + expected**2) / _N
    )
    assert abs(covariance - expected) < bound
    cross = np.corrcoef(paths[:, 2, 0], paths[:, 2, 1])[0, 1]
    assert abs(cross) < 4 / np.sqrt(_N)


def test_closed_forms():
    t = jnp.array([0.0, 0.5, 1e-7, 50.0])
    np.testing.assert_allclose(ou_mean(t, 2.0, 1.5, 0.5), 0.5 + 1.5 * np.exp(-1.5 * t), rtol=1e-6)
    variance = np.asarray(ou_variance(t, 2.0, 0.3))
    np.testing.assert_allclose(
        variance[[0, 1, 3]], [0.0, 0.09 * (1 - np.exp(-2)) / 4, 0.09 / 4], rtol=1e-6
    )
    # Small theta * t: Var ~ sigma^2 t, kept accurate by expm1.
    np.testing.assert_allclose(variance[2], 0.09 * 1e-7, rtol=1e-5)


def test_vector_x0_and_determinism():
    x0 = jnp.array([1.0, -2.0, 0.5])
    a = ornstein_uhlenbeck(8, 5, x0=x0, dim=3, key=jr.key(2))
    b = ornstein_uhlenbeck(8, 5, x0=x0, dim=3, key=jr.key(2))
    c = ornstein_uhlenbeck(8, 5, x0=x0, dim=3, key=jr.key(3))
    np.testing.assert_array_equal(a.ys[:, 0], np.broadcast_to(x0, (8, 3)))
    np.testing.assert_array_equal(a.ys, b.ys)
    assert not np.allclose(a.ys, c.ys)
    # sigma = 0: the paths are the deterministic mean.
    quiet = ornstein_uhlenbeck(8, 5, x0=x0, dim=3, sigma=0.0, mu=1.0, key=jr.key(2))
    expected = ou_mean(quiet.ts[:, None], x0, 1.0, 1.0)
    np.testing.assert_allclose(quiet.ys, np.broadcast_to(expected, (8, 5, 3)), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_paths": 0}, "n_paths` must be >= 1"),
        ({"n_times": 1}, "n_times` must be >= 2"),
        ({"t1": -2.0}, "t1` must be > 0"),
        ({"theta": 0.0}, "theta` must be > 0, got 0.0"),
        ({"sigma": -0.5}, "sigma` must be >= 0, got -0.5"),
        ({"dim": 0}, "dim` must be >= 1"),
        ({"x0": jnp.zeros(3), "dim": 2}, r"`x0` must be a number or have shape \(2,\)"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ornstein_uhlenbeck(key=jr.key(0), **kwargs)

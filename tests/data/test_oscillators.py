import diffrax as dfx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from neurde.data import oscillator, oscillator_field


def _energy(ys, frequency, nonlinear):
    x, v = ys[..., 0], ys[..., 1]
    potential = 1 - np.cos(x) if nonlinear else x**2 / 2
    return v**2 / 2 + frequency**2 * potential


@jax.jit
def _reference(y0s, ts, frequency, damping, nonlinear):
    # Independent high-accuracy solution of oscillator_field (Dopri8, rtol = atol = 1e-10).
    # `nonlinear` is traced, so one compilation serves both systems.
    def solve(y0):
        return dfx.diffeqsolve(
            dfx.ODETerm(oscillator_field),
            dfx.Dopri8(),
            ts[0],
            ts[-1],
            0.01,
            y0,
            args=(frequency, damping, nonlinear),
            saveat=dfx.SaveAt(ts=ts),
            stepsize_controller=dfx.PIDController(rtol=1e-10, atol=1e-10),
            max_steps=100_000,
        ).ys

    return jax.vmap(solve)(y0s)


@pytest.mark.parametrize("damping", [0.0, 0.3, 1.0, 1.0 + 1e-9, 2.5])
def test_closed_form_matches_integration(damping):
    # Under-, critically and over-damped, and over-damped within 1e-9 of critical (where a
    # naive sinh(w t) / w would cancel catastrophically).
    frequency = 1.7
    with jax.enable_x64(True):
        traj = oscillator(
            6, 40, frequency=frequency, damping=damping, dtype=jnp.float64, key=jr.key(0)
        )
        reference = np.asarray(_reference(traj.y0, traj.ts, frequency, damping, False))
        clean = np.asarray(traj.clean)
    assert clean.dtype == np.float64
    np.testing.assert_allclose(clean, reference, rtol=0, atol=1e-7)
    np.testing.assert_array_equal(traj.ys, traj.clean)


def test_pendulum_matches_integration():
    with jax.enable_x64(True):
        traj = oscillator(6, 40, damping=0.2, nonlinear=True, dtype=jnp.float64, key=jr.key(1))
        reference = np.asarray(_reference(traj.y0, traj.ts, 1.0, 0.2, True))
        clean = np.asarray(traj.clean)
        linear = oscillator(6, 40, damping=0.2, dtype=jnp.float64, key=jr.key(1))
    # Generator runs at rtol 1e-8 against a 1e-10 reference.
    np.testing.assert_allclose(clean, reference, rtol=0, atol=1e-6)
    # Large swings differ visibly from the linear oscillator.
    assert np.abs(np.asarray(linear.clean) - clean).max() > 1e-2


def _energy64(damping, nonlinear, key):
    # Same shape and dtype as above, so the pendulum generator compiles once.
    with jax.enable_x64(True):
        traj = oscillator(6, 40, damping=damping, nonlinear=nonlinear, dtype=jnp.float64, key=key)
        return _energy(np.asarray(traj.clean), 1.0, nonlinear)


@pytest.mark.parametrize("nonlinear", [False, True])
def test_energy_decays_monotonically(nonlinear):
    energy = _energy64(0.1, nonlinear, jr.key(2))
    # dE/dt = -2 zeta omega v^2 <= 0; 1e-12 absorbs rounding where v ~ 0.
    assert np.all(np.diff(energy, axis=1) <= 1e-12)
    assert np.all(energy[:, -1] < 0.5 * energy[:, 0])


@pytest.mark.parametrize("nonlinear", [False, True])
def test_energy_conserved_without_damping(nonlinear):
    energy = _energy64(0.0, nonlinear, jr.key(3))
    # Exact for the linear case; solver tolerance 1e-8 for the pendulum.
    np.testing.assert_allclose(energy, np.broadcast_to(energy[:, :1], energy.shape), rtol=1e-7)


def test_initial_states_period_and_noise():
    traj = oscillator(500, 11, t1=2 * np.pi, damping=0.0, noise=0.1, key=jr.key(4))
    y0 = np.asarray(traj.y0)
    assert y0.min() >= -1 and y0.max() <= 1 and y0.min() < -0.9 and y0.max() > 0.9
    # Undamped with frequency 1: exactly one period over [0, 2 pi].
    np.testing.assert_allclose(traj.clean[:, -1], traj.clean[:, 0], atol=1e-5)
    residual = np.asarray(traj.ys - traj.clean)
    # 11000 values: relative standard error of the std ~ 0.7%.
    assert abs(residual.std() / 0.1 - 1) < 0.03


def test_near_critical_in_float32():
    # 1 - 1e-9 rounds to 1 in float32; the generator must not divide by a zero frequency.
    near = oscillator(500, 11, damping=1 - 1e-9, key=jr.key(5))
    critical = oscillator(500, 11, damping=1.0, key=jr.key(5))
    assert np.isfinite(np.asarray(near.clean)).all()
    np.testing.assert_allclose(near.clean, critical.clean, atol=1e-6)


def test_deterministic_for_a_key():
    a = oscillator(500, 11, noise=0.1, key=jr.key(5))
    b = oscillator(500, 11, noise=0.1, key=jr.key(5))
    c = oscillator(500, 11, noise=0.1, key=jr.key(6))
    np.testing.assert_array_equal(a.ys, b.ys)
    assert not np.allclose(a.ys, c.ys)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_trajectories": 0}, "n_trajectories` must be >= 1"),
        ({"n_times": 1}, "n_times` must be >= 2"),
        ({"t1": -1.0}, "t1` must be > 0, got -1.0"),
        ({"frequency": 0.0}, "frequency` must be > 0"),
        ({"damping": -0.5}, "damping` must be >= 0, got -0.5"),
        ({"noise": -1.0}, "noise` must be >= 0"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        oscillator(key=jr.key(0), **kwargs)


def test_nonlinear_must_be_bool():
    with pytest.raises(TypeError, match="nonlinear` must be a Python bool"):
        oscillator(4, 4, nonlinear=1, key=jr.key(0))

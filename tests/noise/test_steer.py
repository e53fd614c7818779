"""STEER: end times uniform on (T - b, T + b), exact inference mode, gradients, errors."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.stats

import neurde
from neurde.noise.steer import STEER

T0, T1, B = 0.5, 2.0, 1.0


def _unit_speed(t, y, args):
    return jnp.ones_like(y)


@pytest.fixture(scope="module")
def clock():
    # dy/dt = 1 from y(t0) = 0 gives y(T') = T' - t0 exactly (Tsit5 integrates constants
    # exactly), so the output reveals the sampled end time.
    return STEER(neurde.NeuralODE(_unit_speed, t0=T0, t1=T1), B)


N_DRAWS = 4000


@pytest.fixture(scope="module")
def end_times(clock):
    """`T'` read off the solve, one key per example, and with one key shared by all."""
    run = jax.jit(jax.vmap(lambda k: clock(jnp.zeros(1), key=k)[0] + T0))
    keys = jr.split(jr.key(0), N_DRAWS)
    shared = jnp.broadcast_to(jr.key(1), (N_DRAWS,))
    return keys, np.asarray(run(keys), np.float64), np.asarray(run(shared), np.float64)


def test_end_times_are_uniform(end_times):
    _, ends, _ = end_times
    n = N_DRAWS
    # Support: inside (T - b, T + b), and reaching within 0.01 of both ends (the chance that
    # 4000 uniform draws miss a band of width 0.01 of 2 is (1 - 0.005)^4000 ~ 2e-9).
    assert T1 - B < ends.min() < T1 - B + 0.01
    assert T1 + B - 0.01 < ends.max() < T1 + B
    # Mean T and variance b^2 / 3, each within 4 standard errors (SE of the mean
    # b / sqrt(3 n) = 0.0091; SE of the variance b^2 sqrt(4 / (45 n)) = 0.0047).
    assert abs(ends.mean() - T1) < 4 * B / np.sqrt(3 * n)
    assert abs(ends.var() - B**2 / 3) < 4 * B**2 * np.sqrt(4 / (45 * n))
    # And the whole distribution: Kolmogorov–Smirnov against U(T - b, T + b).
    assert scipy.stats.kstest(ends, scipy.stats.uniform(T1 - B, 2 * B).cdf).pvalue > 1e-3


def test_end_time_matches_the_solve(clock, end_times):
    keys, ends, _ = end_times
    np.testing.assert_allclose(ends, jax.vmap(clock.end_time)(keys), rtol=1e-6)


def test_one_end_time_per_key(end_times):
    # vmapped over keys: one T' per example; one key for the batch: one T' for all.
    _, ends, shared = end_times
    assert np.unique(ends).size > 0.99 * N_DRAWS
    assert np.unique(shared).size == 1


def test_inference_mode_is_the_wrapped_model():
    field = neurde.MLPField(2, 16, 1, key=jr.key(0))
    model = neurde.NeuralODE(field, t1=1.0)
    steer = eqx.nn.inference_mode(STEER(model, 0.5))
    y0 = jnp.array([0.3, -0.2])
    np.testing.assert_array_equal(steer(y0), model(y0))
    assert float(steer.end_time()) == 1.0


def test_gradients_flow_to_the_field():
    # The gradient through STEER equals that of the NeuralODE solved to the same end time.
    field = neurde.MLPField(2, 16, 1, key=jr.key(0))
    model = neurde.NeuralODE(field, t1=1.0)
    steer = STEER(model, 0.5)
    y0, key = jnp.array([0.3, -0.2]), jr.key(7)
    t_end = steer.end_time(key)

    def loss(m, call):
        return jnp.sum(call(m, y0) ** 2)

    g_steer = eqx.filter_grad(loss)(steer, lambda s, y: s(y, key=key))
    fixed_end = neurde.NeuralODE(field, t1=float(t_end))
    g_model = eqx.filter_grad(loss)(fixed_end, lambda m, y: m(y))
    leaves_steer = jax.tree.leaves(g_steer.model.field)
    leaves_model = jax.tree.leaves(g_model.field)
    assert all(float(jnp.abs(g).max()) > 0 for g in leaves_steer)
    for a, b in zip(leaves_steer, leaves_model, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-8)


def test_solve_and_stats(clock):
    solution = clock.solve(jnp.zeros(1), key=jr.key(0))
    assert int(solution.stats["nfe"]) > 0 and solution.extras == {}
    # dy/dt = 1: the state is the time integrated, T' - t0.
    end = float(clock.end_time(jr.key(0)))
    assert float(solution.ys[0]) + T0 == pytest.approx(end, rel=1e-6)
    assert T1 - B < end < T1 + B


@pytest.mark.parametrize(
    ("b", "match"),
    [
        (0.0, r"0 < b < t1 - t0 = 1.5 .* got b=0.0"),
        (-0.1, r"got b=-0.1"),
        (1.5, r"stays after t0 = 0.5; got b=1.5. Try b=0.75"),
    ],
)
def test_bad_b(b, match):
    with pytest.raises(ValueError, match=match):
        STEER(neurde.NeuralODE(_unit_speed, t0=T0, t1=T1), b)


def test_errors(clock):
    with pytest.raises(TypeError, match="`b` must be a Python float, got str"):
        STEER(neurde.NeuralODE(_unit_speed, t1=1.0), "0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"must be a continuous neurde model .* type MLPField"):
        STEER(neurde.MLPField(2, 4, 1, key=jr.key(0)), 0.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"no end time \(`t1=None`"):
        STEER(neurde.NeuralODE(_unit_speed), 0.5)
    with pytest.raises(ValueError, match=r"a `key` is needed .*`eqx.nn.inference_mode\(steer\)`"):
        clock(jnp.zeros(1))
    with pytest.raises(ValueError, match=r"`ts` must be None.*steer.model\(y0, ts\)"):
        clock(jnp.zeros(1), jnp.linspace(0.5, 1.0, 3), key=jr.key(0))
    with pytest.raises(ValueError, match="`ts` must be None"):
        eqx.nn.inference_mode(clock)(jnp.zeros(1), jnp.linspace(0.5, 1.0, 3))

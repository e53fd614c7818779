"""`neurde.noise.MonteCarlo`: the average over noise draws, vmapped over keys."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import neurde
from neurde import noise


def test_monte_carlo_is_the_mean_over_split_keys():
    ode = neurde.NeuralODE(neurde.LinearField(-jnp.eye(2)), t1=1.0, dt0=0.1)
    model = noise.additive(ode, 0.3)
    y0 = jnp.array([1.0, -1.0])
    mc = noise.MonteCarlo(model, 8, post=jnp.tanh)
    keys = jr.split(jr.key(0), 8)
    manual = jnp.mean(jnp.stack([jnp.tanh(model(y0, key=k)) for k in keys]), 0)
    np.testing.assert_allclose(mc(y0, key=jr.key(0)), manual, rtol=1e-6)


def test_monte_carlo_converges_to_the_sde_mean():
    # dY = -Y dt + s dW: E[Y(1)] = y0 e^{-1} (Euler–Maruyama with dt 0.01: (1 - 0.01)^100).
    ode = neurde.NeuralODE(neurde.LinearField(-jnp.eye(2)), t1=1.0, dt0=0.01)
    mc = noise.MonteCarlo(noise.additive(ode, 0.5), 4000)
    y0 = jnp.array([1.0, -2.0])
    mean = eqx.filter_jit(lambda m, k: m(y0, key=k))(mc, jr.key(1))
    # sd of one Y(1) = 0.5 sqrt((1 - e^{-2}) / 2) ~ 0.33; standard error over 4000 ~ 0.005.
    np.testing.assert_allclose(mean, y0 * 0.99**100, atol=0.025)


def test_monte_carlo_keeps_noise_on_inside_inference_mode():
    stack = neurde.discrete.ResidualStack(
        lambda k: neurde.MLPField(2, 8, 1, key=k), neurde.discrete.Euler(), 3, key=jr.key(0)
    )
    model = noise.additive(stack, 1.0)
    mc = eqx.nn.inference_mode(noise.MonteCarlo(model, 2))
    x = jnp.ones(2)
    a, b = mc(x, key=jr.key(0)), mc(x, key=jr.key(1))
    assert not np.allclose(a, b)
    # A batch is vmapped outside: one key per example.
    out = jax.vmap(lambda xi, k: mc(xi, key=k))(jnp.ones((5, 2)), jr.split(jr.key(0), 5))
    assert out.shape == (5, 2)

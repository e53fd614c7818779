"""Flow matching and rectified flow: the loss vanishes for the exact marginal velocity of a
point mass, its value for the zero field, gradients against finite differences, training
direction (a trained CNF samples the data), errors, and the acceptance thresholds (slow)."""

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
from neurde.continuous import CNF, flow_matching_loss, sample

X0 = jnp.array([1.5, -0.5])


def _point_mass_velocity(sigma, t0=0.0, t1=1.0):
    # Data = a point mass at X0: z = (1 - s) X0 + (sigma + (1 - sigma) s) eps determines eps,
    # so the marginal velocity is the conditional one, u = (1 - sigma) eps - X0.
    def field(t, z, args):
        s = (t - t0) / (t1 - t0)
        eps = (z - (1 - s) * X0) / (sigma + (1 - sigma) * s)
        return ((1 - sigma) * eps - X0) / (t1 - t0)

    return field


@pytest.mark.parametrize("path,sigma", [("ot", 1e-4), ("ot", 0.1), ("rectified", 0.0)])
def test_loss_vanishes_for_the_exact_velocity_of_a_point_mass(path, sigma):
    with jax.enable_x64(True):
        x = jnp.tile(jnp.asarray(X0, jnp.float64), (64, 1))
        options = {"sigma_min": sigma} if path == "ot" else {}
        loss = flow_matching_loss(
            _point_mass_velocity(sigma), x, key=jr.key(0), path=path, **options
        )
        assert float(loss) < 1e-16
        # A CNF on [0, 2]: times and velocities are rescaled to its interval.
        cnf = CNF(neurde.FunctionField(_point_mass_velocity(sigma, 0.0, 2.0)), t1=2.0)
        loss = flow_matching_loss(cnf, x, key=jr.key(0), path=path, **options)
        assert float(loss) < 1e-16
        # A wrong field does not.
        assert float(flow_matching_loss(lambda t, z, a: -z, x, key=jr.key(0), path=path)) > 0.1


def test_zero_field_loss_is_the_mean_squared_velocity():
    # For f = 0 the loss is E||eps - x||^2 = d + ||x||^2 (rectified path).
    x = jnp.tile(X0, (20_000, 1))
    loss = flow_matching_loss(lambda t, z, a: jnp.zeros_like(z), x, key=jr.key(1), path="rectified")
    want = 2 + float(jnp.sum(X0**2))
    # The per-example value ||eps - x||^2 has variance 2 d + 4 ||x||^2.
    se = np.sqrt(4 + 4 * float(jnp.sum(X0**2))) / np.sqrt(x.shape[0])
    assert abs(float(loss) - want) < 4 * se


def test_reflow_uses_the_given_coupling():
    x = jr.normal(jr.key(2), (8, 2))
    eps = jr.normal(jr.key(3), (8, 2))

    def field(t, z, args):
        return jnp.zeros_like(z)

    loss = flow_matching_loss(field, x, key=jr.key(4), path="rectified", noise=eps)
    np.testing.assert_allclose(loss, jnp.mean(jnp.sum((eps - x) ** 2, -1)), rtol=1e-6)


def test_gradient_matches_finite_differences():
    with jax.enable_x64(True):
        field = neurde.MLPField(2, 8, 1, time_dependent=True, activation=jnp.tanh, key=jr.key(5))
        cnf = CNF(field)
        x = jr.normal(jr.key(6), (16, 2))
        flat, unravel = jax.flatten_util.ravel_pytree(eqx.filter(cnf, eqx.is_inexact_array))
        static = eqx.filter(cnf, eqx.is_inexact_array, inverse=True)

        @jax.jit
        def loss(p):
            return flow_matching_loss(eqx.combine(unravel(p), static), x, key=jr.key(7))

        grad = jax.grad(loss)(flat)
        fd = central_differences(loss, flat)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_trained_cnf_samples_the_data_in_the_cnf_direction():
    # Data N(m, 0.5^2 I): after flow matching, `sample` (base -> data through the CNF's
    # reversed solve) gives the data's mean and spread, and the loss has decreased.
    mean = jnp.array([2.0, -1.0])
    data = mean + 0.5 * jr.normal(jr.key(8), (4096, 2))
    cnf = CNF(neurde.MLPField(2, 32, 2, time_dependent=True, key=jr.key(9)))

    def loss(model, batch, key):
        return flow_matching_loss(model, batch, key=key)

    result = neurde.fit(
        cnf,
        loss,
        data,
        steps=250,
        key=jr.key(10),
        batch_size=256,
        optim=optax.adam(3e-3),
        progress=False,
    )
    losses = np.asarray(result.history.loss)
    assert losses[-30:].mean() < 0.7 * losses[:10].mean()
    xs, _ = jax.jit(jax.vmap(lambda k: sample(result.model, k, 2)))(jr.split(jr.key(11), 400))
    np.testing.assert_allclose(xs.mean(0), mean, atol=0.15)
    np.testing.assert_allclose(xs.std(0), [0.5, 0.5], atol=0.12)


def test_errors():
    x = jnp.zeros((4, 2))
    f = lambda t, z, a: z  # noqa: E731
    with pytest.raises(ValueError, match="flow_matching_loss: unknown `path='vp'`"):
        flow_matching_loss(f, x, key=jr.key(0), path="vp")  # type: ignore[arg-type]
    with pytest.raises(
        ValueError,
        match=r"flow_matching_loss: `x` must be a batch of data points of shape \(n, d\), "
        r"got \(2,\)",
    ):
        flow_matching_loss(f, x[0], key=jr.key(0))
    with pytest.raises(
        ValueError,
        match=r"flow_matching_loss: the rectified path is the straight line, with no "
        r"`sigma_min`; got sigma_min=0\.1",
    ):
        flow_matching_loss(f, x, key=jr.key(0), path="rectified", sigma_min=0.1)
    with pytest.raises(
        ValueError, match=r"flow_matching_loss: `noise=` .* goes with path='rectified'"
    ):
        flow_matching_loss(f, x, key=jr.key(0), noise=x)
    with pytest.raises(
        ValueError,
        match=r"flow_matching_loss: `noise` must have the shape of `x` \(4, 2\), got \(3, 2\)",
    ):
        flow_matching_loss(f, x, key=jr.key(0), path="rectified", noise=jnp.zeros((3, 2)))
    with pytest.raises(
        ValueError, match=r"flow_matching_loss: `sigma_min` must be in \[0, 1\), got 1.5"
    ):
        flow_matching_loss(f, x, key=jr.key(0), sigma_min=1.5)
    with pytest.raises(
        TypeError, match=r"flow_matching_loss: `model` must be a `neurde\.continuous\.CNF`"
    ):
        flow_matching_loss(3, x, key=jr.key(0))
    with pytest.raises(
        TypeError,
        match=r"flow_matching_loss: no CNF under the continuous wrappers of the model "
        r"\(NeuralODE\)",
    ):
        flow_matching_loss(neurde.NeuralODE(f, t1=1.0), x, key=jr.key(0))

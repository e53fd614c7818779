"""`make_step`: one compiled optimization step over the trainable leaves of a model.

Compiling a step through a Diffrax solve dominates the run time of these tests, so the
float32 tests share one compiled step (the `adamw_step` fixture), and losses take one
example (vmapping the solve over a y0 makes it about twice as slow to compile).
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
import scipy.linalg

import neurde

MATRIX = ((-0.5, 1.0), (-1.0, -0.3))
Y0 = (1.0, -0.5)


def _linear_ode(**kwargs):
    return neurde.NeuralODE(neurde.LinearField(jnp.asarray(MATRIX)), t1=1.0, **kwargs)


def _sum_of_final_state(model, y0, key):
    del key
    return jnp.sum(model(y0))


def _exact_sum_of_final_state(matrix, y0):
    # LinearField: y(1) = expm(A) y0.
    return np.sum(scipy.linalg.expm(np.asarray(matrix, np.float64)) @ np.asarray(y0))


def _exact_gradient(matrix, y0):
    # L(A) = <expm(A), G> with G = 1 y0^T, so dL/dA = Lexpm(A^T, G), the Frechet derivative
    # of the matrix exponential at A^T in the direction G.
    g = np.outer(np.ones(2), np.asarray(y0, np.float64))
    return scipy.linalg.expm_frechet(np.asarray(matrix, np.float64).T, g)[1]


@pytest.fixture(scope="module")
def adamw_step():
    """A float32 step with weight decay, a loss with aux metrics, and a trace counter."""
    traces = []

    def loss_fn(model, y0, key):
        del key
        traces.append(None)
        sols = model.solve(y0)
        final = sols.ys
        stats = sols.stats
        aux = {"nfe": stats["nfe"], "num_steps": stats["num_steps"], "mean": jnp.mean(final)}
        return jnp.sum(final), aux

    # Weight decay would shrink every leaf the optimizer sees by lr * wd = 5% per step.
    optim = optax.adamw(1e-2, weight_decay=5.0)
    return neurde.make_step(loss_fn, optim), optim, traces, loss_fn


def test_sgd_step_is_minus_lr_times_the_gradient():
    lr = 0.1
    with jax.enable_x64(True):
        # RK4 with dt = 0.01: global error ~1e-10 for this ||A|| ~ 1 system.
        model = _linear_ode(solver=neurde.RK4(), dt0=0.01)
        y0 = jnp.asarray(Y0)
        key = jr.key(0)
        optim = optax.sgd(lr)
        step = neurde.make_step(_sum_of_final_state, optim)
        new_model, _, loss, aux = step(model, neurde.init_optimizer(optim, model), y0, key)

        matrix = model.field.matrix
        grads = eqx.filter_grad(_sum_of_final_state)(model, y0, key)
        expected = np.asarray(matrix - lr * grads.field.matrix)
        exact_loss = _exact_sum_of_final_state(matrix, y0)
        exact_grad = _exact_gradient(matrix, y0)
        new_matrix = np.asarray(new_model.field.matrix)
    assert new_matrix.dtype == np.float64
    assert aux == {}
    # Same loss and gradient, compiled differently: round-off only.
    np.testing.assert_allclose(new_matrix, expected, rtol=0, atol=1e-13)
    np.testing.assert_allclose(loss, exact_loss, rtol=1e-8)
    np.testing.assert_allclose(grads.field.matrix, exact_grad, rtol=0, atol=1e-8)
    # The step is not a no-op: every entry of the gradient is at least 0.05.
    assert np.abs(exact_grad).min() > 0.05


def test_tolerances_are_not_trained_even_with_weight_decay(adamw_step):
    step, optim, _, _ = adamw_step
    model = _linear_ode(rtol=1e-4, atol=1e-7)
    spec = neurde.trainable(model)
    assert spec.field.matrix is True
    assert spec.tolerances.rtol is False and spec.tolerances.atol is False

    opt_state = neurde.init_optimizer(optim, model)
    new_model = model
    for i in range(3):
        new_model, opt_state, _, _ = step(new_model, opt_state, jnp.asarray(Y0), jr.key(i))
    assert np.asarray(new_model.tolerances.rtol) == np.asarray(model.tolerances.rtol)
    assert np.asarray(new_model.tolerances.atol) == np.asarray(model.tolerances.atol)
    # Adam moves each entry by about lr = 1e-2 per step, plus the decay.
    change = np.abs(np.asarray(new_model.field.matrix - model.field.matrix))
    assert change.min() > 1e-2


def test_aux_dict_is_returned(adamw_step):
    step, optim, _, loss_fn = adamw_step
    model = _linear_ode(rtol=1e-4, atol=1e-7)
    y0 = jnp.asarray(Y0)
    _, _, loss, aux = step(model, neurde.init_optimizer(optim, model), y0, jr.key(0))
    expected_loss, expected_aux = eqx.filter_jit(loss_fn)(model, y0, jr.key(0))
    assert set(aux) == {"nfe", "num_steps", "mean"}
    assert aux["nfe"].shape == ()
    # Integer counts pass through unchanged; the adaptive solve takes several steps.
    np.testing.assert_array_equal(aux["nfe"], expected_aux["nfe"])
    np.testing.assert_array_equal(aux["num_steps"], expected_aux["num_steps"])
    assert np.all(aux["num_steps"] >= 2) and np.all(aux["nfe"] >= 6 * aux["num_steps"])
    # loss = sum of the 2 final coordinates, aux["mean"] = their mean (float32 round-off).
    np.testing.assert_allclose(aux["mean"], expected_aux["mean"], rtol=1e-6)
    np.testing.assert_allclose(loss, expected_loss, rtol=1e-6)
    np.testing.assert_allclose(loss, 2 * aux["mean"], rtol=1e-6)
    # rtol = 1e-4 solve against the exact flow.
    np.testing.assert_allclose(loss, _exact_sum_of_final_state(MATRIX, y0), rtol=1e-3)


def test_changing_tolerances_does_not_recompile(adamw_step):
    step, optim, traces, _ = adamw_step
    model = _linear_ode()
    opt_state = neurde.init_optimizer(optim, model)
    y0 = jnp.asarray(Y0)
    _, _, loose, _ = step(model, opt_state, y0, jr.key(0))
    n_traces = len(traces)
    tight = eqx.tree_at(lambda m: m.tolerances, model, neurde.Tolerances(1e-7, 1e-9))
    _, _, accurate, _ = step(tight, opt_state, y0, jr.key(1))
    assert len(traces) == n_traces
    exact = float(_exact_sum_of_final_state(MATRIX, y0))
    # The tighter tolerances were used: float32 round-off instead of rtol = 1e-3 error.
    assert abs(float(accurate) - exact) < 1e-5
    assert abs(float(accurate) - exact) < abs(float(loose) - exact)


def test_non_scalar_loss_is_an_error():
    def loss_fn(model, batch, key):
        return batch @ model.field.matrix.T

    optim = optax.sgd(0.1)
    model = _linear_ode()
    step = neurde.make_step(loss_fn, optim)
    with pytest.raises(ValueError, match=r"must return a scalar.*got shape \(3, 2\)"):
        step(model, neurde.init_optimizer(optim, model), jnp.asarray([Y0, Y0, Y0]), jr.key(0))


def test_aux_must_be_a_dict():
    def loss_fn(model, batch, key):
        return jnp.sum(batch), [1.0]

    optim = optax.sgd(0.1)
    model = _linear_ode()
    step = neurde.make_step(loss_fn, optim)
    with pytest.raises(TypeError, match="aux output must be a dict of metrics, got list"):
        step(model, neurde.init_optimizer(optim, model), jnp.asarray([Y0, Y0, Y0]), jr.key(0))

"""NeuralODE numerics: exact flows, convergence orders, gradients, NFE, recompilation."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
import scipy.linalg
from conftest import central_differences, fitted_order

import neurde

A = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def test_linear_field_matches_matrix_exponential():
    # Tolerance: rtol = atol = 1e-10 Dopri5, so the global error stays below 1e-8.
    with jax.enable_x64(True):
        model = neurde.NeuralODE(
            neurde.LinearField(A), solver=diffrax.Dopri5(), rtol=1e-10, atol=1e-10, t1=3.0
        )
        y0 = jnp.array([1.0, -0.5])
        ts = jnp.linspace(0.0, 3.0, 7)
        ys = model(y0, ts)
        exact = np.stack([scipy.linalg.expm(A * t) @ np.asarray(y0) for t in ts])
        np.testing.assert_allclose(ys, exact, atol=1e-8)
        np.testing.assert_allclose(model(y0), exact[-1], atol=1e-8)


def test_pytree_state():
    # y = {"x": position, "v": velocity} of a harmonic oscillator: x(t) = cos t.
    def field(t, y, args):
        return {"x": y["v"], "v": -y["x"]}

    with jax.enable_x64(True):
        model = neurde.NeuralODE(field, rtol=1e-10, atol=1e-10, t1=2.0)
        out = model({"x": jnp.array(1.0), "v": jnp.array(0.0)})
        np.testing.assert_allclose(out["x"], np.cos(2.0), atol=1e-8)
        np.testing.assert_allclose(out["v"], -np.sin(2.0), atol=1e-8)


@pytest.mark.parametrize(
    ("solver", "order"),
    [(diffrax.Euler(), 1), (diffrax.Heun(), 2), (neurde.RK4(), 4)],
)
def test_fixed_step_convergence_order(solver, order):
    # The fitted log-log slope of the global error at t=1 must be within 0.15 of the order.
    with jax.enable_x64(True):
        y0 = jnp.array([1.0, 0.5])
        exact = scipy.linalg.expm(A) @ np.asarray(y0)
        hs = [1 / 16, 1 / 32, 1 / 64, 1 / 128]
        errors = []
        for h in hs:
            model = neurde.NeuralODE(
                neurde.LinearField(A),
                solver=solver,
                stepsize_controller=diffrax.ConstantStepSize(),
                dt0=h,
                t1=1.0,
            )
            errors.append(float(jnp.linalg.norm(model(y0) - exact)))
        assert abs(fitted_order(hs, errors) - order) < 0.15


@pytest.mark.parametrize("adjoint", ["backprop", "direct", "adjoint"])
def test_gradients_match_finite_differences(adjoint):
    # Gradient of a scalar loss with respect to every parameter and to y0, against central
    # differences (eps 1e-6, float64); agreement to 1e-6 relative.
    with jax.enable_x64(True):
        field = neurde.MLPField(2, 8, 1, time_dependent=True, activation=jnp.tanh, key=jr.key(0))
        model = neurde.NeuralODE(field, rtol=1e-10, atol=1e-10, adjoint=adjoint, t1=1.0)
        y0 = jnp.array([0.3, -0.7])
        ts = jnp.array([0.25, 0.5, 1.0])
        params, static = eqx.partition(model, neurde.trainable(model))
        flat, unravel = jax.flatten_util.ravel_pytree((params, y0))

        def loss(vec):
            p, y = unravel(vec)
            return jnp.sum(jnp.sin(eqx.combine(p, static)(y, ts)))

        grad = jax.jit(jax.grad(loss))(flat)
        fd = central_differences(jax.jit(loss), flat)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)


def test_backprop_and_adjoint_agree():
    with jax.enable_x64(True):
        field = neurde.MLPField(3, 16, 2, key=jr.key(1))
        y0 = jnp.array([0.1, 0.2, -0.3])

        def grad_for(adjoint):
            model = neurde.NeuralODE(field, rtol=1e-9, atol=1e-9, adjoint=adjoint, t1=1.5)
            params, static = eqx.partition(model, neurde.trainable(model))
            loss = lambda p: jnp.sum(eqx.combine(p, static)(y0) ** 2)  # noqa: E731
            return jax.flatten_util.ravel_pytree(jax.jit(jax.grad(loss))(params))[0]

        np.testing.assert_allclose(grad_for("backprop"), grad_for("adjoint"), rtol=1e-6)


def test_nfe_counts_every_field_evaluation():
    # Count real evaluations with a host callback and compare with the reported NFE.
    calls = []

    def field(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return -y + jnp.sin(t)

    for solver, controller, dt0 in [
        (diffrax.Tsit5(), None, None),
        (diffrax.Dopri5(), None, 0.1),
        (neurde.RK4(), None, 0.1),
    ]:
        calls.clear()
        model = neurde.NeuralODE(
            field, solver=solver, stepsize_controller=controller, dt0=dt0, t1=2.0
        )
        sol = model.solve(jnp.array([1.0, 2.0]))
        stats = sol.stats
        jax.effects_barrier()
        assert int(stats["nfe"]) == len(calls), type(solver).__name__
        assert int(stats["num_steps"]) == int(stats["num_accepted_steps"]) + int(
            stats["num_rejected_steps"]
        )


def test_changing_tolerances_does_not_recompile():
    traces = []
    model = neurde.NeuralODE(neurde.LinearField(A), t1=1.0)

    @eqx.filter_jit
    def run(m, y0):
        traces.append(1)
        return m(y0)

    y0 = jnp.array([1.0, 0.0])
    loose = run(model, y0)
    tight_model = eqx.tree_at(lambda m: m.tolerances, model, neurde.Tolerances(1e-8, 1e-8))
    tight = run(tight_model, y0)
    assert len(traces) == 1
    assert not np.allclose(loose, tight, atol=1e-9)  # the new tolerances were used


def test_vmap_over_batch_equals_loop():
    model = neurde.NeuralODE(neurde.MLPField(2, 16, 1, key=jr.key(2)), t1=1.0)
    y0s = jr.normal(jr.key(3), (5, 2))
    # Full float32 matmuls: on GPUs the default precision (TF32) differs between the batched
    # matmul and the per-example matvec by ~1e-3, which is not what this test is about.
    with jax.default_matmul_precision("float32"):
        batched = jax.vmap(model)(y0s)
        looped = jnp.stack([model(y) for y in y0s])
    np.testing.assert_allclose(batched, looped, rtol=1e-5, atol=1e-6)


def test_traced_end_time():
    # With t1=None the solve ends at the last save time, which may be traced.
    with jax.enable_x64(True):
        model = neurde.NeuralODE(neurde.LinearField(-np.eye(2)), rtol=1e-9, atol=1e-9)
        out = jax.jit(lambda t1: model(jnp.ones(2), t1[None])[0])(jnp.asarray(0.7))
        np.testing.assert_allclose(out, np.exp(-0.7), rtol=1e-7)

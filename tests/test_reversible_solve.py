"""Reversible solvers (`neurde.Reversible`): exact gradients in constant memory.

Tolerances: the custom backward pass differentiates the same discrete map as autodiff through
it, so the two agree to rounding (float64: 1e-10 relative asserted, ~1e-15 observed); finite
differences with eps 1e-6 agree to ~1e-8; reversible Heun matches backprop through
`diffrax.ReversibleHeun` on the same grid Brownian path to 1e-10 (~1e-15 observed).
"""

import functools
from typing import Any

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from conftest import central_differences

import neurde
from neurde import _reversible_rk

CONSTANT = diffrax.ConstantStepSize()
SOLVERS = [
    diffrax.Euler(),
    diffrax.Heun(),
    neurde.RK4(),
    diffrax.Tsit5(),
    diffrax.Dopri5(),
]


def _f64(tree):
    return jax.tree.map(lambda x: x.astype(jnp.float64) if eqx.is_inexact_array(x) else x, tree)


@functools.cache
def _field():
    with jax.enable_x64(True):
        return _f64(neurde.MLPField(3, 16, 1, key=jr.key(0)))


def _rel(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) > 0
    pairs = zip(la, lb, strict=True)
    return max(float(jnp.max(jnp.abs(x - y)) / jnp.max(jnp.abs(y))) for x, y in pairs)


@pytest.mark.parametrize("solver", SOLVERS, ids=lambda s: type(s).__name__)
def test_gradient_equals_backprop_through_the_same_scheme(solver):
    # The custom backward pass (reconstruct + one-step VJPs) against plain autodiff through
    # the stored forward scan of the same reversible scheme, with save times on the grid.
    with jax.enable_x64(True):
        y0 = jnp.array([0.3, -0.2, 0.5])
        index = jnp.array([0, 5, 12, 20])

        def loss(field_y0, custom):
            field, y0 = field_y0
            conv = eqx.filter_closure_convert(field, jnp.asarray(0.0), y0, None)
            diff, static = eqx.partition((conv, None), eqx.is_inexact_array)
            grid = _reversible_rk._Grid(solver, 0.999, 0.0, 0.05, 20, index)
            buffer = jnp.zeros((4, 3))
            if custom:
                y, ys = _reversible_rk._solve((diff, y0), grid, static, buffer)
            else:
                y, _, ys = _reversible_rk._forward(grid, diff, static, y0, buffer)
            return jnp.sum(ys**2 * jnp.arange(1.0, 5.0)[:, None]) + jnp.sum(jnp.sin(y))

        custom = eqx.filter_jit(eqx.filter_grad(lambda p: loss(p, True)))((_field(), y0))
        reference = eqx.filter_jit(eqx.filter_grad(lambda p: loss(p, False)))((_field(), y0))
        assert _rel(custom, reference) < 1e-10


def _ode(solver, adjoint, dt0=0.05, t1=1.0):
    return neurde.NeuralODE(
        _field(), solver=solver, stepsize_controller=CONSTANT, dt0=dt0, t1=t1, adjoint=adjoint
    )


def test_model_gradient_against_finite_differences_and_backprop():
    with jax.enable_x64(True):
        ts = jnp.array([0.25, 0.5, 1.0])
        y0 = jnp.array([0.3, -0.2, 0.5])
        model = _ode(diffrax.Tsit5(), "reversible")

        def loss(m, y):
            return jnp.sum(m(y, ts) ** 2)

        value_and_grad = eqx.filter_jit(eqx.filter_value_and_grad(loss))
        _, grad = value_and_grad(model, y0)
        fd = central_differences(lambda y: value_and_grad(model, y)[0], y0)
        # Gradients w.r.t. y0 through the model, and w.r.t. one weight by finite differences.
        grad_y = eqx.filter_jit(jax.grad(loss, argnums=1))(model, y0)
        np.testing.assert_allclose(grad_y, fd, rtol=1e-7, atol=1e-9)
        bias = lambda m: m.field.mlp.layers[-1].bias  # noqa: E731
        fd_bias = central_differences(
            lambda b: value_and_grad(eqx.tree_at(bias, model, b), y0)[0], bias(model)
        )
        np.testing.assert_allclose(bias(grad), fd_bias, rtol=1e-7, atol=1e-9)
        # Tsit5 and its reversible version agree to discretization error (~1e-15 here), so
        # the gradient also matches checkpointed backprop through plain Tsit5.
        plain = _ode(diffrax.Tsit5(), "backprop")
        _, grad_plain = value_and_grad(plain, y0)
        assert _rel(grad.field, grad_plain.field) < 1e-6


def test_reconstruction_is_exact_to_rounding():
    # Forward 200 steps, then the algebraic inverse 200 steps back to the start.
    with jax.enable_x64(True):
        lam, h, n = 0.999, 0.05, 200
        f = _field()
        solver = neurde.RK4()
        term = diffrax.ODETerm(f)

        def flow(t, s, y):
            return solver.step(term, t, s, y, None, None, True)[0]

        def forward(carry, k):
            y, z = carry
            t, s = k * h, (k + 1) * h
            y1 = lam * (y - z) + flow(t, s, z)
            return (y1, y1 + z - flow(s, t, y1)), None

        def inverse(carry, k):
            y, z = carry
            t, s = k * h, (k + 1) * h
            z = z - y + flow(s, t, y)
            return ((y - flow(t, s, z)) / lam + z, z), None

        y_start = jnp.array([0.3, -0.2, 0.5])
        steps = jnp.arange(n, dtype=jnp.float64)
        end, _ = jax.lax.scan(forward, (y_start, y_start), steps)
        assert float(jnp.max(jnp.abs(end[0] - y_start))) > 0.1  # it moved
        (y, z), _ = jax.lax.scan(inverse, end, steps[::-1])
        assert float(jnp.max(jnp.abs(y - y_start))) < 1e-12
        assert float(jnp.max(jnp.abs(z - y_start))) < 1e-12


def _decay(coupling, n=400, h=0.1):
    model = neurde.NeuralODE(
        lambda t, y, args: -y,
        solver=neurde.RK4(),
        stepsize_controller=CONSTANT,
        dt0=h,
        t1=n * h,
        adjoint=neurde.Reversible(coupling),
        throw=False,
    )
    return model(jnp.array([1.0]), jnp.linspace(0.0, n * h, n + 1))[:, 0]


def test_stability_of_the_coupling():
    with jax.enable_x64(True):
        # y' = -y with h = 0.1: the parasitic mode grows by ~lam e^h per step, so the default
        # 0.999 diverges (documented), while 0.9 (< e^-h) stays on the solution.
        ts = jnp.linspace(0.0, 40.0, 401)
        stable = _decay(0.9)
        np.testing.assert_allclose(stable, jnp.exp(-ts), atol=1e-5)
        unstable = _decay(0.999)
        assert not bool(jnp.all(jnp.abs(unstable) < 10.0))
        # An oscillator (eigenvalues +-i) is stable with the recommended 0.999 over 2000 steps.
        rotation = jnp.array([[0.0, 1.0], [-1.0, 0.0]])
        model = neurde.NeuralODE(
            lambda t, y, args: rotation @ y,
            solver=neurde.RK4(),
            stepsize_controller=CONSTANT,
            dt0=0.05,
            t1=100.0,
            adjoint="reversible",
        )
        y = model(jnp.array([1.0, 0.0]))
        np.testing.assert_allclose(y, jnp.array([jnp.cos(100.0), -jnp.sin(100.0)]), atol=1e-4)


def test_stats_count_every_evaluation():
    calls = []

    def field(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return -y + jnp.sin(t)

    for solver, stages in [(neurde.RK4(), 4), (diffrax.Tsit5(), 7), (diffrax.Euler(), 1)]:
        calls.clear()
        model = neurde.NeuralODE(
            field,
            solver=solver,
            stepsize_controller=CONSTANT,
            dt0=0.1,
            t1=1.0,
            adjoint="reversible",
        )
        sol = model.solve(jnp.array([1.0, 2.0]))
        jax.effects_barrier()
        assert int(sol.stats["nfe"]) == 2 * 10 * stages == len(calls)


def test_rnode_extras_are_integrated():
    with jax.enable_x64(True):
        y0 = jnp.array([0.3, -0.2, 0.5])
        rev = neurde.noise.rnode(_ode(neurde.RK4(), "reversible"))
        ref = neurde.noise.rnode(_ode(neurde.RK4(), "backprop"))
        key = jr.key(0)
        solve = eqx.filter_jit(lambda m: m.solve(y0, key=key))
        a, b = solve(rev), solve(ref)
        np.testing.assert_allclose(a.ys, b.ys, rtol=1e-8)
        for name in b.extras:
            np.testing.assert_allclose(a.extras[name], b.extras[name], rtol=1e-6)

        def loss(m):
            sol = m.solve(y0, key=key)
            return jnp.sum(sol.ys**2) + sum(sol.extras.values())

        grad = eqx.filter_jit(eqx.filter_grad(loss))
        assert _rel(grad(rev), grad(ref)) < 1e-6


@pytest.mark.parametrize("noise", ["diagonal", pytest.param("general", marks=pytest.mark.slow)])
def test_reversible_heun_gradient_equals_backprop(noise):
    with jax.enable_x64(True):
        if noise == "general":
            diffusion = _f64(neurde.MLPField(3, 8, 1, out_shape=(3, 2), key=jr.key(1)))
        else:
            diffusion = _f64(neurde.MLPField(3, 8, 1, key=jr.key(1)))
        settings: dict[str, Any] = dict(
            noise=noise,
            noise_size=2 if noise == "general" else None,
            solver=diffrax.ReversibleHeun(),
            stepsize_controller=CONSTANT,
            dt0=0.05,
            t1=1.0,
        )
        y0, ts, key = jnp.array([0.3, -0.2, 0.5]), jnp.array([0.2, 0.5, 1.0]), jr.key(3)

        def loss(model_y):
            model, y = model_y
            return jnp.sum(model(y, ts, key=key) ** 2)

        grads = {}
        for adjoint in ("reversible", "backprop"):
            model = neurde.NeuralSDE(_field(), diffusion, adjoint=adjoint, **settings)
            grads[adjoint] = eqx.filter_jit(eqx.filter_grad(loss))((model, y0))
        assert _rel(grads["reversible"], grads["backprop"]) < 1e-10


def _temp_bytes(steps, adjoint, batch=None):
    model = neurde.NeuralODE(
        neurde.MLPField(4, 16, 1, key=jr.key(0)),
        solver=neurde.RK4(),
        stepsize_controller=CONSTANT,
        dt0=1.0 / steps,
        t1=1.0,
        adjoint=adjoint,
        max_steps=steps,
    )

    def loss(m, y):
        if batch is None:
            return jnp.sum(m(y) ** 2)
        return jnp.sum(jax.vmap(m)(y) ** 2)

    y = jnp.ones((4,) if batch is None else (batch, 4))
    jitted: Any = eqx.filter_jit(eqx.filter_grad(loss))
    compiled = jitted.lower(model, y).compile()
    return compiled.compiled.memory_analysis().temp_size_in_bytes


@pytest.mark.parametrize("batch", [None, pytest.param(16, marks=pytest.mark.slow)])
def test_memory_is_flat_in_the_number_of_steps(batch):
    small, large = _temp_bytes(100, "reversible", batch), _temp_bytes(1000, "reversible", batch)
    assert large <= 1.1 * small, (small, large)
    # Checkpointed backprop stores one state per step: it grows.
    assert _temp_bytes(1000, "backprop", batch) > 3 * _temp_bytes(100, "backprop", batch)


def test_errors():
    field = neurde.LinearField(jnp.eye(2))
    with pytest.raises(ValueError, match="coupling` must be a number in"):
        neurde.Reversible(1.5)
    with pytest.raises(ValueError, match="wraps an explicit Runge–Kutta solver"):
        neurde.NeuralODE(
            field,
            solver=diffrax.Kvaerno3(),
            stepsize_controller=CONSTANT,
            dt0=0.1,
            t1=1.0,
            adjoint="reversible",
        )
    with pytest.raises(ValueError, match="runs with constant steps"):
        neurde.NeuralODE(field, t1=1.0, adjoint="reversible")
    model = neurde.NeuralODE(
        field, solver=neurde.RK4(), dt0=0.3, t1=1.0, adjoint=neurde.Reversible()
    )
    with pytest.raises(ValueError, match="does not divide"):
        model(jnp.ones(2))
    model = neurde.NeuralODE(field, solver=neurde.RK4(), dt0=0.25, t1=1.0, adjoint="reversible")
    with pytest.raises(ValueError, match="fall between grid points"):
        model(jnp.ones(2), jnp.array([0.3, 1.0]))
    sde = neurde.NeuralSDE(
        field, field, solver=diffrax.Euler(), dt0=0.25, t1=1.0, adjoint="reversible"
    )
    with pytest.raises(ValueError, match=r"needs `solver=diffrax\.ReversibleHeun"):
        sde(jnp.ones(2), key=jr.key(0))
    sde = neurde.NeuralSDE(
        field,
        field,
        solver=diffrax.ReversibleHeun(),
        stepsize_controller=CONSTANT,
        dt0=0.25,
        t1=1.0,
        brownian="tree",
        adjoint="reversible",
    )
    with pytest.raises(ValueError, match="got brownian='tree'"):
        sde(jnp.ones(2), key=jr.key(0))
    with pytest.raises(TypeError, match=r"not for `diffrax\.diffeqsolve`"):
        diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            diffrax.Euler(),
            0.0,
            1.0,
            0.1,
            jnp.ones(2),
            adjoint=neurde.Reversible(),
        )

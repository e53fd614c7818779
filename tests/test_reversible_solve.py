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
from neurde import _reversible_adaptive, _reversible_rk

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


# Adaptive steps. Tolerances: the custom backward pass replays the recorded steps, so it
# agrees with autodiff through the same steps to rounding (1e-10 asserted); the reversible
# adaptive gradient matches backprop through plain adaptive Tsit5 to the solve's tolerance.


class _Wiggly(eqx.Module):
    """A faster, time-dependent field, so that the controller rejects and adapts."""

    field: Any

    def __call__(self, t, y, args):
        return 3 * self.field(t, y, args) + jnp.sin(6 * t)


def _recorded_reference(solver, pid, y0, ts, dt0):
    """The adaptive solve's accepted times, and a loss of the same reversible scheme written
    as plain autodiff through those (constant) times, with saves at `ts`."""
    field = _Wiggly(_field())
    conv = eqx.filter_closure_convert(field, jnp.asarray(0.0), y0, None)
    diff, static = eqx.partition((conv, None), eqx.is_inexact_array)
    steps = _reversible_adaptive._Steps(
        solver, pid, 0.999, dt0, 64, jnp.asarray(0.0), jnp.asarray(1.0), ts
    )
    buf = jnp.zeros((ts.shape[0], 3))
    out = eqx.filter_jit(_reversible_adaptive._forward)(steps, diff, static, y0, buf)
    times, count = np.asarray(out[2]), int(out[3])
    times = times[: count + 1]

    rows = jnp.asarray([int(np.flatnonzero(times == t)[0]) for t in np.asarray(ts)])

    @eqx.filter_jit
    def reference(field_y0):
        field, y = field_y0
        conv = eqx.filter_closure_convert(_Wiggly(field), jnp.asarray(0.0), y, None)
        diff, static = eqx.partition((conv, None), eqx.is_inexact_array)

        def step(carry, ts):
            y, z, _ = _reversible_rk.forward_step(solver, 0.999, diff, static, *ts, *carry)
            return (y, z), y

        _, ys = jax.lax.scan(step, (y, y), (jnp.asarray(times[:-1]), jnp.asarray(times[1:])))
        return jnp.concatenate([y[None], ys])[rows]

    return out, reference


def _adaptive_loss(ys):
    return jnp.sum(ys**2 * jnp.arange(1.0, ys.shape[0] + 1)[:, None])


@pytest.mark.parametrize(
    "solver, rtol",
    [(diffrax.Tsit5(), 1e-7), pytest.param(diffrax.Heun(), 1e-2, marks=pytest.mark.slow)],
    ids=["Tsit5", "Heun"],
)
def test_adaptive_gradient_equals_autodiff_through_the_recorded_steps(solver, rtol):
    with jax.enable_x64(True):
        y0, ts = jnp.array([0.3, -0.2, 0.5]), jnp.array([0.3, 0.5, 1.0])
        # dt0 = 0.5 is too large for these tolerances: the first attempts are rejected.
        pid = diffrax.PIDController(rtol=rtol, atol=1e-2 * rtol)
        out, reference = _recorded_reference(solver, pid, y0, ts, 0.5)
        attempts, count = int(out[4]), int(out[3])
        assert attempts > count >= 4  # rejections happened, several steps accepted
        np.testing.assert_allclose(out[6], reference((_field(), y0)), rtol=1e-12)

        def loss(field_y0):
            field, y = field_y0
            model = neurde.NeuralODE(
                _Wiggly(field),
                solver=solver,
                stepsize_controller=pid,
                dt0=0.5,
                t1=1.0,
                adjoint="reversible",
                max_steps=64,
            )
            return _adaptive_loss(model(y, ts))

        custom = eqx.filter_jit(eqx.filter_grad(loss))((_field(), y0))
        expected = eqx.filter_grad(lambda p: _adaptive_loss(reference(p)))((_field(), y0))
        assert _rel(custom, expected) < 1e-10
        # And the recorded-step map against central differences (in y0).
        fd = central_differences(lambda y: _adaptive_loss(reference((_field(), y))), y0)
        np.testing.assert_allclose(custom[1], fd, rtol=1e-7, atol=1e-9)


@pytest.mark.expensive
def test_adaptive_gradient_matches_backprop():
    with jax.enable_x64(True):
        y0 = jnp.array([0.3, -0.2, 0.5])
        pid = diffrax.PIDController(rtol=1e-8, atol=1e-10)

        def loss(m, y):
            return jnp.sum(m(y) ** 2)

        grads = {}
        for adjoint in ("reversible", "backprop"):
            model = neurde.NeuralODE(
                _field(),
                solver=diffrax.Tsit5(),
                stepsize_controller=pid,
                t1=1.0,
                adjoint=adjoint,
            )
            grads[adjoint] = eqx.filter_jit(eqx.filter_grad(loss))(model, y0)
        # Two discretizations of the same ODE at rtol 1e-8: the gradients agree to ~1e-8.
        assert _rel(grads["reversible"], grads["backprop"]) < 1e-6


def test_adaptive_steps_follow_the_dynamics():
    with jax.enable_x64(True):
        # A fast rotation needs more steps than a slow one at the same tolerance, and both
        # stay on the exact solution (y1, y2) = (cos wt, -sin wt).
        counts = {}
        for omega in (1.0, 20.0):
            rotation = omega * jnp.array([[0.0, 1.0], [-1.0, 0.0]])
            model = neurde.NeuralODE(
                lambda t, y, args, r=rotation: r @ y,
                solver=diffrax.Tsit5(),
                stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
                t1=2.0,
                adjoint="reversible",
            )
            sol = model.solve(jnp.array([1.0, 0.0]))
            exact = jnp.array([jnp.cos(2 * omega), -jnp.sin(2 * omega)])
            np.testing.assert_allclose(sol.ys, exact, atol=1e-4)
            counts[omega] = int(sol.stats["num_accepted_steps"])
        assert counts[20.0] > 5 * counts[1.0], counts


def test_adaptive_stats_count_every_evaluation():
    calls = []

    def field(t, y, args):
        jax.debug.callback(lambda: calls.append(1))
        return -2 * y + jnp.sin(10 * t)

    for dt0 in (None, 0.5):
        calls.clear()
        model = neurde.NeuralODE(
            field,
            solver=diffrax.Tsit5(),
            stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8),
            dt0=dt0,
            t1=1.0,
            adjoint="reversible",
        )
        sol = model.solve(jnp.array([1.0, 2.0]))
        jax.effects_barrier()
        assert int(sol.stats["nfe"]) == len(calls)
        steps, rejected = int(sol.stats["num_steps"]), int(sol.stats["num_rejected_steps"])
        assert int(sol.stats["nfe"]) == 2 * 7 * steps + (2 if dt0 is None else 0)
        if dt0 == 0.5:
            assert rejected > 0


def test_adaptive_errors():
    field = neurde.LinearField(jnp.eye(2))
    pid = diffrax.PIDController(rtol=1e-3, atol=1e-6)
    with pytest.raises(ValueError, match="RK4 has no error estimate"):
        neurde.NeuralODE(
            field, solver=neurde.RK4(), stepsize_controller=pid, t1=1.0, adjoint="reversible"
        )
    clipped = diffrax.ClipStepSizeController(pid, step_ts=jnp.array([0.5]))
    with pytest.raises(ValueError, match=r"from a `diffrax\.PIDController`"):
        neurde.NeuralODE(field, stepsize_controller=clipped, t1=1.0, adjoint="reversible")
    with pytest.raises(ValueError, match="ReversibleHeun` runs with constant steps"):
        neurde.NeuralODE(
            field,
            solver=diffrax.ReversibleHeun(),
            stepsize_controller=pid,
            t1=1.0,
            adjoint="reversible",
        )
    model = neurde.NeuralODE(
        field, stepsize_controller=pid, t1=1.0, dt0=1e-4, max_steps=3, adjoint="reversible"
    )
    with pytest.raises(Exception, match="reached `max_steps=3`"):
        model(jnp.ones(2))
    settings: dict[str, Any] = dict(stepsize_controller=pid, t1=1.0, dt0=1e-4, max_steps=3)
    model = neurde.NeuralODE(field, **settings, adjoint="reversible", throw=False)
    failed = model.solve(jnp.ones(2))
    assert failed.result == diffrax.RESULTS.max_steps_reached


def test_adaptive_under_vmap_is_the_sum_of_per_example_gradients():
    with jax.enable_x64(True):
        # Examples of different sizes take different numbers of steps inside one vmap.
        ys = jnp.array([[0.3, -0.2, 0.5], [2.0, 1.5, -2.5]])
        model = neurde.NeuralODE(
            _Wiggly(_field()),
            stepsize_controller=diffrax.PIDController(rtol=1e-5, atol=1e-7),
            t1=1.0,
            adjoint="reversible",
        )

        def loss(m, y):
            sol = m.solve(y)
            return jnp.sum(sol.ys**2), sol.stats["num_accepted_steps"]

        def batch_loss(m):
            losses, counts = jax.vmap(lambda y: loss(m, y))(ys)
            return jnp.sum(losses), counts

        grad = eqx.filter_grad(batch_loss, has_aux=True)
        vmapped, counts = eqx.filter_jit(grad)(model)
        assert int(counts[0]) != int(counts[1])
        single = eqx.filter_jit(eqx.filter_grad(lambda m, y: loss(m, y)[0]))
        total = jax.tree.map(jnp.add, single(model, ys[0]), single(model, ys[1]))
        assert _rel(vmapped, total) < 1e-12
